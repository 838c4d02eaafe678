/**
 * Decoding through `@rrt/kv-cache`'s paged cache with the step API, on a relaxed recursive model (K = 2,
 * L = 3, a LoRA per loop): every loop's readout of every position equals `Decoder.forward`'s full
 * recompute of that loop, bit for bit, while two sequences interleave their pages, through either attention
 * path (`Backend.pagedAttention` on the pool, or the gathered copy). A cache keyed by block
 * layer instead of effective depth (each loop overwriting the previous loop's entries, the axolotl port's
 * bug) is run through the same steps and must not match.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache, createPagedKVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Decoder, exitDepths, type LayerKV, loadModel } from '../src/index.js';
import { idsTensor, maxAbsDifference, randomTokens, readAndDispose } from './logits.js';
import { writeRelaxedModel } from './relaxed-model.js';

/** Each step: [sequence, chunk length] spans; both sequences end fully fed (10 and 7 tokens). */
const steps: [number, number][][] = [
  [
    [0, 4],
    [1, 2],
  ],
  [
    [1, 3],
    [0, 1],
  ],
  [
    [0, 2],
    [1, 1],
  ],
  [[0, 1]],
  [
    [1, 1],
    [0, 2],
  ],
];
const lengths = [10, 7];

describe('paged per-loop decoding (wasm)', () => {
  let backend: Backend;
  let workDir: string;
  beforeAll(async () => {
    backend = (await createBackend('wasm')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-paged-'));
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  /**
   * Runs `steps` with the step API, reading each (sequence, depth)'s KV from `kv`; returns per sequence
   * and per exit loop the logits of every position, `[T, vocab]` flat.
   */
  async function decode(
    model: Decoder,
    tokens: readonly (readonly number[])[],
    kv: (sequence: number, depth: number) => LayerKV,
  ): Promise<Float32Array[][]> {
    const vocab = model.config.vocabSize;
    const exits = exitDepths(model.config.recursion, model.schedule.length);
    const got = tokens.map((t) => exits.map(() => new Float32Array(t.length * vocab)));
    const fed = tokens.map(() => 0);
    for (const step of steps) {
      const spans = step.map(([s, length]) => ({ batch: 1, length, offset: fed[s]! }));
      const ids = step.flatMap(([s, length]) => tokens[s]!.slice(fed[s]!, fed[s]! + length));
      const readouts = backend.tidy(() => {
        const rows = model.rows(spans);
        let hidden = model.embed(backend.fromArray(Int32Array.from(ids), [ids.length], 'int32'));
        const out = [];
        for (const { depth } of model.schedule) {
          hidden = model.layer(
            hidden,
            rows,
            step.map(([s]) => ({ depth, cache: kv(s, depth) })),
          );
          if (exits.includes(depth)) out.push(model.readout(hidden));
        }
        return out;
      });
      for (const [loop, logits] of readouts.entries()) {
        const values = await readAndDispose(backend, logits);
        let row = 0;
        for (const [s, length] of step) {
          got[s]![loop]!.set(values.subarray(row * vocab, (row + length) * vocab), fed[s]! * vocab);
          row += length;
        }
      }
      for (const [s, length] of step) fed[s]! += length;
    }
    return got;
  }

  /** Worst difference of each sequence's each loop against the full recompute of that loop. */
  async function worstPerLoop(model: Decoder, tokens: readonly (readonly number[])[], got: Float32Array[][]) {
    const worst: number[] = [];
    for (const [s, sequence] of tokens.entries()) {
      const ids = idsTensor(backend, [sequence]);
      const { loops } = model.forward(ids, { loopOutputs: true });
      backend.dispose(ids);
      for (const [loop, output] of loops.entries()) {
        const expected = await readAndDispose(backend, output.logits);
        backend.dispose(output.hidden);
        worst[loop] = Math.max(worst[loop] ?? 0, maxAbsDifference(got[s]![loop]!, expected));
      }
    }
    return worst;
  }

  it('every loop of two interleaved sequences in 3-position pages equals its full recompute bit for bit; a cache keyed by block layer does not', async () => {
    const seed = 1000 + Math.floor(Math.random() * 1e6);
    const dir = join(workDir, `relaxed-${seed}`);
    const { reference, blockSize } = await writeRelaxedModel(dir, seed);
    const baseline = backend.numTensors();
    const model = await loadModel(dir, backend);
    const tokens = lengths.map((count, s) => randomTokens(seed + s, count, reference.vocabSize));
    const { numKeyValueHeads: kvHeads, headDim } = model.config;
    const depths = model.schedule.length;

    // Both attention paths: the paged kernel reading the pool by block table, and the gathered copy.
    for (const attention of ['paged', 'gather'] as const) {
      const paged = createPagedKVCache(backend, {
        depths,
        blockSize,
        kvHeads,
        headDim,
        pageSize: 3,
        bytes: 8 * 2 * 4 * depths * 3 * kvHeads * headDim, // 8 pages: the 4 + 3 needed and room to spare
        attention,
      });
      const sequences = tokens.map(() => paged.open());
      expect(sequences[0]!.layer(0).appendSlots === undefined, attention).toBe(attention === 'gather');
      const exact = await decode(model, tokens, (s, depth) => sequences[s]!.layer(depth));
      expect(sequences.map((sequence) => sequence.blockTable.length)).toEqual([4, 3]);
      expect(paged.usedBytes()).toBe(7 * paged.pageBytes);
      expect(await worstPerLoop(model, tokens, exact), `${attention}, seed ${seed}`).toEqual([0, 0, 0]);
      for (const sequence of sequences) sequence.free();
      expect(paged.usedBytes()).toBe(0);
      paged.dispose();
    }

    // Keyed by block layer: loop ℓ > 0 rewrites the positions loop 0 just wrote.
    const byBlock = tokens.map(() => createKVCache(backend, { depths: blockSize, capacity: 16 }));
    const overwritten = await decode(model, tokens, (s, depth) => {
      const layer = byBlock[s]!.layers[depth % blockSize]!;
      return {
        updateAndFetch: (keys, values) => {
          if (depth >= blockSize) layer.trim(keys.shape[1]!);
          return layer.updateAndFetch(keys, values);
        },
      };
    });
    const wrong = await worstPerLoop(model, tokens, overwritten);
    expect(Math.max(...wrong), `seed ${seed}`).toBeGreaterThan(1e-3);
    for (const cache of byBlock) cache.dispose();

    model.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });
});
