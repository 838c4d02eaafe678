/**
 * Exit policies, per token: after each loop of a decode token the engine asks the policy whether the
 * token may leave now. Policies are values; the scheduler calls them without knowing which one it has.
 *
 * @module
 */
import { RequestError } from './errors.js';
import { type ReplayPolicy, replayRule } from './replay.js';

/** Which exit rule to use (a value handed to the engine). */
export type ExitPolicy =
  /** Every token runs every loop. */
  | { kind: 'none' }
  /**
   * Exit once the loop's readout has max softmax probability ≥ `threshold`, after at least `minLoops`
   * loops; with `checkLoops`, only at those loops (0-based, before the last), and no other loop but the
   * last is read out (each readout costs a head and a softmax: {@link chooseThreshold}'s `readoutCost`
   * picks the loops worth checking).
   */
  | { kind: 'confidence'; threshold: number; minLoops?: number; checkLoops?: readonly number[] }
  /** Exit when two consecutive loops' readouts have the same argmax. */
  | { kind: 'agreement' }
  /**
   * Runs every loop and records the earliest loop whose argmax equals the last one's (for analysis and
   * the simulation: it saves no compute).
   */
  | { kind: 'oracle' }
  /** Benchmarks only: exit loops drawn from a given distribution (see {@link ReplayPolicy}). */
  | ReplayPolicy;

/** What a policy sees after loop `loop` (0-based) of one token. */
export interface LoopReadout {
  loop: number;
  /** Argmax of this loop's logits. */
  argmax: number;
  /** Its softmax probability. */
  maxProbability: number;
  /** The loop's logits, when the request samples its tokens (the engine's `sampling`). */
  logits?: Float32Array;
}

/** A policy, compiled: the two questions the scheduler asks. */
export interface ExitRule {
  /** Whether loop `loop`'s readout is needed (the executor reads out only those). */
  readsOut(loop: number, loops: number): boolean;
  /** Whether the token leaves after `history`'s last loop (the last loop always ends it). */
  exits(history: readonly LoopReadout[], loops: number): boolean;
  /** The loop recorded as the token's exit loop, once it has finished. */
  exitLoop(history: readonly LoopReadout[]): number;
}

const last = (history: readonly LoopReadout[]) => history[history.length - 1]!;

/**
 * Whether a `confidence` policy may exit at `loop` (0-based, before the last): from loop `minLoops − 1`,
 * and only at `checkLoops` when given. One definition for the engine's rule and for calibration, so that a
 * calibrated policy exits where its profile said. A typed error unless `checkLoops` are loop indices.
 */
export function exitChecks(minLoops = 1, checkLoops?: readonly number[]): (loop: number) => boolean {
  for (const loop of checkLoops ?? []) {
    if (!Number.isInteger(loop) || loop < 0) {
      throw new RequestError(`exit checkLoops must be 0-based loop indices (got ${checkLoops!.join(', ')})`);
    }
  }
  const only = checkLoops === undefined ? undefined : new Set(checkLoops);
  return (loop) => loop + 1 >= minLoops && (only === undefined || only.has(loop));
}

/** Compiles an {@link ExitPolicy} into the rule the scheduler calls. */
export function exitRule(policy: ExitPolicy): ExitRule {
  const final = (loop: number, loops: number) => loop === loops - 1;
  const untilNow = (history: readonly LoopReadout[]) => last(history).loop;
  switch (policy.kind) {
    case 'none':
      return { readsOut: final, exits: () => false, exitLoop: untilNow };
    case 'confidence': {
      const checks = exitChecks(policy.minLoops, policy.checkLoops);
      return {
        readsOut: (loop, loops) => final(loop, loops) || checks(loop),
        exits: (history) => checks(last(history).loop) && last(history).maxProbability >= policy.threshold,
        exitLoop: untilNow,
      };
    }
    case 'agreement':
      return {
        readsOut: () => true,
        exits: (history) =>
          history.length >= 2 && history[history.length - 2]!.argmax === last(history).argmax,
        exitLoop: untilNow,
      };
    case 'oracle':
      return {
        readsOut: () => true,
        exits: () => false,
        exitLoop: (history) => history.find((readout) => readout.argmax === last(history).argmax)!.loop,
      };
    case 'replay':
      return replayRule(policy);
  }
}
