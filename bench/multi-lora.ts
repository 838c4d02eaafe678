/**
 * The decoder's two multi-LoRA modes side by side in one run (`loraMode`: `segment`, one LoRA product per
 * run of rows at one loop, against `masked`, the paper's concatenated LoRAs with a per-row mask), on
 * stories260K's relaxed 1×5 conversion (average init, LoRA rank 8 on every module), default backend wasm.
 *
 * One depth-wise decode step: `Decoder.layer` over S decode rows (one per sequence, each sequence holding
 * `--context` positions in a paged cache at every depth, attention through `Backend.pagedAttention`), the
 * rows' loops in one of several mixes. Both modes run on the same weights, alternating, and each mode's
 * median over `--rounds` rounds counts.
 *
 *   node --import tsx bench/multi-lora.ts [--backend wasm] [--context 16] [--rounds 5] [--clock cpu|wall]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { Decoder, type LoRAMode, loadModel, seededRandom } from '@rrt/core';
import { createPagedKVCache } from '@rrt/kv-cache';
import { clockMs, importStories260K, stories260KAssetsOrExit } from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    context: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '5' },
    clock: { type: 'string', default: 'cpu' },
  },
});
const assets = stories260KAssetsOrExit('multi-lora');

/** Loop of row `i` of `rows` under each mix (L loops). */
const mixes: [string, (i: number, rows: number, loops: number) => number][] = [
  ['one loop (all at loop 2)', () => 2],
  ['two loops, halves', (i, rows) => (i < rows / 2 ? 0 : 1)],
  ['two loops, alternating', (i) => i % 2],
  ['all loops, in blocks', (i, rows, loops) => Math.floor((i * loops) / rows)],
  ['all loops, round-robin', (i, _rows, loops) => i % loops],
];

/** Milliseconds per step (median of `steps` steps) of `model` over rows at `loopOf(i)`. */
async function stepMs(model: Decoder, sequences: number, context: number, loopOf: (i: number) => number) {
  const { backend, config } = model;
  const depths = model.schedule.length;
  const blockSize = config.recursion?.blockSize ?? depths;
  const loops = depths / blockSize;
  const steps = 12;
  const pageSize = 16;
  const cache = createPagedKVCache(backend, {
    depths,
    blockSize,
    kvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    pageSize,
    bytes:
      sequences *
      Math.ceil((context + steps + 1) / pageSize) *
      pageSize *
      depths *
      2 *
      4 *
      config.numKeyValueHeads *
      config.headDim,
  });
  const open = Array.from({ length: sequences }, () => cache.open());
  const random = seededRandom(5);
  const ids = (count: number) =>
    backend.fromArray(
      Int32Array.from({ length: count }, () => 1 + Math.floor(random() * (config.vocabSize - 1))),
      [count],
      'int32',
    );
  backend.tidy(() => {
    const rows = model.rows(open.map(() => ({ batch: 1, length: context, offset: 0 })));
    let hidden = model.embed(ids(sequences * context));
    for (const { depth } of model.schedule) {
      hidden = model.layer(
        hidden,
        rows,
        open.map((sequence) => ({ depth, cache: sequence.layer(depth) })),
      );
    }
  });
  const clock = clockMs(values.clock);
  const times: number[] = [];
  const filled = open.map(() => new Array<number>(loops).fill(context));
  for (let step = 0; step < steps; step++) {
    const started = clock();
    const out = backend.tidy(() => {
      const rows = model.rows(open.map((_, i) => ({ batch: 1, length: 1, offset: filled[i]![loopOf(i)]! })));
      let hidden = model.embed(ids(sequences));
      for (let layer = 0; layer < blockSize; layer++) {
        hidden = model.layer(
          hidden,
          rows,
          open.map((sequence, i) => {
            const depth = loopOf(i) * blockSize + layer;
            return { depth, cache: sequence.layer(depth) };
          }),
        );
      }
      return hidden;
    });
    await backend.read(out);
    backend.dispose(out);
    times.push(clock() - started);
    open.forEach((_, i) => {
      filled[i]![loopOf(i)]! += 1;
    });
  }
  for (const sequence of open) sequence.free();
  cache.dispose();
  return median(times);
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-multi-lora-'));
try {
  const originalDir = await importStories260K(assets, workDir);
  const relaxedDir = join(workDir, 'relaxed-1x5');
  await convertToRecursive(originalDir, relaxedDir, { loops: 5, init: 'average', ranks: 8 });
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const loaded = await loadModel(relaxedDir, backend, { loraMode: 'segment' });
  const models: Record<LoRAMode, Decoder> = {
    segment: loaded,
    masked: new Decoder(backend, loaded.config, loaded.weights, { loraMode: 'masked' }),
  };
  const loops = loaded.config.recursion?.loops ?? 1;
  const context = Number(values.context);
  const rounds = Number(values.rounds);
  console.log(`backend ${kind}: ${reason}`);
  console.log(
    `relaxed 1×5 (K = ${loaded.config.recursion?.blockSize}, L = ${loops}), one decode step per call, ` +
      `${context} positions cached, ${values.clock} ms per step (median)\n`,
  );
  console.log('| rows | loop mix | segment ms | masked ms | segment / masked |');
  console.log('|---:|---|---:|---:|---:|');
  for (const rows of [8, 32, 128]) {
    for (const [mix, loopOfRow] of mixes) {
      const loopOf = (i: number) => loopOfRow(i, rows, loops);
      const samples: Record<LoRAMode, number[]> = { segment: [], masked: [] };
      for (let round = 0; round < rounds; round++) {
        for (const mode of ['segment', 'masked'] as const) {
          samples[mode].push(await stepMs(models[mode], rows, context, loopOf));
        }
      }
      const [segment, masked] = [median(samples.segment), median(samples.masked)];
      console.log(
        `| ${rows} | ${mix} | ${segment.toFixed(2)} | ${masked.toFixed(2)} | ${(segment / masked).toFixed(2)}× |`,
      );
    }
  }
  models.masked.dispose();
  loaded.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
