/**
 * The plain data that passes between the scheduler and the executor: what one step runs, and what it
 * read out.
 *
 * @module
 */
import type { LoopReadout } from './exit.js';

/** One request's rows in a step: a prompt chunk or one decode token, at loop `loop`. */
export interface StepRow {
  /** Request id. */
  id: number;
  /** Token ids of the chunk (their positions follow `offset`). */
  tokens: readonly number[];
  /** Position of the chunk's first token. */
  offset: number;
  /** The loop the chunk starts this step at (it has run loops `0 … loop − 1` in earlier steps). */
  loop: number;
  /** For each loop run this step, whether the chunk's last row is read out (final norm + head). */
  readouts: readonly boolean[];
  /** Whether its readouts carry their logits (the request samples its tokens from them). */
  keepsLogits?: boolean;
}

/**
 * KV of a token that exited early, to fill from its exit hidden state (CALM-style state propagation):
 * effective depths `fromLoop·K …` at `position`.
 */
export interface Propagation {
  id: number;
  position: number;
  fromLoop: number;
}

/** One step, as the scheduler decided it. */
export interface StepPlan {
  rows: readonly StepRow[];
  /** Loops every row runs this step. */
  loops: number;
  propagations: readonly Propagation[];
}

/** What the executor read out: per row, one readout per `true` in its `readouts`, in loop order. */
export interface StepOutput {
  readouts: ReadonlyMap<number, readonly LoopReadout[]>;
}
