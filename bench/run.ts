/**
 * `pnpm bench <name> [flags]` runs `bench/<name>.ts` with its flags; without a name it lists the
 * benchmarks. Each benchmark prints ratios measured side by side in one run (see bench/README.md).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
// The benchmarks are the scripts bench/package.json registers as `node --import tsx <name>.ts` (helper
// modules are not benchmarks, and `typecheck` is not one).
const { scripts } = JSON.parse(readFileSync(`${here}package.json`, 'utf8')) as {
  scripts: Record<string, string>;
};
const benchmarks = Object.entries(scripts)
  .filter(([name, command]) => command === `node --import tsx ${name}.ts`)
  .map(([name]) => name)
  .sort();
const [name, ...flags] = process.argv.slice(2);
if (!name || !benchmarks.includes(name)) {
  const problem = name ? `no benchmark "${name}"; ` : '';
  process.stderr.write(`${problem}usage: pnpm bench <name> [flags]; benchmarks: ${benchmarks.join(', ')}\n`);
  process.exit(name ? 2 : 0);
}
const result = spawnSync(process.execPath, ['--import', 'tsx', `${here}${name}.ts`, ...flags], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
