/**
 * The paged cache's two attention paths side by side in one run, on stories260K's relaxed 1×5 conversion
 * (average init, LoRA rank 8, not uptrained), default backend wasm, in three setups: `gather, segment`
 * (the gathered copy and LoRA by segment: the serving branch's starting point), `gather, masked` and
 * `paged, masked` (`Backend.pagedAttention` and concatenated LoRAs with a row mask: the defaults now):
 *
 * 1. one depth-wise decode step (`Decoder.layer` over S decode rows, sequence i at loop i mod 5, every
 *    sequence holding `--context` positions at every depth) with `attention: 'gather'` (each span's
 *    history gathered into a copy, one attention call per span) against `attention: 'paged'`
 *    (`Backend.pagedAttention` on the pool, one call per layer): milliseconds per step;
 * 2. bench/serving's seeded trace through the engine in static, sequence and depth mode (exit none, and
 *    depth with confidence exits) on both paths: tokens/s and the depth/sequence and depth/static ratios.
 *
 *   node --import tsx bench/paged-attention.ts [--backend wasm] [--requests 32] [--slots 8]
 *     [--threshold 0.9] [--context 64] [--clock cpu|wall] [--rounds 2]
 *
 * NOTE: the trace is common.ts's `turnTrace` (arrivals in event-loop turns), as bench/exit-kv.ts uses. The default clock is this process's CPU time, for both parts: the
 * engine computes on one thread (wasm, 1 thread), and on a shared machine wall time mostly measures the
 * other processes (`--clock wall` for wall time).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { type BatchingMode, createEngine, type ExitPolicy } from '@rrt/batching';
import { type Decoder, loadModel } from '@rrt/core';
import type { PagedAttentionPath } from '@rrt/kv-cache';
import {
  clockMs,
  depthwiseStepTimes,
  relaxedStories260K,
  replayTurnTrace,
  stories260KAssetsOrExit,
  type TurnTraceRequest,
  turnTrace,
} from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    requests: { type: 'string', default: '32' },
    slots: { type: 'string', default: '8' },
    threshold: { type: 'string', default: '0.9' },
    seed: { type: 'string', default: '7' },
    context: { type: 'string', default: '64' },
    clock: { type: 'string', default: 'cpu' },
    rounds: { type: 'string', default: '2' },
  },
});
const assets = stories260KAssetsOrExit('paged-attention');

/** Milliseconds per depth-wise decode step (mean of 20) of `sequences` rows, sequence i at loop (i + step) mod L. */
async function layerStep(model: Decoder, sequences: number, context: number, path: PagedAttentionPath) {
  const loops = model.config.recursion?.loops ?? 1;
  const times = await depthwiseStepTimes(model, {
    sequences,
    context,
    steps: 20,
    loopOf: (i, step) => (i + step) % loops,
    seed: 3,
    clock: clockMs(values.clock),
    attention: path,
  });
  return times.reduce((total, time) => total + time, 0) / times.length;
}

