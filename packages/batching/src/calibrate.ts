/**
 * Exit calibration: the confidence threshold τ of a `confidence` exit policy, chosen on held-out text.
 * Teacher-forced over the text, every position is read out after every loop; under τ a position exits at
 * the first loop (from `minLoops`) whose max softmax probability is ≥ τ. The chosen τ is the smallest one
 * at which (and at every larger τ) the share of positions whose exit-loop argmax differs from the last
 * loop's stays within `maxChange`. "Perplexity with exits" scores each position's target under the
 * distribution of its exit loop.
 *
 * @module
 */
import { type Decoder, exitDepths, InterruptedError, yieldToEventLoop } from '@rrt/core';
import type { Tensor } from '@rrt/tensor';
import { rowConfidences } from './confidence.js';
import { CalibrationError } from './errors.js';
import { exitChecks } from './exit.js';

/** Every position's readout after every loop, teacher-forced (see {@link exitProfile}). */
export interface ExitProfile {
  /** Loops of the model (readouts per position). */
  loops: number;
  /** Positions scored (each with a next-token target). */
  positions: number;
  /** `[position · loops + loop]`: argmax of that loop's logits. */
  argmax: Int32Array;
  /** `[position · loops + loop]`: its softmax probability (the engine's float32 readback of it). */
  maxProbability: Float64Array;
  /** `[position · loops + loop]`: log-probability of the position's next token (the target). */
  targetLogProbability: Float64Array;
}

/** Options of {@link exitProfile} and {@link calibrateExit}. */
export interface ExitProfileOptions {
  /** Most positions to score, over all sequences in order (default 4096). */
  maxTokens?: number;
  /** Longest window run at once; longer sequences are cut into windows (default the model's positions, at most 512). */
  context?: number;
  signal?: AbortSignal;
}

/**
 * Runs each token sequence (teacher-forced, from its own start) with a readout after every loop, and keeps
 * per position and loop the argmax, its probability and the target's log-probability.
 *
 * @example
 * ```ts
 * const profile = await exitProfile(model, [[1, 403, 76, 9], [1, 28, 5]]);
 * ```
 */
export async function exitProfile(
  model: Decoder,
  sequences: readonly (readonly number[])[],
  options: ExitProfileOptions = {},
): Promise<ExitProfile> {
  const { backend, config } = model;
  const loops = exitDepths(config.recursion, config.numHiddenLayers).length;
  const maxTokens = options.maxTokens ?? 4096;
  const context = options.context ?? Math.min(config.maxPositionEmbeddings, 512);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new CalibrationError('maxTokens', `a positive integer (got ${maxTokens})`);
  }
  if (!Number.isInteger(context) || context < 2 || context > config.maxPositionEmbeddings) {
    throw new CalibrationError('context', `an integer in 2…${config.maxPositionEmbeddings} (got ${context})`);
  }
  const windows: number[][] = [];
  let planned = 0;
  for (const sequence of sequences) {
    for (let start = 0; start + 1 < sequence.length && planned < maxTokens; start += context) {
      // A window of n tokens scores n − 1 positions.
      const length = Math.min(context, sequence.length - start, maxTokens - planned + 1);
      if (length < 2) break;
      windows.push(sequence.slice(start, start + length) as number[]);
      planned += length - 1;
    }
  }
  if (planned === 0) throw new CalibrationError('tokenIds', 'at least one sequence of two or more tokens');
  const vocab = config.vocabSize;
  const argmaxes = new Int32Array(planned * loops);
  const maxProbability = new Float64Array(planned * loops);
  const targetLogProbability = new Float64Array(planned * loops);
  let position = 0;
  for (const window of windows) {
    await yieldToEventLoop();
    if (options.signal?.aborted) throw new InterruptedError('calibration', { cause: options.signal.reason });
    for (const id of window) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new CalibrationError('tokenIds', `ids in 0…${vocab - 1} (got ${id})`);
      }
    }
    const ids = backend.fromArray(Int32Array.from(window), [1, window.length], 'int32');
    const output = model.forward(ids, { loopOutputs: true });
    const tensors: Tensor[] = [ids, output.logits, ...output.loops.flatMap((l) => [l.hidden, l.logits])];
    try {
      for (const [loop, readout] of output.loops.entries()) {
        // The executor's own readback, so that τ = a profile value reproduces its exits there.
        const confidences = await rowConfidences(backend, readout.logits);
        for (let t = 0; t + 1 < window.length; t++) {
          const row = confidences.logits.subarray(t * vocab, (t + 1) * vocab);
          const best = confidences.argmax[t]!;
          let total = 0;
          for (const value of row) total += Math.exp(value - row[best]!);
          const at = (position + t) * loops + loop;
          argmaxes[at] = best;
          maxProbability[at] = confidences.maxProbability[t]!;
          targetLogProbability[at] = row[window[t + 1]!]! - row[best]! - Math.log(total);
        }
      }
    } finally {
      backend.dispose(tensors);
    }
    position += window.length - 1;
  }
  return { loops, positions: planned, argmax: argmaxes, maxProbability, targetLogProbability };
}

