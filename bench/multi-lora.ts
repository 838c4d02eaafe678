/**
 * The decoder's three multi-LoRA modes side by side in one run (`loraMode`: `segment`, one LoRA product per
 * run of rows at one loop; `masked`, the paper's concatenated LoRAs with a per-row mask; `fused`, one
 * `Backend.addLowRank` per projection over every loop's stacked LoRAs), on
 * stories260K's relaxed 1×5 conversion (average init, LoRA rank 8 on every module), default backend wasm.
 *
 * One depth-wise decode step: `Decoder.layer` over S decode rows (one per sequence, each sequence holding
 * `--context` positions in a paged cache at every depth, attention through `Backend.pagedAttention`), the
 * rows' loops in one of several mixes. The modes run on the same weights, alternating, and each mode's
 * median over `--rounds` rounds counts.
 *
 *   node --import tsx bench/multi-lora.ts [--backend wasm] [--context 16] [--rounds 5] [--clock cpu|wall]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { Decoder, type LoRAMode, loadModel } from '@rrt/core';
import { clockMs, depthwiseStepTimes, relaxedStories260K, stories260KAssetsOrExit } from './common.js';

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

/** Milliseconds per step (median of 12 steps) of `model` over rows at `loopOf(i)`. */
async function stepMs(model: Decoder, sequences: number, context: number, loopOf: (i: number) => number) {
  const times = await depthwiseStepTimes(model, {
    sequences,
    context,
    steps: 12,
    loopOf,
    seed: 5,
    clock: clockMs(values.clock),
  });
  return median(times);
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-multi-lora-'));
try {
  const relaxedDir = await relaxedStories260K(assets, workDir);
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const loaded = await loadModel(relaxedDir, backend, { loraMode: 'segment' });
  const models: Record<LoRAMode, Decoder> = {
    segment: loaded,
    masked: new Decoder(backend, loaded.config, loaded.weights, { loraMode: 'masked' }),
    fused: new Decoder(backend, loaded.config, loaded.weights, { loraMode: 'fused' }),
  };
  const loops = loaded.config.recursion?.loops ?? 1;
  const context = Number(values.context);
  const rounds = Number(values.rounds);
  console.log(`backend ${kind}: ${reason}`);
  console.log(
    `relaxed 1×5 (K = ${loaded.config.recursion?.blockSize}, L = ${loops}), one decode step per call, ` +
      `${context} positions cached, ${values.clock} ms per step (median)\n`,
  );
  console.log('| rows | loop mix | segment ms | masked ms | fused ms | segment / fused | masked / fused |');
  console.log('|---:|---|---:|---:|---:|---:|---:|');
  for (const rows of [8, 32, 128]) {
    for (const [mix, loopOfRow] of mixes) {
      const loopOf = (i: number) => loopOfRow(i, rows, loops);
      const samples: Record<LoRAMode, number[]> = { segment: [], masked: [], fused: [] };
      for (let round = 0; round < rounds; round++) {
        for (const mode of ['segment', 'masked', 'fused'] as const) {
          samples[mode].push(await stepMs(models[mode], rows, context, loopOf));
        }
      }
      const [segment, masked, fused] = [
        median(samples.segment),
        median(samples.masked),
        median(samples.fused),
      ];
      console.log(
        `| ${rows} | ${mix} | ${segment.toFixed(2)} | ${masked.toFixed(2)} | ${fused.toFixed(2)} | ` +
          `${(segment / fused).toFixed(2)}× | ${(masked / fused).toFixed(2)}× |`,
      );
    }
  }
  models.masked.dispose();
  models.fused.dispose();
  loaded.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
