/**
 * The `replay` exit policy, **for benchmarks only**: each token's exit loop is drawn from a given
 * distribution with a seeded generator, whatever the model reads out. It stands in for confidence exits on
 * a synthetic model whose own confidences mean nothing (random weights), so that its serving cost can be
 * measured with the exit behaviour of a real model (e.g. the exit-loop shares {@link calibrateExit}
 * measured on stories260K). Its tokens are the model's greedy tokens at the drawn loop; their quality
 * means nothing.
 *
 * @module
 */
import { seededRandom } from '@rrt/core';
import { CalibrationError } from './errors.js';
import type { ExitRule, LoopReadout } from './exit.js';

/** Options of the `replay` policy. */
export interface ReplayPolicy {
  kind: 'replay';
  /** Probability of exiting at each loop (0-based; normalised; loops past the model's last count as its last). */
  exitLoopShares: readonly number[];
  /** Seed of the draws (one per token, in the order tokens start). */
  seed: number;
}

/** Compiles a {@link ReplayPolicy}: reads out every loop (as confidence exits do) and exits at the drawn loop. */
export function replayRule(policy: ReplayPolicy): ExitRule {
  const shares = policy.exitLoopShares;
  const total = shares.reduce((sum, share) => sum + share, 0);
  if (shares.length === 0 || shares.some((share) => !(share >= 0)) || !(total > 0)) {
    throw new CalibrationError(
      'exitLoopShares',
      `non-negative shares with a positive sum (got [${shares.join(', ')}])`,
    );
  }
  const random = seededRandom(policy.seed);
  // One draw per token: a token's readouts share one history array (the scheduler starts a new one per token).
  const drawn = new WeakMap<readonly LoopReadout[], number>();
  const draw = () => {
    let u = random() * total;
    for (const [loop, share] of shares.entries()) {
      u -= share;
      if (u < 0) return loop;
    }
    return shares.length - 1;
  };
  return {
    readsOut: () => true,
    exits: (history, loops) => {
      let loop = drawn.get(history);
      if (loop === undefined) {
        loop = Math.min(draw(), loops - 1);
        drawn.set(history, loop);
      }
      return history[history.length - 1]!.loop >= loop;
    },
    exitLoop: (history) => history[history.length - 1]!.loop,
  };
}