/** Seconds (on `--clock`) of the trace through the engine, and every request's tokens. */
async function runTrace(
  model: Decoder,
  trace: readonly TurnTraceRequest[],
  mode: BatchingMode,
  exit: ExitPolicy,
  attention: PagedAttentionPath,
) {
  const engine = createEngine(model, {
    mode,
    maxSlots: Number(values.slots),
    kvBytes: 64 << 20,
    exit,
    maxQueue: 4096,
    attention,
  });
  const clock = clockMs(values.clock);
  const started = clock();
  const tokens = (await replayTurnTrace(engine, trace)).map((run) => run.tokens);
  const seconds = (clock() - started) / 1000;
  engine.dispose();
  return { seconds, tokens };
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-paged-'));
try {
  const relaxedDir = await relaxedStories260K(assets, workDir);
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const segmentModel = await loadModel(relaxedDir, backend, { loraMode: 'segment' });
  const model = await loadModel(relaxedDir, backend, { loraMode: 'masked' });
  console.log(`backend ${kind}: ${reason}`);
  // The branch's starting point (gathered copies, LoRA by segment), the attention path alone changed
  // back, and the paged kernel with masked LoRAs.
  const setups: { label: string; model: Decoder; attention: PagedAttentionPath }[] = [
    { label: 'gather, segment', model: segmentModel, attention: 'gather' },
    { label: 'gather, masked', model, attention: 'gather' },
    { label: 'paged, masked', model, attention: 'paged' },
  ];
  const header = (first: string, unit: string) =>
    `| ${first} | ${setups.map((s) => `${s.label} ${unit}`).join(' | ')} | first / last |`;
  const rule = `|---${'|---:'.repeat(setups.length + 1)}|`;

  const context = Number(values.context);
  console.log(
    `\n1. one depth-wise decode step, ${context} positions cached per sequence (${values.clock} ms per step)\n`,
  );
  console.log(header('sequences', 'ms'));
  console.log(rule);
  for (const sequences of [8, 32, 128]) {
    for (const setup of setups) await layerStep(setup.model, sequences, context, setup.attention); // warm-up
    const times: number[] = [];
    for (const setup of setups) times.push(await layerStep(setup.model, sequences, context, setup.attention));
    console.log(
      `| ${sequences} | ${times.map((t) => t.toFixed(2)).join(' | ')} | ${(times[0]! / times.at(-1)!).toFixed(2)}× |`,
    );
  }

  const trace = turnTrace(Number(values.requests), Number(values.seed), model.config.vocabSize);
  const outputTokens = trace.reduce((total, r) => total + r.maxTokens, 0);
  const rounds = Number(values.rounds);
  console.log(
    `\n2. engine, trace of ${trace.length} requests (seed ${values.seed}), ${outputTokens} output tokens, ` +
      `${values.slots} slots (tokens per ${values.clock} second, best of ${rounds} rounds; same tokens: ✓ when every setup and ` +
      'round gave the same tokens)\n',
  );
  const none: ExitPolicy = { kind: 'none' };
  const confidence: ExitPolicy = { kind: 'confidence', threshold: Number(values.threshold) };
  const rows: [string, BatchingMode, ExitPolicy][] = [
    ['static', 'static', none],
    ['sequence', 'sequence', none],
    ['depth', 'depth', none],
    [`depth, confidence ≥ ${values.threshold}`, 'depth', confidence],
  ];
  const rates = new Map<string, number>();
  console.log(`${header('mode', 'tokens/s').replace('first / last', 'last / first')} same tokens |`);
  console.log(`${rule}---|`);
  for (const [label, mode, exit] of rows) {
    const tokens: string[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const setup of setups) {
        const result = await runTrace(setup.model, trace, mode, exit, setup.attention);
        const key = `${label}/${setup.label}`;
        rates.set(key, Math.max(rates.get(key) ?? 0, outputTokens / result.seconds));
        tokens.push(JSON.stringify(result.tokens));
      }
    }
    const same = tokens.every((t) => t === tokens[0]);
    const perSetup = setups.map((setup) => rates.get(`${label}/${setup.label}`)!);
    console.log(
      `| ${label} | ${perSetup.map((r) => r.toFixed(1)).join(' | ')} | ` +
        `${(perSetup.at(-1)! / perSetup[0]!).toFixed(2)}× | ${same ? '✓' : 'tokens differ'} |`,
    );
  }
  console.log(
    '\n| setup | depth / sequence | depth / static | depth+confidence / sequence | depth+confidence / static |',
  );
  console.log('|---|---:|---:|---:|---:|');
  for (const setup of setups) {
    const rate = (label: string) => rates.get(`${label}/${setup.label}`)!;
    const exitLabel = rows[3]![0];
    console.log(
      `| ${setup.label} | ${(rate('depth') / rate('sequence')).toFixed(2)}× | ${(rate('depth') / rate('static')).toFixed(2)}× | ` +
        `${(rate(exitLabel) / rate('sequence')).toFixed(2)}× | ${(rate(exitLabel) / rate('static')).toFixed(2)}× |`,
    );
  }
  segmentModel.dispose();
  model.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
