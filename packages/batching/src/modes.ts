/**
 * Batching modes as values: what the scheduler asks of one (may a request start now, how many loops a
 * row runs per step), never which one it is.
 *
 * @module
 */

/** The three batching modes of the engine. */
export type BatchingMode = 'static' | 'sequence' | 'depth';

/** A mode, compiled. */
export interface ModeRule {
  /** Whether a waiting request may take a free slot while `running` requests hold slots. */
  admits(running: number): boolean;
  /** Loops a row runs per step (the model's loop count, or 1 for depth-wise batching). */
  loopsPerStep(loops: number): number;
}

/** Compiles a {@link BatchingMode}. */
export function modeRule(mode: BatchingMode): ModeRule {
  const rules: Record<BatchingMode, ModeRule> = {
    // A batch runs until its last sequence ends before the next one starts.
    static: { admits: (running) => running === 0, loopsPerStep: (loops) => loops },
    // Continuous sequence-wise batching: slots refill at once; every token runs every loop per step.
    sequence: { admits: () => true, loopsPerStep: (loops) => loops },
    // Continuous depth-wise batching: each step runs the block once over every slot, each at its own loop.
    depth: { admits: () => true, loopsPerStep: () => 1 },
  };
  return rules[mode];
}
