/**
 * A training run in a child process, for the test that kills one with SIGKILL (`kill.test.ts`). Run with
 * tsx and `TSX_TSCONFIG_PATH` set to this folder's tsconfig (it maps `@rrt/*` to the sources). Prints
 * `step <n>` after every step and `done` at the end.
 *
 * Usage: node --import tsx train-child.ts <original-dir> <relaxed-dir> <out-dir> <backend>
 */
import { createBackend } from '@rrt/backend-tfjs';
import { train } from '../src/index.js';
import { resumableRun } from './support.js';

const [originalDir, relaxedDir, outDir, kind] = process.argv.slice(2);
const { backend } = await createBackend(kind as 'wasm' | 'cpu');
await train(backend, {
  ...resumableRun({ originalDir: originalDir!, relaxedDir: relaxedDir! }, outDir!),
  resume: true,
  onProgress: ({ step }) => process.stdout.write(`step ${step}\n`),
});
process.stdout.write('done\n');
