/**
 * What fills the KV of tokens that exited early, side by side in one run: CALM state propagation
 * (`exitKV: 'propagate'`, the default), FREE-style completion (`exitKV: 'complete'`: the exited token runs
 * its remaining loops in the background) and MoR recursive sharing (`sharing: 'recursive'`: loop 0's
 * entries serve every loop, nothing to fill). One seeded trace through the depth-wise engine on the
 * relaxed 1×5 stories260K model (average init, LoRA rank 8, not uptrained), at each confidence threshold.
 * Prints tokens/s (median of `--repeats` runs), the share of emitted tokens that differ from the same
 * model's no-exit greedy tokens (per-loop KV), the mean exit loop, and the rows run per emitted token
 * (compute: a token counts once per step it runs in; propagations are not rows).
 *
 *   node --import tsx bench/exit-kv.ts [--backend wasm] [--requests 32] [--slots 8] [--thresholds 0.9,0.99]
 *     [--min-loops 1] [--repeats 1] [--clock cpu|wall] [--model <relaxed model dir>]
 *
 * `--model <dir>` runs a relaxed model of the user's (e.g. the early-exit-trained one from `rrt train
 * --early-exit`) instead of converting stories260K in the run.
 *
 * `--repeats n` runs the whole list n times, interleaved (row 1, row 2, …, row 1, …), so that load from
 * other processes falls on every row alike; token outputs are deterministic and taken from the first round.
 * "vs propagation" is the share of emitted tokens that differ from the CALM propagation row at the same τ:
 * only tokens that run deeper than an earlier token exited read the filled keys and values, so with exits
 * mostly at loop 0 the KV method hardly shows in the tokens (`--min-loops 2` makes every token read loop 1).
 *
 * NOTE: arrivals are Poisson in event-loop turns (mean 2), prompts of 4–32 tokens, outputs of 8–48, all
 * from one seeded stream, every request runs to its max tokens. The clock is this process's CPU time by
 * default (other processes' load stays out; the wasm backend runs one thread), `--clock wall` for elapsed.
 * "reads filled KV" is the share of emitted tokens whose row attends, at some depth, to an earlier token's
 * keys and values that the KV method filled (an earlier token of the request exited at a lower loop).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { createEngine, type EngineOptions, type ExitPolicy } from '@rrt/batching';
import { type Decoder, loadModel } from '@rrt/core';
import {
  clockMs,
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
    thresholds: { type: 'string', default: '0.9,0.99' },
    repeats: { type: 'string', default: '1' },
    'min-loops': { type: 'string', default: '1' },
    clock: { type: 'string', default: 'cpu' },
    seed: { type: 'string', default: '7' },
    model: { type: 'string' },
  },
});
const assets = stories260KAssetsOrExit('exit-kv');
const now = clockMs(values.clock);

interface Run {
  tokens: number[][];
  /** Per request, each token's exit loop. */
  exits: number[][];
  exitLoops: number[];
  seconds: number;
  stepTokens: number;
}

async function runTrace(
  model: Decoder,
  trace: readonly TurnTraceRequest[],
  options: Pick<EngineOptions, 'exit' | 'exitKV' | 'sharing'>,
): Promise<Run> {
  const engine = createEngine(model, {
    mode: 'depth',
    maxSlots: Number(values.slots),
    kvBytes: 64 << 20,
    maxQueue: 4096,
    ...options,
  });
  const started = now();
  const results = await replayTurnTrace(engine, trace);
  const seconds = (now() - started) / 1000;
  const { stepTokens } = engine.stats();
  engine.dispose();
  return {
    tokens: results.map((r) => r.tokens),
    exits: results.map((r) => r.exitLoops),
    exitLoops: results.flatMap((r) => r.exitLoops),
    seconds,
    stepTokens,
  };
}

/**
 * Tokens whose row reads filled KV: token t comes from the row of token t − 1, which attends to the
 * positions of tokens 0 … t − 2 at every depth up to its exit; one of them that exited lower was filled.
 */
function readsFilled(run: Run): number {
  let count = 0;
  for (const exits of run.exits) {
    let lowest = Number.POSITIVE_INFINITY;
    exits.forEach((loop, t) => {
      if (t >= 2) lowest = Math.min(lowest, exits[t - 2]!);
      if (lowest < loop) count++;
    });
  }
  return count;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-exit-kv-'));
try {
  let relaxedDir = values.model;
  if (relaxedDir === undefined) {
    relaxedDir = await relaxedStories260K(assets, workDir);
  }
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const model = await loadModel(relaxedDir, backend);
  const trace = turnTrace(Number(values.requests), Number(values.seed), model.config.vocabSize);
  const emitted = trace.reduce((total, r) => total + r.maxTokens, 0);
  const repeats = Number(values.repeats);
  console.log(`backend ${kind}: ${reason}`);
  console.log(
    `trace: ${trace.length} requests (seed ${values.seed}), ${emitted} output tokens, ${values.slots} slots, ` +
      `depth mode, ${values.model ?? 'relaxed 1×5 stories260K (not uptrained)'}, median of ${repeats} run(s)\n`,
  );
  const none: ExitPolicy = { kind: 'none' };
  const rows: [string, string, Pick<EngineOptions, 'exit' | 'exitKV' | 'sharing'>][] = [
    ['none', 'per-loop KV', { exit: none }],
    ['none', 'recursive sharing', { exit: none, sharing: 'recursive' }],
  ];
  for (const threshold of values.thresholds.split(',').map(Number)) {
    const minLoops = Number(values['min-loops']);
    const exit: ExitPolicy = { kind: 'confidence', threshold, minLoops };
    const label = `confidence ≥ ${threshold}${minLoops > 1 ? `, ≥ ${minLoops} loops` : ''}`;
    rows.push(
      [label, 'CALM propagation', { exit, exitKV: 'propagate' }],
      [label, 'FREE completion', { exit, exitKV: 'complete' }],
      [label, 'recursive sharing', { exit, sharing: 'recursive' }],
    );
  }
  console.log(
    '| exit | KV of exited tokens | tokens/s | / no exit | changed tokens | vs propagation | mean exit loop | reads filled KV | rows per token |',
  );
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  const runs: Run[][] = rows.map(() => []);
  for (let round = 0; round < repeats; round++) {
    for (const [index, [, , options]] of rows.entries())
      runs[index]!.push(await runTrace(model, trace, options));
  }
  const differing = (a: Run, b: Run) => {
    let changed = 0;
    a.tokens.forEach((tokens, i) => {
      tokens.forEach((token, t) => {
        if (b.tokens[i]![t] !== token) changed++;
      });
    });
    return `${((100 * changed) / emitted).toFixed(1)} %`;
  };
  const rate = (index: number) => median(runs[index]!.map((x) => emitted / x.seconds));
  let propagation: Run | undefined;
  for (const [index, [exitLabel, kvLabel]] of rows.entries()) {
    const run = runs[index]![0]!;
    if (kvLabel === 'CALM propagation') propagation = run;
    const meanExit = run.exitLoops.reduce((a, b) => a + b, 0) / run.exitLoops.length;
    console.log(
      `| ${exitLabel} | ${kvLabel} | ${rate(index).toFixed(1)} | ${(rate(index) / rate(0)).toFixed(2)}× | ` +
        `${differing(run, runs[0]![0]!)} | ${exitLabel === 'none' ? '–' : differing(run, propagation!)} | ` +
        `${meanExit.toFixed(2)} | ${((100 * readsFilled(run)) / emitted).toFixed(1)} % | ${(run.stepTokens / emitted).toFixed(2)} |`,
    );
  }
  model.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
