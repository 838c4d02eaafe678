/**
 * The serving benchmark as one composable run: one trace through each model's batching modes and exit
 * policies (calibrated confidence exits where the model has a held-out profile, replayed exits where it is
 * synthetic), each row's quality cost beside its speed, and the paper-style simulation of the same trace
 * from the model's measured step times. `bench/serving.ts` and `rrt bench serving` both print
 * {@link servingTables} of {@link runServingSuite}. Measures wall time: for benchmarks, never tests.
 *
 * @module
 */
import type { Decoder } from '@rrt/core';
import {
  chooseThreshold,
  costPerToken,
  type ExitCalibration,
  type ExitProfile,
  exitOutcome,
} from './calibrate.js';
import { createEngine, type EngineOptions } from './engine.js';
import type { ExitPolicy } from './exit.js';
import { changedTokenShare, identicalRequestShare, type RunSummary, summarizeRun } from './metrics.js';
import type { BatchingMode } from './modes.js';
import { measureStepTimes, readoutCost, type StepTimes, simulateTrace } from './simulate.js';
import { runTrace, type TraceRequest, type TraceRun } from './trace.js';

/** The exit label of the row that replays a model's oracle exit shares in depth mode. */
const REPLAY_ORACLE = 'replay of oracle exit shares';
/** The exit label of the row where every decode token exits after loop 0. */
const REPLAY_CEILING = 'replay: every decode token at loop 0 (ceiling)';

/** One model of the suite. */
export interface SuiteModel {
  /** Its name in the tables. */
  name: string;
  model: Decoder;
  /** Teacher-forced readouts on held-out text: confidence exits are calibrated on it. */
  profile?: ExitProfile;
  /** Further confidence thresholds to run uncalibrated, for contrast (e.g. 0.9). */
  contrastThresholds?: readonly number[];
  /** For a synthetic model: exit-loop shares to replay (its own confidences mean nothing). */
  replayShares?: readonly number[];
}

/** Options of {@link runServingSuite}. */
export interface ServingSuiteOptions {
  trace: readonly TraceRequest[];
  maxSlots: number;
  kvBytes: number;
  /** Changed-token budget of the calibration (default 0.01). */
  maxChange?: number;
  /** Minimum loops before an exit (default 1). */
  minLoops?: number;
  /** Seed of replayed exits (default 0). */
  replaySeed?: number;
  /** Also measure step times and simulate the trace (default true). */
  simulate?: boolean;
  /** Further engine options for every run (page size, chunk size, KV sharing, ...). */
  engine?: Omit<Partial<EngineOptions>, 'mode' | 'exit' | 'maxSlots' | 'kvBytes'>;
  /** Called after each measured row (progress). */
  onRow?: (row: ServingRow) => void;
}

/** One measured run of the trace. */
export interface ServingRow {
  model: string;
  mode: BatchingMode;
  /** The exit policy, in words (`none`, `confidence ≥ 0.93 (calibrated)`, `replay`, ...). */
  exit: string;
  summary: RunSummary;
  /** Share of exit-loop counts per loop over the run's tokens. */
  exitLoopShares: number[];
  /**
   * Against the same model's sequence-mode no-exit run (free-running: a changed token changes what
   * follows); 0 for every no-exit row, absent for replayed exits.
   */
  changedTokenShare?: number;
  /** Share of requests whose tokens all equal the no-exit run's. */
  identicalRequestShare?: number;
  /** Teacher-forced on the held-out profile at this row's threshold. */
  teacherForced?: {
    changedShare: number;
    perplexity: number;
    fullDepthPerplexity: number;
    meanExitLoop: number;
  };
  /** This row's tokens/s over the same model's static and sequence (no-exit) rows. */
  overStatic?: number;
  overSequence?: number;
}

