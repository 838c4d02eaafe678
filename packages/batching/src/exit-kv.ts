/**
 * What fills the keys and values a token skipped by exiting early, as a value: later tokens that go
 * deeper attend to depths an exited token never computed. The scheduler asks the rule after each exit and
 * does not know which one it has.
 *
 * @module
 */

/**
 * How an exited token's skipped depths get their keys and values:
 * - `propagate` (default): CALM's state propagation. The exit hidden state goes through each skipped
 *   depth's K/V projections (that loop's LoRA), batched into the next step. Approximate, cheap (no
 *   attention, no MLP).
 * - `complete`: FREE-style completion. The exited token keeps running through its remaining loops in
 *   later steps, in the background beside the next tokens, so its keys and values are exact; its token
 *   was already emitted, and no compute is saved (only latency).
 *
 * Under MoR-style recursive KV sharing neither runs: loop 0's entries serve every loop.
 */
export type ExitKV = 'propagate' | 'complete';

/** An {@link ExitKV}, compiled: what the scheduler schedules for a token that exited early. */
export interface ExitKVRule {
  /** Fill the skipped depths at the next step by state propagation from the exit hidden state. */
  readonly propagates: boolean;
  /** Keep running the token's remaining loops as background rows (no readout), one step after another. */
  readonly completes: boolean;
}

/** Compiles an {@link ExitKV}. */
export function exitKVRule(kind: ExitKV): ExitKVRule {
  const rules: Record<ExitKV, ExitKVRule> = {
    propagate: { propagates: true, completes: false },
    complete: { propagates: false, completes: true },
  };
  return rules[kind];
}