/** What one threshold gives over a profile. */
export interface ExitOutcome {
  threshold: number;
  /** Share of positions whose exit-loop argmax differs from the last loop's. */
  changedShare: number;
  /** Mean 0-based exit loop. */
  meanExitLoop: number;
  /** Mean readouts per position: each checked loop it reaches, and the last loop when it runs to it. */
  readoutsPerToken: number;
  /** Perplexity with each position scored at its exit loop. */
  perplexity: number;
  /** Share of positions exiting at each loop (sums to 1). */
  exitLoopShares: number[];
}

/** Per loop before the last, whether a token may exit there ({@link exitChecks}). */
function checkedMask(loops: number, minLoops: number, checkLoops?: readonly number[]): boolean[] {
  return Array.from({ length: loops - 1 }, (_, loop) => loop).map(exitChecks(minLoops, checkLoops));
}

/**
 * Cost per token of an outcome, in passes of the block: the loops it runs and `readoutCost` for each
 * readout, `meanExitLoop + 1 + readoutCost · readoutsPerToken`.
 */
export function costPerToken(outcome: ExitOutcome, readoutCost: number): number {
  return outcome.meanExitLoop + 1 + readoutCost * outcome.readoutsPerToken;
}

function exitLoopOf(profile: ExitProfile, position: number, threshold: number, checked: boolean[]): number {
  const { loops, maxProbability } = profile;
  for (let loop = 0; loop < loops - 1; loop++) {
    if (checked[loop] && maxProbability[position * loops + loop]! >= threshold) return loop;
  }
  return loops - 1;
}

/**
 * The outcome of exit policy `confidence` at `threshold` (and `minLoops`, default 1, and `checkLoops`, by
 * default every loop) over `profile`.
 */
export function exitOutcome(
  profile: ExitProfile,
  threshold: number,
  minLoops = 1,
  checkLoops?: readonly number[],
): ExitOutcome {
  const { loops, positions, argmax, targetLogProbability } = profile;
  const checked = checkedMask(loops, minLoops, checkLoops);
  // Readouts a position exiting at `loop` pays: the checked loops up to it, and the last loop's.
  const readoutsAt = new Array<number>(loops).fill(0);
  for (let loop = 0, seen = 0; loop < loops; loop++) {
    if (loop === loops - 1 || checked[loop]) seen++;
    readoutsAt[loop] = seen;
  }
  const counts = new Array<number>(loops).fill(0);
  let changed = 0;
  let loopSum = 0;
  let readouts = 0;
  let nll = 0;
  for (let p = 0; p < positions; p++) {
    const loop = exitLoopOf(profile, p, threshold, checked);
    counts[loop]!++;
    loopSum += loop;
    readouts += readoutsAt[loop]!;
    if (argmax[p * loops + loop] !== argmax[p * loops + loops - 1]) changed++;
    nll -= targetLogProbability[p * loops + loop]!;
  }
  return {
    threshold,
    changedShare: changed / positions,
    meanExitLoop: loopSum / positions,
    readoutsPerToken: readouts / positions,
    perplexity: Math.exp(nll / positions),
    exitLoopShares: counts.map((count) => count / positions),
  };
}