/** One simulated run of the trace. */
export interface SimulatedRow {
  model: string;
  mode: BatchingMode;
  /** Whose exit loops the tokens take: `none`, `oracle`, or a measured row's exit. */
  exits: string;
  summary: RunSummary;
  /** The measured row with the same mode and exits, when there is one. */
  measuredTokensPerSecond?: number;
}

/** Everything {@link runServingSuite} measured. */
export interface ServingSuiteResult {
  requests: number;
  outputTokens: number;
  maxSlots: number;
  rows: ServingRow[];
  simulated: SimulatedRow[];
  /** Per model: its calibration (when it had a profile) and its step times (when simulated). */
  models: {
    name: string;
    loops: number;
    calibration?: ExitCalibration;
    /** The calibration that also chose the loops to check, for the measured readout cost. */
    costAwareCalibration?: ExitCalibration;
    stepTimes?: StepTimes;
  }[];
}

function shares(exitLoops: readonly number[], loops: number): number[] {
  const counts = new Array<number>(loops).fill(0);
  for (const loop of exitLoops) counts[loop]!++;
  return counts.map((count) => count / Math.max(1, exitLoops.length));
}

/**
 * Runs the trace through every model: vanilla models in `static` and `sequence` mode; recursive ones also
 * in `depth` mode without exits, and with replayed exits where they have replay shares. A recursive model
 * with a profile also runs depth mode with calibrated confidence exits checked at every loop, with exits
 * checked only at the loops chosen for the readout cost measured at `maxSlots` rows (again with FREE-style
 * completion of exited tokens, `exitKV: 'complete'`, whose exact KV shows what CALM propagation changes),
 * at the contrast thresholds, and with exits replaying the shares of a sequence-mode oracle run: the
 * measured speed of exits as early as any rule that changes nothing could make them. Every recursive model
 * also gets the ceiling of exits on the trace: each decode token leaves after loop 0 (prompt chunks and
 * first tokens run every loop, so that prefill bounds what exits can gain), with per-loop KV and again
 * under recursive sharing (no propagation; speed only). Replayed rows get no
 * changed-token share. Step times are measured first; unless `simulate` is false the same trace is then
 * simulated with no exits, oracle exits (that oracle run's trajectories) and each measured row's exits.
 */
