import type { Decoder } from '@rrt/core';
import type { PagedSequence } from '@rrt/kv-cache';
import type { Tensor } from '@rrt/tensor';
import { rowConfidences } from './confidence.js';
import type { LoopReadout } from './exit.js';
import type { Propagation, StepOutput, StepPlan } from './plan.js';

/**
 * Where a row's hidden state is kept between steps: a request may have several rows in flight (a decode
 * token and, under FREE-style completion, earlier tokens still running their deeper loops), each at its own
 * first position.
 */
const rowKey = (row: { id: number; offset: number }) => `${row.id}@${row.offset}`;

/**
 * A step's hidden rows, kept whole for the next step: `hidden: [M, d]` in the step's row order, and where
 * each row (by {@link rowKey}) starts in it and how many rows it has.
 */
interface KeptRows {
  hidden: Tensor;
  rows: Map<string, { start: number; length: number }>;
}

/**
 * Runs a {@link StepPlan} on the model: one ragged batch of every row, `plan.loops` passes over the
 * block, each row at its own loop (its LoRA and its KV at that depth). The step's hidden rows are kept
 * whole until the next step consumes those that continue (or propagate an exit).
 *
 * NOTE: a depth-wise step runs one pass, so its fixed costs are paid once per loop of every token
 * (bench/depth-overhead.ts measures them). The step's input is one gather of the rows that continue
 * from the kept tensor, with the step's new tokens (embedded in one call) written into their rows, not
 * one slice per row kept and a join: gathers, writes, slices and joins copy values exactly, so each row
 * is what it was.
 */
export class Executor {
  /** The previous step's hidden rows, for the rows that continue where (id, offset) left off. */
  private kept: KeptRows | undefined;

  constructor(
    private readonly model: Decoder,
    /** K, stored layers per loop. */
    private readonly blockSize: number,
    private readonly sequenceOf: (id: number) => PagedSequence,
    /** Whether exited tokens' skipped depths are filled (not under recursive sharing: loop 0 serves them). */
    private readonly propagates: boolean,
  ) {}

  /** Runs one step; reads back the readouts it asked for. */
  async run(plan: StepPlan): Promise<StepOutput> {
    const { model } = this;
    const { backend } = model;
    const previous = this.kept;
    this.kept = undefined;
    try {
      this.propagate(plan, previous);
      if (plan.rows.length === 0) return { readouts: new Map() };
      const spans = plan.rows.map((row) => ({ batch: 1, length: row.tokens.length, offset: row.offset }));
      const wanted: { id: number; loop: number; keepsLogits: boolean }[] = [];
      const flat = backend.tidy(() => {
        const rows = model.rows(spans);
        let hidden = this.stepInput(plan, previous);
        const lastRows: number[] = [];
        let end = 0;
        for (const span of spans) {
          end += span.length;
          lastRows.push(end - 1);
        }
        const outputs: Tensor[] = [];
        for (let pass = 0; pass < plan.loops; pass++) {
          for (let layer = 0; layer < this.blockSize; layer++) {
            hidden = model.layer(
              hidden,
              rows,
              plan.rows.map((row) => {
                const depth = (row.loop + pass) * this.blockSize + layer;
                const sequence = this.sequenceOf(row.id);
                // Per-loop KV: a row appends right after what its depth holds, or it would attend to a
                // history with holes (or overwrite one). Under recursive sharing loop 0's length serves all.
                if (this.propagates && sequence.length(depth) !== row.offset) {
                  throw new Error(
                    `request ${row.id}: depth ${depth} holds ${sequence.length(depth)} positions, the row writes ${row.offset}`,
                  );
                }
                return { depth, cache: sequence.layer(depth) };
              }),
            );
          }
          const reading: number[] = [];
          for (const [index, row] of plan.rows.entries()) if (row.readouts[pass]) reading.push(index);
          if (reading.length === 0) continue;
          const index = backend.fromArray(
            Int32Array.from(reading, (r) => lastRows[r]!),
            [reading.length],
            'int32',
          );
          outputs.push(model.readout(backend.gather(hidden, index)));
          for (const r of reading) {
            const row = plan.rows[r]!;
            wanted.push({ id: row.id, loop: row.loop + pass, keepsLogits: row.keepsLogits === true });
          }
        }
        rows.dispose();
        return [...outputs, hidden]; // tidy returns a flat list; split below
      });
      const logits = flat.slice(0, -1);
      const kept: KeptRows = { hidden: flat.at(-1)!, rows: new Map() };
      let start = 0;
      for (const row of plan.rows) {
        kept.rows.set(rowKey(row), { start, length: row.tokens.length });
        start += row.tokens.length;
      }
      this.kept = kept;
      return { readouts: await this.readBack(logits, wanted) };
    } finally {
      if (previous) backend.dispose(previous.hidden);
    }
  }

