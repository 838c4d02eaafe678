import { readdirSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Tests import the workspace packages by name; point those names at the sources so a test run needs no
// build of the package under test (CI builds anyway, for the CLI binary).
const root = fileURLToPath(new URL('.', import.meta.url));
const alias: { find: RegExp; replacement: string }[] = [];
for (const dir of ['packages', 'apps']) {
  for (const name of readdirSync(`${root}${dir}`)) {
    const src = `${root}${dir}/${name}/src`;
    if (!existsSync(`${src}/index.ts`)) continue;
    const pkg = name === 'cli' ? 'cli' : name;
    alias.push({ find: new RegExp(`^@rrt/${pkg}/testing$`), replacement: `${src}/testing/index.ts` });
    alias.push({ find: new RegExp(`^@rrt/${pkg}$`), replacement: `${src}/index.ts` });
  }
}

export default defineConfig({
  resolve: { alias },
  test: {
    include: [
      'packages/*/src/**/*.test.ts',
      'packages/*/test/**/*.test.ts',
      'apps/*/src/**/*.test.ts',
      'apps/*/test/**/*.test.ts',
    ],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
