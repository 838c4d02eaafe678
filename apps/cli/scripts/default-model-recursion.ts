/**
 * The embedded default model through the main job's steps, measured on its own held-out documents (the
 * seed-1 split of pretrain-default.ts): the original, recursive 3×2 with stepwise and average init,
 * relaxed 3×2 (average, rank 16), and that relaxed model after 100 steps of 4 × 128 tokens distilled
 * from the original. Prints held-out cross-entropy and perplexity over the first 256 windows of 128
 * tokens. Seeded; wasm by default.
 *
 *   node --import tsx apps/cli/scripts/default-model-recursion.ts [--backend wasm|cpu]
 */
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { loadTokenizer } from '@rrt/core';
import { heldOutLoss, TextDataset, TrainableModel, train } from '@rrt/train';
import { readBrownDocuments } from '../src/brown.js';

const { values: args } = parseArgs({ options: { backend: { type: 'string', default: 'wasm' } } });
const model = resolve(fileURLToPath(new URL('.', import.meta.url)), '../assets/default-model');
const work = join(tmpdir(), 'rrt-default-model-recursion');
await rm(work, { recursive: true, force: true });
const { documents } = await readBrownDocuments();
const tokenizer = await loadTokenizer(model);
const dataset = TextDataset.create({
  documents,
  encode: (t) => tokenizer.encode(t, { addBos: false, parseSpecialTokens: false }),
  bosId: tokenizer.bosId,
  heldOutFraction: 0.1,
  seed: 1,
});
const { backend } = await createBackend(args.backend as 'wasm' | 'cpu');
const windows = dataset.heldOutBatches(16, 128, 256);
const evaluate = async (dir: string) => {
  const m = await TrainableModel.load(dir, backend);
  const l = await heldOutLoss(backend, m, windows);
  m.dispose();
  return l;
};
const report = (name: string, loss: number) =>
  console.log(`${name.padEnd(40)} ${loss.toFixed(4)} nats  ppl ${Math.exp(loss).toFixed(2)}`);
report('original 6 layers', await evaluate(model));
for (const [name, opts] of [
  ['recursive 3x2 stepwise', { loops: 2, init: 'stepwise', ranks: 0 }],
  ['recursive 3x2 average', { loops: 2, init: 'average', ranks: 0 }],
  ['relaxed 3x2 average r16', { loops: 2, init: 'average', ranks: 16 }],
] as const) {
  const dir = `${work}/${name.replaceAll(' ', '-')}`;
  const result = await convertToRecursive(model, dir, opts);
  report(`${name} (${result.parameters.relaxed} params)`, await evaluate(dir));
}
const t0 = performance.now();
const result = await train(backend, {
  modelDir: `${work}/relaxed-3x2-average-r16`,
  teacherDir: model,
  outDir: `${work}/uptrained`,
  dataset,
  steps: 100,
  batchSize: 4,
  sequenceLength: 128,
  learningRate: 1e-3,
  warmupSteps: 10,
  seed: 0,
  evalWindows: 16,
});
console.log('uptrain seconds', ((performance.now() - t0) / 1000).toFixed(0), 'tokens', result.tokens);
report('relaxed 3x2 r16 + 100 distilled steps', await evaluate(`${work}/uptrained`));
await rm(work, { recursive: true, force: true });