/** Options of {@link chooseThreshold} and {@link calibrateExit}. */
export interface CalibrationOptions {
  /** Largest share of changed tokens allowed (default 0.01). */
  maxChange?: number;
  /** Loops every token runs before it may exit (default 1). */
  minLoops?: number;
  /**
   * What one token's readout at a loop (final norm, head, softmax, read back) costs, in passes of the
   * block (e.g. 0.3: 30 % of one loop; `readoutCost` of measured step times gives it). When given, the
   * calibration also chooses the loops worth checking (`checkLoops`): of every set of loops from
   * `minLoops − 1` (at most 12 of them), the one whose τ gives the lowest cost per token,
   * `meanExitLoop + 1 + readoutCost · readoutsPerToken`, within `maxChange`. The model leaves out what
   * filling an exited token's skipped depths costs (CALM propagation). Without it every loop from
   * `minLoops − 1` is checked.
   */
  readoutCost?: number;
  /** Thresholds whose outcome is reported as the curve (default 0.5 … 0.999); the chosen τ is added. */
  curveThresholds?: readonly number[];
}

/** The chosen threshold, what it gives, and the curve around it. */
export interface ExitCalibration extends ExitOutcome {
  maxChange: number;
  minLoops: number;
  /** The loops (0-based) at which a token may exit: the policy's `checkLoops`. */
  checkLoops: number[];
  /** The readout cost the loops were chosen for (0 when not given). */
  readoutCost: number;
  /** Cost per token in passes of the block ({@link costPerToken} at `readoutCost`). */
  costPerToken: number;
  /** Positions the profile scored. */
  positions: number;
  /** Perplexity at full depth (no exits). */
  fullDepthPerplexity: number;
  /** Outcomes at the curve's thresholds and the chosen one, highest τ first. */
  curve: ExitOutcome[];
}

const defaultCurve = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];

/** Most candidate loops whose every subset {@link chooseThreshold} tries (2^12 sweeps). */
const maxCheckCandidates = 12;

/** Every (position, loop before the last) probability, highest first (ties: the earlier loop first). */
interface SortedReadouts {
  position: Int32Array;
  loop: Int32Array;
  probability: Float64Array;
}

function sortReadouts(profile: ExitProfile): SortedReadouts {
  const { loops, positions, maxProbability } = profile;
  const order: number[] = [];
  for (let p = 0; p < positions; p++)
    for (let loop = 0; loop < loops - 1; loop++) order.push(p * loops + loop);
  order.sort((a, b) => maxProbability[b]! - maxProbability[a]! || (a % loops) - (b % loops));
  return {
    position: Int32Array.from(order, (at) => Math.floor(at / loops)),
    loop: Int32Array.from(order, (at) => at % loops),
    probability: Float64Array.from(order, (at) => maxProbability[at]!),
  };
}

/**
 * The smallest τ at which, and at every larger τ, exits at the `checked` loops keep the changed share
 * within `maxChange`: lowering τ past a readout's probability lets its position exit at that loop (the
 * earliest such loop wins), so a sweep down the sorted readouts visits every τ at which an exit moves.
 */
function sweepThreshold(
  profile: ExitProfile,
  sorted: SortedReadouts,
  checked: readonly boolean[],
  maxChange: number,
): number {
  const { loops, positions, argmax } = profile;
  const exitLoop = new Int32Array(positions).fill(loops - 1);
  const changedAt = (p: number) => argmax[p * loops + exitLoop[p]!] !== argmax[p * loops + loops - 1];
  let changed = 0;
  let chosen = Number.POSITIVE_INFINITY;
  const count = sorted.probability.length;
  for (let i = 0; i < count; ) {
    const threshold = sorted.probability[i]!;
    let moved = false;
    for (; i < count && sorted.probability[i] === threshold; i++) {
      const loop = sorted.loop[i]!;
      const position = sorted.position[i]!;
      if (!checked[loop] || loop >= exitLoop[position]!) continue;
      if (changedAt(position)) changed--;
      exitLoop[position] = loop;
      if (changedAt(position)) changed++;
      moved = true;
    }
    // Only a τ at which some exit moves is a breakpoint (the others give the exits of the one above).
    if (!moved) continue;
    if (changed > maxChange * positions) break;
    chosen = threshold;
  }
  return chosen;
}

