/**
 * A conversion run in a child process, for the test that kills one mid-way (`src/interrupt.test.ts`).
 * Run with tsx and `TSX_TSCONFIG_PATH` set to this folder's tsconfig (it maps `@rrt/*` to the sources).
 * Prints `progress <done>/<total>` per tensor and `done` at the end.
 *
 * Usage: node --import tsx convert-child.ts <source> <out> <loops> <rank>
 */
import { convertToRecursive } from '@rrt/convert';

const [sourceDir, outDir, loops, rank] = process.argv.slice(2);
await convertToRecursive(sourceDir!, outDir!, {
  loops: Number(loops),
  ranks: Number(rank),
  onProgress: ({ done, total }) => process.stdout.write(`progress ${done}/${total}\n`),
});
process.stdout.write('done\n');