  /**
   * The step's input rows `[M, d]` in plan order: the rows that continue gathered from `previous` in one
   * call (none when they are all of its rows, in order), and loop-0 rows embedded (every new token in one
   * call) and written into their places.
   */
  private stepInput(plan: StepPlan, previous: KeptRows | undefined): Tensor {
    const { backend } = this.model;
    const fresh: number[] = [];
    // Input row i continues kept row source[i], or (at freshAt) takes a new token's embedding.
    const source: number[] = [];
    const freshAt: number[] = [];
    for (const row of plan.rows) {
      if (row.loop === 0) {
        for (const token of row.tokens) {
          freshAt.push(source.length);
          source.push(0); // overwritten below
          fresh.push(token);
        }
        continue;
      }
      const at = previous?.rows.get(rowKey(row));
      if (!at || at.length !== row.tokens.length) {
        throw new Error(`request ${row.id}: no hidden rows kept for its chunk at ${row.offset}`);
      }
      for (let r = 0; r < at.length; r++) source.push(at.start + r);
    }
    const embedded =
      fresh.length > 0
        ? this.model.embed(backend.fromArray(Int32Array.from(fresh), [fresh.length], 'int32'))
        : undefined;
    if (fresh.length === source.length) return embedded!;
    const kept = previous!.hidden;
    if (!embedded && source.length === kept.shape[0] && source.every((row, index) => row === index)) {
      return kept;
    }
    // A gather makes a new tensor, so the write changes no kept row (a join would copy every row again).
    const hidden = backend.gather(kept, backend.fromArray(Int32Array.from(source), [source.length], 'int32'));
    if (embedded) backend.writeRows(hidden, freshAt, embedded);
    return hidden;
  }

  /** Frees every kept hidden state. */
  clear(): void {
    if (this.kept) this.model.backend.dispose(this.kept.hidden);
    this.kept = undefined;
  }

  /**
   * Fills each exited token's skipped depths from its exit hidden state: one call per stored layer, over
   * every (token, skipped depth) pair that layer serves (rows grouped by depth, so each loop's LoRA is one
   * segment). A `cycle` model's depths `k, K + k, 2K + k, …` all run stored layer `k`.
   */
  private propagate(plan: StepPlan, previous: KeptRows | undefined): void {
    if (!this.propagates || plan.propagations.length === 0) return;
    const { model, blockSize } = this;
    const { backend } = model;
    const depths = model.schedule.length;
    // Each exited token's exit hidden state: the last kept row of the chunk it exited with.
    const exitRow = (p: Propagation) => {
      const at = previous?.rows.get(rowKey({ id: p.id, offset: p.position }));
      if (!at) throw new Error(`request ${p.id}: no hidden row kept for its exit at ${p.position}`);
      return at.start + at.length - 1;
    };
    for (let layer = 0; layer < blockSize; layer++) {
      const pairs: { propagation: Propagation; depth: number }[] = [];
      for (let depth = layer; depth < depths; depth += blockSize) {
        for (const propagation of plan.propagations) {
          if (propagation.fromLoop * blockSize <= depth) pairs.push({ propagation, depth });
        }
      }
      if (pairs.length === 0) continue;
      backend.tidy(() => {
        const rows = model.rows(
          pairs.map(({ propagation }) => ({ batch: 1, length: 1, offset: propagation.position })),
        );
        const index = Int32Array.from(pairs, ({ propagation }) => exitRow(propagation));
        const hidden = backend.gather(previous!.hidden, backend.fromArray(index, [index.length], 'int32'));
        model.appendKV(
          hidden,
          rows,
          pairs.map(({ propagation: p, depth }) => {
            const sequence = this.sequenceOf(p.id);
            if (sequence.length(depth) !== p.position) {
              throw new Error(
                `request ${p.id}: depth ${depth} holds ${sequence.length(depth)} positions, propagation writes ${p.position}`,
              );
            }
            return { depth, cache: sequence.layer(depth) };
          }),
        );
      });
    }
  }

  private async readBack(
    logits: readonly Tensor[],
    wanted: readonly { id: number; loop: number; keepsLogits: boolean }[],
  ): Promise<Map<number, LoopReadout[]>> {
    const { backend } = this.model;
    const readouts = new Map<number, LoopReadout[]>();
    let next = 0;
    for (const [index, tensor] of logits.entries()) {
      try {
        const { logits: values, argmax, maxProbability } = await rowConfidences(backend, tensor);
        const vocab = values.length / argmax.length;
        for (let row = 0; row < argmax.length; row++) {
          const { id, loop, keepsLogits } = wanted[next++]!;
          const list = readouts.get(id) ?? [];
          const readout: LoopReadout = { loop, argmax: argmax[row]!, maxProbability: maxProbability[row]! };
          if (keepsLogits) readout.logits = values.slice(row * vocab, (row + 1) * vocab);
          list.push(readout);
          readouts.set(id, list);
        }
      } catch (error) {
        backend.dispose(logits.slice(index + 1));
        throw error;
      } finally {
        backend.dispose(tensor);
      }
    }
    return readouts;
  }
}