/**
 * Picks the smallest τ such that at τ and at every larger threshold the changed share is within
 * `maxChange` (the changed share need not fall monotonically with τ; this stops at the first breach from
 * above). Exact: it sweeps every probability at which some position's exit loop moves, and names the
 * lowest such breakpoint that holds (every τ down to the next breakpoint gives the same exits). `threshold`
 * is `Infinity` (never exit) when even the highest breakpoint changes too many tokens. With
 * `readoutCost`, it does so for every set of loops to check and keeps the cheapest (see
 * {@link CalibrationOptions}).
 */
export function chooseThreshold(profile: ExitProfile, options: CalibrationOptions = {}): ExitCalibration {
  const maxChange = options.maxChange ?? 0.01;
  const minLoops = options.minLoops ?? 1;
  const readoutCost = options.readoutCost ?? 0;
  if (!(maxChange >= 0 && maxChange <= 1))
    throw new CalibrationError('maxChange', `in 0…1 (got ${maxChange})`);
  if (!Number.isInteger(minLoops) || minLoops < 1) {
    throw new CalibrationError('minLoops', `a positive integer (got ${minLoops})`);
  }
  if (!(readoutCost >= 0 && Number.isFinite(readoutCost))) {
    throw new CalibrationError('readoutCost', `a finite number ≥ 0 (got ${options.readoutCost})`);
  }
  const { loops, positions } = profile;
  const candidates: number[] = [];
  for (let loop = Math.max(0, minLoops - 1); loop < loops - 1; loop++) candidates.push(loop);
  if (options.readoutCost !== undefined && candidates.length > maxCheckCandidates) {
    throw new CalibrationError(
      'readoutCost',
      `choosing the loops to check tries every set of them: at most ${maxCheckCandidates} loops may exit (got ${candidates.length}; raise minLoops)`,
    );
  }
  const sorted = sortReadouts(profile);
  // Without a readout cost every candidate loop is checked; with one, every subset of them is tried.
  const subsets =
    options.readoutCost === undefined
      ? [candidates]
      : Array.from({ length: 1 << candidates.length }, (_, bits) =>
          candidates.filter((_, index) => bits & (1 << index)),
        ).reverse();
  let best: { checkLoops: number[]; outcome: ExitOutcome; cost: number } | undefined;
  for (const checkLoops of subsets) {
    const threshold = sweepThreshold(profile, sorted, checkedMask(loops, minLoops, checkLoops), maxChange);
    const outcome = exitOutcome(profile, threshold, minLoops, checkLoops);
    const cost = costPerToken(outcome, readoutCost);
    if (!best || cost < best.cost) best = { checkLoops, outcome, cost };
  }
  const { checkLoops, outcome, cost } = best!;
  const thresholds = [...new Set([...(options.curveThresholds ?? defaultCurve), outcome.threshold])]
    .filter(Number.isFinite)
    .sort((a, b) => b - a);
  return {
    ...outcome,
    maxChange,
    minLoops,
    checkLoops,
    readoutCost,
    costPerToken: cost,
    positions,
    fullDepthPerplexity: exitOutcome(profile, Number.POSITIVE_INFINITY).perplexity,
    curve: thresholds.map((threshold) => exitOutcome(profile, threshold, minLoops, checkLoops)),
  };
}

/**
 * Calibrates a `confidence` exit policy on held-out token sequences: {@link exitProfile}, then
 * {@link chooseThreshold}.
 *
 * @example
 * ```ts
 * const { threshold, changedShare, meanExitLoop } = await calibrateExit(model, documents, { maxChange: 0.01 });
 * const engine = createEngine(model, { mode: 'depth', maxSlots: 8, kvBytes: 64 << 20, exit: { kind: 'confidence', threshold } });
 * ```
 */
export async function calibrateExit(
  model: Decoder,
  sequences: readonly (readonly number[])[],
  options: CalibrationOptions & ExitProfileOptions = {},
): Promise<ExitCalibration> {
  return chooseThreshold(await exitProfile(model, sequences, options), options);
}
