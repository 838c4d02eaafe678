/**
 * Where a depth-wise step's time goes against a sequence-wise one, per emitted token, on stories260K's
 * relaxed 1×5 conversion (Average init, LoRA rank 16, not uptrained) and on its LoRA-free recursive 1×5
 * conversion (the same steps without any LoRA, so that what differs is the per-step overhead alone).
 *
 * 1. common.ts's `turnTrace` through the engine in `sequence` and `depth` mode (exit `none`: every token
 *    runs all 5 loops in both, so both run the same layer calls over the same rows; depth mode runs 5×
 *    the steps), rounds interleaved, the first a warm-up; tokens per second of the clock (CPU time by
 *    default), and the best round's time per emitted token split by phase: `Decoder.layer`, `rows`,
 *    `embed`, `readout`, `appendKV` (propagation), the rest of `Executor.run` (the step's gathers and
 *    joins, the read-back and its wake-ups, the bookkeeping), the scheduler (`schedule`, `update`) and the
 *    rest (the engine's per-step event-loop turn, the request streams). Phases are timed by wrapping
 *    those methods (wall clock inside each call, ≈ 0.1 µs a call); the totals use `--clock`.
 * 2. One gather of 8 rows of a `[512, 64]` table (an embedding lookup, the executor's step input) through
 *    the Backend (rows copied by `RrtGatherRows` on cpu and wasm) against `tf.gather` on the same tensors.
 *
 *   node --import tsx bench/depth-overhead.ts [--backend wasm] [--requests 128] [--slots 8] [--rounds 4]
 *        [--seed 7] [--clock cpu|wall]
 *
 * NOTE: the phases wrap prototype methods of `Decoder`, `Executor` and `Scheduler` for the duration of
 * the run, which a benchmark may do and nothing else should.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { type BatchingMode, createEngine, Executor, Scheduler } from '@rrt/batching';
import { convertToRecursive } from '@rrt/convert';
import { type Decoder, Decoder as DecoderClass, loadModel } from '@rrt/core';
import type { Tensor } from '@rrt/tensor';
import * as tf from '@tensorflow/tfjs-core';
import {
  clockMs,
  importStories260K,
  replayTurnTrace,
  stories260KAssetsOrExit,
  type TurnTraceRequest,
  turnTrace,
} from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    requests: { type: 'string', default: '128' },
    slots: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    seed: { type: 'string', default: '7' },
    clock: { type: 'string', default: 'cpu' },
  },
});
const assets = stories260KAssetsOrExit('depth-overhead');
const clock = clockMs(values.clock);

/** Milliseconds spent inside each wrapped method (outermost calls only per label). */
const phases = new Map<string, number>();
const depth = new Map<string, number>();
function wrap(target: object, method: string, label: string): void {
  const proto = target as Record<string, (...args: unknown[]) => unknown>;
  const original = proto[method]!;
  proto[method] = function (this: unknown, ...args: unknown[]) {
    const nested = (depth.get(label) ?? 0) > 0;
    depth.set(label, (depth.get(label) ?? 0) + 1);
    const started = performance.now();
    const done = () => {
      depth.set(label, depth.get(label)! - 1);
      if (!nested) phases.set(label, (phases.get(label) ?? 0) + performance.now() - started);
    };
    let result: unknown;
    try {
      result = original.apply(this, args);
    } catch (error) {
      done();
      throw error;
    }
    if (result instanceof Promise) return result.finally(done);
    done();
    return result;
  };
}
for (const method of ['layer', 'rows', 'embed', 'readout', 'appendKV']) {
  wrap(DecoderClass.prototype, method, method);
}
wrap(Executor.prototype, 'run', 'run');
wrap(Scheduler.prototype, 'schedule', 'scheduler');
wrap(Scheduler.prototype, 'update', 'scheduler');

interface Round {
  ms: number;
  tokens: number;
  steps: number;
  phases: Map<string, number>;
  output: string;
}

async function serve(model: Decoder, trace: readonly TurnTraceRequest[], mode: BatchingMode): Promise<Round> {
  const engine = createEngine(model, {
    mode,
    maxSlots: Number(values.slots),
    kvBytes: 64 << 20,
    maxQueue: 4096,
  });
  phases.clear();
  const started = clock();
  const outputs = (await replayTurnTrace(engine, trace)).map((run) => run.tokens);
  const ms = clock() - started;
  const steps = engine.stats().steps;
  engine.dispose();
  const tokens = outputs.reduce((n, o) => n + o.length, 0);
  return { ms, tokens, steps, phases: new Map(phases), output: outputs.map((o) => o.join(',')).join('|') };
}