export async function runServingSuite(
  models: readonly SuiteModel[],
  options: ServingSuiteOptions,
): Promise<ServingSuiteResult> {
  const { trace, maxSlots, kvBytes } = options;
  const rows: ServingRow[] = [];
  const simulated: SimulatedRow[] = [];
  const modelResults: ServingSuiteResult['models'] = [];
  const run = async (
    model: Decoder,
    mode: BatchingMode,
    exit: ExitPolicy,
    /** Options of this run only (over `options.engine`). */
    overrides: Pick<EngineOptions, 'exitKV' | 'sharing'> = {},
  ): Promise<TraceRun> => {
    const engine = createEngine(model, {
      maxQueue: trace.length + 1,
      ...options.engine,
      ...overrides,
      mode,
      maxSlots,
      kvBytes,
      exit,
    });
    try {
      return await runTrace(engine, trace);
    } finally {
      engine.dispose();
    }
  };
  for (const entry of models) {
    const { model, name } = entry;
    const loops = model.config.recursion?.loops ?? 1;
    const simulates = options.simulate ?? true;
    // Step times first: the cost-aware calibration needs the readout's cost at this batch size.
    let stepTimes: StepTimes | undefined;
    if (simulates || (entry.profile && loops > 1)) {
      const batchSizes = [...new Set([1, 2, 4, 8, 16, 32].filter((b) => b < maxSlots).concat(maxSlots))];
      stepTimes = await measureStepTimes(model, { batchSizes });
    }
    const calibrationOptions = { maxChange: options.maxChange ?? 0.01, minLoops: options.minLoops ?? 1 };
    const calibration = entry.profile ? chooseThreshold(entry.profile, calibrationOptions) : undefined;
    const costAwareCalibration =
      entry.profile && loops > 1
        ? chooseThreshold(entry.profile, {
            ...calibrationOptions,
            readoutCost: readoutCost(stepTimes!, maxSlots),
          })
        : undefined;
    const runs: { row: ServingRow; run: TraceRun; policy: ExitPolicy }[] = [];
    let oracle: TraceRun | undefined;
    const measure = async (
      mode: BatchingMode,
      policy: ExitPolicy,
      label: string,
      overrides?: Pick<EngineOptions, 'exitKV' | 'sharing'>,
    ) => {
      const result = await run(model, mode, policy, overrides);
      const all = result.requests.flatMap((request) => request.exitLoops);
      const row: ServingRow = {
        model: name,
        mode,
        exit: label,
        summary: summarizeRun(result),
        exitLoopShares: shares(all, loops),
      };
      const reference = runs.find((r) => r.row.mode === 'sequence' && r.policy.kind === 'none');
      // Replayed exits ignore what the model reads out: their tokens' quality means nothing.
      if (reference && policy.kind !== 'replay') {
        row.changedTokenShare = changedTokenShare(result.requests, reference.run.requests);
        row.identicalRequestShare = identicalRequestShare(result.requests, reference.run.requests);
      }
      if (entry.profile && policy.kind === 'confidence') {
        const outcome = exitOutcome(entry.profile, policy.threshold, policy.minLoops, policy.checkLoops);
        row.teacherForced = {
          changedShare: outcome.changedShare,
          perplexity: outcome.perplexity,
          fullDepthPerplexity: calibration!.fullDepthPerplexity,
          meanExitLoop: outcome.meanExitLoop,
        };
      }
      const base = (m: BatchingMode) => runs.find((r) => r.row.mode === m && r.policy.kind === 'none')?.row;
      if (mode === 'depth') {
        row.overStatic = row.summary.tokensPerSecond / base('static')!.summary.tokensPerSecond;
        row.overSequence = row.summary.tokensPerSecond / base('sequence')!.summary.tokensPerSecond;
      }
      runs.push({ row, run: result, policy });
      rows.push(row);
      options.onRow?.(row);
    };
    const none: ExitPolicy = { kind: 'none' };
    await measure('static', none, 'none');
    await measure('sequence', none, 'none');
    if (loops > 1) {
      await measure('depth', none, 'none');
      if (calibration && Number.isFinite(calibration.threshold)) {
        await measure(
          'depth',
          { kind: 'confidence', threshold: calibration.threshold, minLoops: calibration.minLoops },
          `confidence ≥ ${calibration.threshold.toPrecision(6)} (calibrated)`,
        );
      }
      if (costAwareCalibration && Number.isFinite(costAwareCalibration.threshold)) {
        const { threshold, minLoops, checkLoops, readoutCost: cost } = costAwareCalibration;
        await measure(
          'depth',
          { kind: 'confidence', threshold, minLoops, checkLoops },
          `confidence ≥ ${threshold.toPrecision(6)} at loops ${checkLoops.join(', ')} (calibrated, readout ${cost.toFixed(2)} of a pass)`,
        );
        // The same exits with exact KV for the skipped depths (FREE-style completion: no compute saved on
        // them), which shows how much of the served change CALM propagation's approximate KV causes.
        if (options.engine?.exitKV !== 'complete' && options.engine?.sharing !== 'recursive') {
          await measure(
            'depth',
            { kind: 'confidence', threshold, minLoops, checkLoops },
            `confidence ≥ ${threshold.toPrecision(6)} at loops ${checkLoops.join(', ')}, FREE completion`,
            { exitKV: 'complete' },
          );
        }
      }
      for (const threshold of entry.contrastThresholds ?? []) {
        await measure('depth', { kind: 'confidence', threshold }, `confidence ≥ ${threshold} (uncalibrated)`);
      }
      if (entry.replayShares) {
        await measure(
          'depth',
          { kind: 'replay', exitLoopShares: entry.replayShares, seed: options.replaySeed ?? 0 },
          'replay',
        );
      }
      // The ceiling of early exits on this trace: every decode token leaves after loop 0 (prompt chunks
      // and each request's first token still run every loop).
      const atLoop0: ExitPolicy = {
        kind: 'replay',
        exitLoopShares: Array.from({ length: loops }, (_, loop) => (loop === 0 ? 1 : 0)),
        seed: options.replaySeed ?? 0,
      };
      await measure('depth', atLoop0, REPLAY_CEILING);
      // The same under MoR-style recursive sharing (loop 0's keys and values serve every loop): nothing
      // to propagate, so the row says what propagation costs at the ceiling. The model is not the one it
      // was trained as (speed only).
      if (options.engine?.sharing !== 'recursive') {
        await measure('depth', atLoop0, `${REPLAY_CEILING}, recursive KV sharing`, { sharing: 'recursive' });
      }
      if (entry.profile) {
        // The bound of any exit rule that reads out every loop: tokens exit as early as the oracle's do
        // (drawn from its shares), so the row measures the engine at exits that change nothing.
        oracle = await run(model, 'sequence', { kind: 'oracle' });
        await measure(
          'depth',
          {
            kind: 'replay',
            exitLoopShares: shares(
              oracle.requests.flatMap((request) => request.exitLoops),
              loops,
            ),
            seed: options.replaySeed ?? 0,
          },
          REPLAY_ORACLE,
        );
      }
    }
    if (simulates) {
      const simulate = (mode: BatchingMode, exits: string, exitLoops?: number[][], measured?: ServingRow) => {
        const result = simulateTrace(trace, {
          mode,
          maxSlots,
          times: stepTimes!,
          ...(exitLoops ? { exitLoops } : {}),
        });
        simulated.push({
          model: name,
          mode,
          exits,
          summary: summarizeRun(result),
          ...(measured ? { measuredTokensPerSecond: measured.summary.tokensPerSecond } : {}),
        });
      };
      const measuredRow = (mode: BatchingMode, exit: string) =>
        runs.find((r) => r.row.mode === mode && r.row.exit === exit)?.row;
      simulate('static', 'none', undefined, measuredRow('static', 'none'));
      simulate('sequence', 'none', undefined, measuredRow('sequence', 'none'));
      if (loops > 1) {
        simulate('depth', 'none', undefined, measuredRow('depth', 'none'));
        if (oracle) {
          simulate(
            'depth',
            'oracle',
            oracle.requests.map((request) => request.exitLoops),
          );
        }
        for (const measured of runs.filter((r) => r.row.mode === 'depth' && r.policy.kind !== 'none')) {
          simulate(
            'depth',
            `as measured: ${measured.row.exit}`,
            measured.run.requests.map((request) => request.exitLoops),
            measured.row,
          );
        }
      }
    }
    modelResults.push({
      name,
      loops,
      ...(calibration ? { calibration } : {}),
      ...(costAwareCalibration ? { costAwareCalibration } : {}),
      ...(stepTimes ? { stepTimes } : {}),
    });
  }
  return {
    requests: trace.length,
    outputTokens: trace.reduce((sum, request) => sum + request.maxTokens, 0),
    maxSlots,
    rows,
    simulated,
    models: modelResults,
  };
}

