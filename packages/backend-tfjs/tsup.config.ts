import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  // The CJS build needs `import.meta.url` (to resolve the wasm binaries and the optional packages).
  shims: true,
});
