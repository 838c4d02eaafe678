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
 *        [--seed 7] [--clock cpu|wall] [--model <relaxed model dir>] [--threshold τ] [--min-loops 1]
 *
 * `--model <dir>` runs a relaxed model of the user's (e.g. an early-exit-trained one) instead of the two
 * conversions; `--threshold τ` adds a third column, depth mode with confidence exits at τ, so that the
 * table shows what exits save (layer calls) against what they cost (a readout at every loop, the
 * propagation of exited tokens' KV in `appendKV`).
 *
 * NOTE: the phases wrap prototype methods of `Decoder`, `Executor` and `Scheduler` for the duration of
 * the run, which a benchmark may do and nothing else should.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { type BatchingMode, createEngine, Executor, type ExitPolicy, Scheduler } from '@rrt/batching';
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
    model: { type: 'string' },
    threshold: { type: 'string' },
    'min-loops': { type: 'string', default: '1' },
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

/** One column of the table: a batching mode and its exit policy. */
interface Setup {
  label: string;
  mode: BatchingMode;
  exit: ExitPolicy;
}

async function serve(model: Decoder, trace: readonly TurnTraceRequest[], setup: Setup): Promise<Round> {
  const engine = createEngine(model, {
    mode: setup.mode,
    exit: setup.exit,
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

const rounds = Number(values.rounds);
if (!(Number.isInteger(rounds) && rounds >= 2)) {
  // Round 0 warms up (JIT, XNNPACK's weight packing) and is not counted.
  console.error(
    `bench/depth-overhead: --rounds expects an integer ≥ 2 (the first is a warm-up), got ${values.rounds}`,
  );
  process.exit(2);
}
const threshold = values.threshold === undefined ? undefined : Number(values.threshold);
if (threshold !== undefined && !(threshold > 0 && threshold <= 1)) {
  console.error(`bench/depth-overhead: --threshold expects a probability in (0, 1], got ${values.threshold}`);
  process.exit(2);
}
const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-depth-overhead-'));
try {
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  console.log(`backend ${kind}: ${reason}`);
  const setups: Setup[] = [
    { label: 'sequence', mode: 'sequence', exit: { kind: 'none' } },
    { label: 'depth', mode: 'depth', exit: { kind: 'none' } },
  ];
  if (threshold !== undefined) {
    setups.push({
      label: `depth τ ${threshold}`,
      mode: 'depth',
      exit: { kind: 'confidence', threshold, minLoops: Number(values['min-loops']) },
    });
  }
  let models: (readonly [string, string])[];
  if (values.model) {
    models = [[values.model, values.model]];
  } else {
    const original = await importStories260K(assets, workDir);
    const relaxedDir = join(workDir, 'relaxed-1x5-r16');
    await convertToRecursive(original, relaxedDir, { loops: 5, init: 'average', ranks: 16 });
    const recursiveDir = join(workDir, 'recursive-1x5');
    await convertToRecursive(original, recursiveDir, { loops: 5, init: 'average', ranks: 0 });
    models = [
      ['relaxed 1×5, LoRA rank 16', relaxedDir],
      ['recursive 1×5, no LoRA', recursiveDir],
    ];
  }

  console.log(
    `\n1. ${values.requests} requests (turnTrace, seed ${values.seed}), ${values.slots} slots; ` +
      `best of ${rounds - 1} rounds after a warm-up (${values.clock} clock)\n`,
  );
  for (const [label, dir] of models) {
    const model = await loadModel(dir, backend);
    const trace = turnTrace(Number(values.requests), Number(values.seed), model.config.vocabSize);
    const best = new Map<string, Round>();
    const all = new Map<string, number[]>();
    for (let round = 0; round < rounds; round++) {
      for (const setup of setups) {
        const result = await serve(model, trace, setup);
        if (round === 0) continue; // warm-up: JIT, XNNPACK's weight packing
        const rate = (result.tokens / result.ms) * 1000;
        all.set(setup.label, [...(all.get(setup.label) ?? []), rate]);
        const previous = best.get(setup.label);
        if (!previous || result.ms < previous.ms) best.set(setup.label, result);
      }
    }
    const rate = (r: Round) => (r.tokens / r.ms) * 1000;
    const range = (name: string) =>
      `${Math.min(...all.get(name)!).toFixed(0)}–${Math.max(...all.get(name)!).toFixed(0)}`;
    const sequence = best.get('sequence')!;
    const depthRound = best.get('depth')!;
    console.log(
      `${label}: ${sequence.tokens} tokens; depth and sequence tokens equal (no exit): ${sequence.output === depthRound.output}`,
    );
    for (const setup of setups) {
      const round = best.get(setup.label)!;
      console.log(
        `tokens/s ${setup.label}: ${rate(round).toFixed(0)} (rounds ${range(setup.label)}), ` +
          `${(rate(round) / rate(sequence)).toFixed(3)}× sequence; ${round.steps} steps`,
      );
    }
    const columns = setups.map((setup) => breakdown(best.get(setup.label)!));
    console.log(
      `\n| µs per emitted token | ${setups.map((setup) => setup.label).join(' | ')} | depth − sequence |`,
    );
    console.log(`|---|${setups.map(() => '---:|').join('')}---:|`);
    for (const phase of columns[0]!.keys()) {
      const cells = columns.map((column) => column.get(phase)!);
      console.log(
        `| ${phase} | ${cells.map((us) => us.toFixed(1)).join(' | ')} | ${(cells[1]! - cells[0]!).toFixed(1)} |`,
      );
    }
    const totals = columns.map((column) => [...column.values()].reduce((n, v) => n + v, 0));
    console.log(
      `| total | ${totals.map((us) => us.toFixed(1)).join(' | ')} | ${(totals[1]! - totals[0]!).toFixed(1)} |\n`,
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