const fixed = (value: number | undefined, digits: number) =>
  value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits);
const percent = (value: number | undefined) => (value === undefined ? '—' : `${(100 * value).toFixed(1)} %`);
const triple = (p: { p50: number; p90: number; p99: number }, digits: number) =>
  `${fixed(p.p50, digits)} / ${fixed(p.p90, digits)} / ${fixed(p.p99, digits)}`;

/** The measured table, the simulated table and each model's calibration, as Markdown. */
export function servingTables(result: ServingSuiteResult): string {
  const measured = [
    '| model | mode | exit | tokens/s | TTFT ms p50 / p90 / p99 | TPOT ms p50 / p90 / p99 | mean exit loop | ' +
      'depth / static | depth / sequence | changed tokens (served) | identical requests | changed (teacher-forced) | ppl with exits (full depth) |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...result.rows.map((row) => {
      const tf = row.teacherForced;
      return (
        `| ${row.model} | ${row.mode} | ${row.exit} | ${fixed(row.summary.tokensPerSecond, 1)} | ` +
        `${triple(row.summary.ttftMs, 0)} | ${triple(row.summary.tpotMs, 1)} | ${fixed(row.summary.meanExitLoop, 2)} | ` +
        `${row.overStatic === undefined ? '—' : `${row.overStatic.toFixed(2)}×`} | ` +
        `${row.overSequence === undefined ? '—' : `${row.overSequence.toFixed(2)}×`} | ` +
        `${percent(row.changedTokenShare)} | ${percent(row.identicalRequestShare)} | ${percent(tf?.changedShare)} | ` +
        `${tf ? `${tf.perplexity.toFixed(2)} (${tf.fullDepthPerplexity.toFixed(2)})` : '—'} |`
      );
    }),
  ];
  const simulatedTable = [
    '| model | mode | exits | simulated tokens/s | measured tokens/s | TTFT ms p50 / p90 / p99 | TPOT ms p50 / p90 / p99 | mean exit loop |',
    '|---|---|---|---:|---:|---:|---:|---:|',
    ...result.simulated.map(
      (row) =>
        `| ${row.model} | ${row.mode} | ${row.exits} | ${fixed(row.summary.tokensPerSecond, 1)} | ` +
        `${fixed(row.measuredTokensPerSecond, 1)} | ${triple(row.summary.ttftMs, 0)} | ${triple(row.summary.tpotMs, 1)} | ` +
        `${fixed(row.summary.meanExitLoop, 2)} |`,
    ),
  ];
  // Both calibrations' cost per token at the readout cost measured for the cost-aware one.
  const describe = (name: string, calibration: ExitCalibration, checks: string, cost: number) =>
    `${name}: calibrated τ ${Number.isFinite(calibration.threshold) ? calibration.threshold.toPrecision(6) : 'none (no τ keeps the change within budget)'}${checks} ` +
    `at max change ${percent(calibration.maxChange)} over ${calibration.positions} held-out positions: ` +
    `changed ${percent(calibration.changedShare)}, mean exit loop ${calibration.meanExitLoop.toFixed(2)}, ` +
    `readouts per token ${calibration.readoutsPerToken.toFixed(2)}, cost per token ` +
    `${costPerToken(calibration, cost).toFixed(2)} passes, ` +
    `perplexity with exits ${calibration.perplexity.toFixed(2)} (full depth ${calibration.fullDepthPerplexity.toFixed(2)})`;
  const calibrations = result.models.flatMap(({ name, calibration, costAwareCalibration }) => [
    ...(calibration
      ? [describe(name, calibration, ', every loop checked', costAwareCalibration?.readoutCost ?? 0)]
      : []),
    ...(costAwareCalibration
      ? [
          describe(
            name,
            costAwareCalibration,
            `, checked at loops [${costAwareCalibration.checkLoops.join(', ')}] for a readout of ${costAwareCalibration.readoutCost.toFixed(3)} passes`,
            costAwareCalibration.readoutCost,
          ),
        ]
      : []),
  ]);
  return [
    `${result.requests} requests, ${result.outputTokens} output tokens, ${result.maxSlots} slots`,
    '',
    ...calibrations,
    ...(calibrations.length > 0 ? [''] : []),
    'Measured:',
    '',
    ...measured,
    '',
    ...(result.simulated.length > 0
      ? ['Simulated (measured step times × exit trajectories):', '', ...simulatedTable]
      : []),
  ].join('\n');
}