/** µs per emitted token of each phase of `round`: the wrapped methods, then the remainders. */
function breakdown(round: Round): Map<string, number> {
  const p = (label: string) => round.phases.get(label) ?? 0;
  const inRun = ['layer', 'rows', 'embed', 'readout', 'appendKV'].reduce((n, l) => n + p(l), 0);
  const parts = new Map<string, number>([
    ['layer', p('layer')],
    ['rows', p('rows')],
    ['embed', p('embed')],
    ['readout', p('readout')],
    ['appendKV', p('appendKV')],
    ['rest of run', p('run') - inRun],
    ['scheduler', p('scheduler')],
    ['outside the step', round.ms - p('run') - p('scheduler')],
  ]);
  for (const [label, ms] of parts) parts.set(label, (ms * 1000) / round.tokens);
  return parts;
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-depth-overhead-'));
try {
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  console.log(`backend ${kind}: ${reason}`);
  const original = await importStories260K(assets, workDir);
  const relaxedDir = join(workDir, 'relaxed-1x5-r16');
  await convertToRecursive(original, relaxedDir, { loops: 5, init: 'average', ranks: 16 });
  const recursiveDir = join(workDir, 'recursive-1x5');
  await convertToRecursive(original, recursiveDir, { loops: 5, init: 'average', ranks: 0 });
  const rounds = Number(values.rounds);
  if (!(Number.isInteger(rounds) && rounds >= 2)) {
    // Round 0 warms up (JIT, XNNPACK's weight packing) and is not counted.
    console.error(
      `bench/depth-overhead: --rounds expects an integer ≥ 2 (the first is a warm-up), got ${values.rounds}`,
    );
    process.exit(2);
  }

  console.log(
    `\n1. ${values.requests} requests (turnTrace, seed ${values.seed}), ${values.slots} slots, exit none; ` +
      `best of ${rounds - 1} rounds after a warm-up (${values.clock} clock)\n`,
  );
  for (const [label, dir] of [
    ['relaxed 1×5, LoRA rank 16', relaxedDir],
    ['recursive 1×5, no LoRA', recursiveDir],
  ] as const) {
    const model = await loadModel(dir, backend);
    const trace = turnTrace(Number(values.requests), Number(values.seed), model.config.vocabSize);
    const best = new Map<BatchingMode, Round>();
    const all = new Map<BatchingMode, number[]>();
    for (let round = 0; round < rounds; round++) {
      for (const mode of ['sequence', 'depth'] as const) {
        const result = await serve(model, trace, mode);
        if (round === 0) continue; // warm-up: JIT, XNNPACK's weight packing
        const rate = (result.tokens / result.ms) * 1000;
        all.set(mode, [...(all.get(mode) ?? []), rate]);
        const previous = best.get(mode);
        if (!previous || result.ms < previous.ms) best.set(mode, result);
      }
    }
    const sequence = best.get('sequence')!;
    const depthRound = best.get('depth')!;
    const rate = (r: Round) => (r.tokens / r.ms) * 1000;
    const range = (mode: BatchingMode) =>
      `${Math.min(...all.get(mode)!).toFixed(0)}–${Math.max(...all.get(mode)!).toFixed(0)}`;
    console.log(
      `${label}: ${sequence.tokens} tokens; depth and sequence tokens equal: ${sequence.output === depthRound.output}`,
    );
    console.log(
      `tokens/s: sequence ${rate(sequence).toFixed(0)} (rounds ${range('sequence')}), depth ${rate(depthRound).toFixed(0)} ` +
        `(rounds ${range('depth')}); depth / sequence ${(rate(depthRound) / rate(sequence)).toFixed(3)}; ` +
        `steps ${sequence.steps} / ${depthRound.steps}\n`,
    );
    const s = breakdown(sequence);
    const d = breakdown(depthRound);
    console.log('| µs per emitted token | sequence | depth | depth − sequence |');
    console.log('|---|---:|---:|---:|');
    for (const [phase, sequenceUs] of s) {
      const depthUs = d.get(phase)!;
      console.log(
        `| ${phase} | ${sequenceUs.toFixed(1)} | ${depthUs.toFixed(1)} | ${(depthUs - sequenceUs).toFixed(1)} |`,
      );
    }
    const total = (m: Map<string, number>) => [...m.values()].reduce((n, v) => n + v, 0);
    console.log(
      `| total | ${total(s).toFixed(1)} | ${total(d).toFixed(1)} | ${(total(d) - total(s)).toFixed(1)} |\n`,
    );
    model.dispose();
  }

  console.log('2. one gather of 8 rows of a [512, 64] table (µs per call, best of 5 × 20,000)\n');
  const table = backend.keep(
    backend.fromArray(
      Float32Array.from({ length: 512 * 64 }, (_, i) => i % 97),
      [512, 64],
    ),
  );
  const ids = backend.keep(backend.fromArray(Int32Array.of(3, 500, 41, 41, 7, 0, 511, 260), [8], 'int32'));
  const time = (fn: () => Tensor) => {
    for (let i = 0; i < 2000; i++) backend.dispose(fn());
    let bestUs = Number.POSITIVE_INFINITY;
    for (let r = 0; r < 5; r++) {
      const started = clock();
      for (let i = 0; i < 20_000; i++) backend.dispose(fn());
      bestUs = Math.min(bestUs, ((clock() - started) / 20_000) * 1000);
    }
    return bestUs;
  };
  const ours = time(() => backend.gather(table, ids));
  const raw = time(
    () => tf.gather(table as unknown as tf.Tensor, ids as unknown as tf.Tensor) as unknown as Tensor,
  );
  console.log('| Backend.gather | tf.gather | tf / Backend |');
  console.log('|---:|---:|---:|');
  console.log(`| ${ours.toFixed(2)} | ${raw.toFixed(2)} | ${(raw / ours).toFixed(2)}× |`);
  backend.dispose([table, ids]);
} finally {
  await rm(workDir, { recursive: true, force: true });
}
