/**
 * Serving metrics of a {@link TraceRun}: throughput, TTFT and TPOT percentiles, mean exit loop, and the
 * share of tokens that differ from a reference run.
 *
 * @module
 */
import type { RequestResult, TraceRun } from './trace.js';

/**
 * The `q`-quantile (0…1) of `values` with linear interpolation between closest ranks (numpy's default);
 * NaN values are left out; NaN when none is left.
 */
export function percentile(values: readonly number[], q: number): number {
  const sorted = values.filter((value) => !Number.isNaN(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const rank = q * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low]! + (rank - low) * (sorted[high]! - sorted[low]!);
}

/** p50, p90 and p99 of a quantity. */
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

/** The headline numbers of one run. */
export interface RunSummary {
  /** Tokens generated over all requests. */
  outputTokens: number;
  seconds: number;
  tokensPerSecond: number;
  ttftMs: Percentiles;
  tpotMs: Percentiles;
  /** Mean 0-based exit loop over all tokens. */
  meanExitLoop: number;
}

function percentiles(values: readonly number[]): Percentiles {
  return { p50: percentile(values, 0.5), p90: percentile(values, 0.9), p99: percentile(values, 0.99) };
}

/** Summarises a run (measured or simulated). */
export function summarizeRun(run: TraceRun): RunSummary {
  const outputTokens = run.requests.reduce((sum, request) => sum + request.exitLoops.length, 0);
  const loopSum = run.requests.reduce(
    (sum, request) => sum + request.exitLoops.reduce((a, b) => a + b, 0),
    0,
  );
  return {
    outputTokens,
    seconds: run.seconds,
    tokensPerSecond: outputTokens / run.seconds,
    ttftMs: percentiles(run.requests.map((request) => request.ttftMs)),
    tpotMs: percentiles(run.requests.map((request) => request.tpotMs)),
    meanExitLoop: outputTokens > 0 ? loopSum / outputTokens : Number.NaN,
  };
}

/**
 * Share of `reference`'s tokens that `run` does not reproduce at the same position of the same request
 * (free-running: after a first difference the continuations usually differ too). Missing tokens count as
 * changed.
 */
export function changedTokenShare(
  run: readonly RequestResult[],
  reference: readonly RequestResult[],
): number {
  let total = 0;
  let changed = 0;
  reference.forEach((expected, i) => {
    const tokens = run[i]?.tokens ?? [];
    expected.tokens.forEach((token, t) => {
      total++;
      if (tokens[t] !== token) changed++;
    });
  });
  return total > 0 ? changed / total : 0;
}

/**
 * Share of requests whose tokens all equal the reference's (a stricter reading of "no change" than
 * {@link changedTokenShare}).
 */
export function identicalRequestShare(
  run: readonly RequestResult[],
  reference: readonly RequestResult[],
): number {
  if (reference.length === 0) return 1;
  const same = reference.filter((expected, i) => {
    const tokens = run[i]?.tokens ?? [];
    return (
      tokens.length === expected.tokens.length && tokens.every((token, t) => token === expected.tokens[t])
    );
  }).length;
  return same / reference.length;
}
