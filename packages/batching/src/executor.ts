import { argmax, type Decoder } from '@rrt/core';
import type { PagedSequence } from '@rrt/kv-cache';
import type { Tensor } from '@rrt/tensor';
import type { LoopReadout } from './exit.js';
import type { Propagation, StepOutput, StepPlan } from './plan.js';

/**
 * Where a row's hidden state is kept between steps: a request may have several rows in flight (a decode
 * token and, under FREE-style completion, earlier tokens still running their deeper loops), each at its own
 * first position.
 */
const rowKey = (row: { id: number; offset: number }) => `${row.id}@${row.offset}`;

/**
 * Runs a {@link StepPlan} on the model: one ragged batch of every row, `plan.loops` passes over the
 * block, each row at its own loop (its LoRA and its KV at that depth). Hidden rows that continue in the
 * next step (or propagate an exit) are kept until that step consumes them.
 */
export class Executor {
  /** Hidden rows kept for the next step, by row key: a row continues where (id, offset) left off. */
  private hidden = new Map<string, Tensor>();

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
    const previous = this.hidden;
    this.hidden = new Map();
    try {
      this.propagate(plan, previous);
      if (plan.rows.length === 0) return { readouts: new Map() };
      const spans = plan.rows.map((row) => ({ batch: 1, length: row.tokens.length, offset: row.offset }));
      const wanted: { id: number; loop: number }[] = [];
      const flat = backend.tidy(() => {
        const rows = model.rows(spans);
        let hidden = backend.concat(
          plan.rows.map((row) =>
            row.loop === 0
              ? model.embed(backend.fromArray(Int32Array.from(row.tokens), [row.tokens.length], 'int32'))
              : previous.get(rowKey(row))!,
          ),
          0,
        );
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
          const reading = plan.rows.flatMap((row, index) => (row.readouts[pass] ? [index] : []));
          if (reading.length === 0) continue;
          const index = backend.fromArray(
            Int32Array.from(reading.map((r) => lastRows[r]!)),
            [reading.length],
            'int32',
          );
          outputs.push(model.readout(backend.gather(hidden, index)));
          for (const r of reading) wanted.push({ id: plan.rows[r]!.id, loop: plan.rows[r]!.loop + pass });
        }
        rows.dispose();
        let start = 0;
        const kept: Tensor[] = plan.rows.map((row) => {
          const part = backend.slice(hidden, [start, 0], [row.tokens.length, -1]);
          start += row.tokens.length;
          return part;
        });
        return [...outputs, ...kept]; // tidy returns a flat list; split below
      });
      const logits = flat.slice(0, flat.length - plan.rows.length);
      const kept = flat.slice(flat.length - plan.rows.length);
      plan.rows.forEach((row, index) => {
        this.hidden.set(rowKey(row), kept[index]!);
      });
      return { readouts: await this.readBack(logits, wanted) };
    } finally {
      for (const tensor of previous.values()) backend.dispose(tensor);
    }
  }

  /** Frees every kept hidden state. */
  clear(): void {
    for (const tensor of this.hidden.values()) this.model.backend.dispose(tensor);
    this.hidden.clear();
  }

  /**
   * Fills each exited token's skipped depths from its exit hidden state: one call per stored layer, over
   * every (token, skipped depth) pair that layer serves (rows grouped by depth, so each loop's LoRA is one
   * segment). A `cycle` model's depths `k, K + k, 2K + k, …` all run stored layer `k`.
   */
  private propagate(plan: StepPlan, previous: ReadonlyMap<string, Tensor>): void {
    if (!this.propagates || plan.propagations.length === 0) return;
    const { model, blockSize } = this;
    const { backend } = model;
    const depths = model.schedule.length;
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
        const exitStates = new Map<number, Tensor>();
        const hidden = backend.concat(
          pairs.map(({ propagation: p }) => {
            let state = exitStates.get(p.id);
            if (!state) {
              const h = previous.get(rowKey({ id: p.id, offset: p.position }))!;
              state = backend.slice(h, [h.shape[0]! - 1, 0], [1, -1]);
              exitStates.set(p.id, state);
            }
            return state;
          }),
          0,
        );
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
    wanted: readonly { id: number; loop: number }[],
  ): Promise<Map<number, LoopReadout[]>> {
    const { backend, config } = this.model;
    const vocab = config.vocabSize;
    const readouts = new Map<number, LoopReadout[]>();
    let next = 0;
    for (const tensor of logits) {
      const values = (await backend.read(tensor)) as Float32Array;
      backend.dispose(tensor);
      for (let row = 0; row < values.length / vocab; row++) {
        const { id, loop } = wanted[next++]!;
        const rowLogits = values.subarray(row * vocab, (row + 1) * vocab);
        const best = argmax(rowLogits);
        let total = 0;
        for (const value of rowLogits) total += Math.exp(value - rowLogits[best]!);
        const list = readouts.get(id) ?? [];
        list.push({ loop, argmax: best, maxProbability: 1 / total });
        readouts.set(id, list);
      }
    }
    return readouts;
  }
}
