import { createBackend } from '@rrt/backend-tfjs';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import { addLowRank, foldedResidual, lowRankErrorSquared, normFoldFactors, storeAs } from './numeric.js';

/** A seeded uniform stream in [−1, 1). */
function uniformStream(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2147483648 - 1;
  };
}

function randomArray(length: number, next: () => number): Float32Array {
  return Float32Array.from({ length }, next);
}

describe('norm folding', () => {
  for (const addOne of [false, true]) {
    // A fresh seed per run, in the title so that every failure names it.
    const seed = 1 + Math.floor(Math.random() * 1e6);
    it(`target·diag(g_shared) reproduces W·diag(g_original) (${addOne ? 'Gemma 1 + w' : 'Llama w'}, seed ${seed})`, () => {
      const next = uniformStream(seed);
      const [rows, cols] = [7, 5];
      const w = randomArray(rows * cols, next);
      const shared = randomArray(rows * cols, next);
      const gOriginal = randomArray(cols, () => (addOne ? 0 : 1) + 0.3 * next());
      const gShared = randomArray(cols, () => (addOne ? 0 : 1) + 0.3 * next());
      const { factors, unrepresentable } = normFoldFactors(gOriginal, gShared, addOne);
      expect(unrepresentable).toEqual([]);
      const { values, targetSquared } = foldedResidual(w, shared, cols, factors);
      let squared = 0;
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const gain = (g: Float32Array) => g[j]! + (addOne ? 1 : 0);
          const target = values[i * cols + j]! + shared[i * cols + j]!;
          // The loop's original map, independent of how the factors were computed.
          expect(target * gain(gShared), `seed ${seed}`).toBeCloseTo(w[i * cols + j]! * gain(gOriginal), 12);
          squared += target * target;
        }
      }
      expect(targetSquared).toBeCloseTo(squared, 12);
    });
  }

  it('a zero shared gain gives a zero residual column and is reported where the original is not 0', () => {
    const w = new Float32Array([1, 2, 3, 4]);
    const shared = new Float32Array([0.5, 0.5, 0.5, 0.5]);
    const { factors, unrepresentable, identity } = normFoldFactors(
      new Float32Array([1, 2]),
      new Float32Array([1, 0]),
      false,
    );
    expect(identity).toBe(false);
    expect(unrepresentable).toEqual([1]);
    expect(Array.from(foldedResidual(w, shared, 2, factors).values)).toEqual([0.5, 0, 2.5, 0]);
    expect(normFoldFactors(new Float32Array([0.25, 3]), new Float32Array([0.25, 3]), true).identity).toBe(
      true,
    );
  });
});

const lowRankSeed = 1 + Math.floor(Math.random() * 1e6);
describe(`low-rank products (seed ${lowRankSeed})`, () => {
  const [rows, cols, rank] = [300, 200, 80]; // 4.8M multiply-adds: large enough for the backend path
  const seed = lowRankSeed;
  const next = uniformStream(seed);
  const base = randomArray(rows * cols, next);
  const b = randomArray(rows * rank, next);
  const a = randomArray(rank * cols, next);
  const scale = 0.37;
  // Independent float64 reference.
  const reference = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let product = 0;
      for (let k = 0; k < rank; k++) product += b[i * rank + k]! * a[k * cols + j]!;
      reference[i * cols + j] = base[i * cols + j]! + scale * product;
    }
  }

  it('addLowRank and lowRankErrorSquared agree with float64 loops, on the host and on a backend', async () => {
    const { backend } = await createBackend('cpu');
    const baseline = backend.numTensors();
    for (const onBackend of [undefined, backend]) {
      const merged = await addLowRank(base, b, a, rows, cols, rank, scale, onBackend);
      let worst = 0;
      for (let i = 0; i < merged.length; i++) worst = Math.max(worst, Math.abs(merged[i]! - reference[i]!));
      // Products are O(√rank) ≈ 5: float32 accumulation on the backend stays below 1e-4 of that.
      expect(worst, `seed ${seed}`).toBeLessThan(onBackend ? 5e-5 : 1e-12);
      // ‖R − s·B·A‖² with R = the merged reference: the base back, ‖base‖².
      const r = Float64Array.from(reference);
      const error = await lowRankErrorSquared(r, b, a, rows, cols, rank, scale, onBackend);
      let expected = 0;
      for (const value of base) expected += value * value;
      expect(Math.abs(error - expected) / expected, `seed ${seed}`).toBeLessThan(onBackend ? 1e-5 : 1e-12);
    }
    expect(backend.numTensors()).toBe(baseline);
  });

  it('disposes every tensor it made when the matmul or the read fails', async () => {
    const { backend } = await createBackend('cpu');
    /** The backend with `method` replaced by one that throws. */
    const failing = (method: 'matmul' | 'read'): Backend =>
      new Proxy(backend, {
        get(target, property, receiver) {
          if (property === method) {
            return () => {
              throw new Error(`injected ${method} failure`);
            };
          }
          const value = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    const baseline = backend.numTensors();
    const r = Float64Array.from(reference);
    for (const method of ['matmul', 'read'] as const) {
      await expect(addLowRank(base, b, a, rows, cols, rank, scale, failing(method))).rejects.toThrow(
        `injected ${method}`,
      );
      expect(backend.numTensors(), `addLowRank, failing ${method}`).toBe(baseline);
      await expect(lowRankErrorSquared(r, b, a, rows, cols, rank, scale, failing(method))).rejects.toThrow(
        `injected ${method}`,
      );
      expect(backend.numTensors(), `lowRankErrorSquared, failing ${method}`).toBe(baseline);
    }
  });
});

describe('storeAs', () => {
  it('rounds float64 values once to bfloat16, not through float32', () => {
    // 1 + 2^-8 + 2^-30: rounding to float32 first lands on the tie 1 + 2^-8, which then goes to even (1).
    const value = 1 + 2 ** -8 + 2 ** -30;
    expect(storeAs(new Float64Array([value]), 'BF16').stored[0]).toBe(1 + 2 ** -7);
    expect(storeAs(new Float32Array([value]), 'BF16').stored[0]).toBe(1);
    const f32 = storeAs(new Float64Array([0.1]), 'F32');
    expect(f32.stored[0]).toBe(Math.fround(0.1));
    expect(f32.bytes.byteLength).toBe(4);
    expect(storeAs(new Float32Array([65520]), 'F16').stored[0]).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('encodeBfloat16Fast', () => {
  it('matches the exact encoder of @rrt/tensor on random, tie-adjacent and special values', async () => {
    const { encodeBfloat16 } = await import('@rrt/tensor');
    const { encodeBfloat16Fast } = await import('./numeric.js');
    const seed = 1 + Math.floor(Math.random() * 1e6);
    const next = uniformStream(seed);
    const values: number[] = [
      0,
      -0,
      1,
      -1,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      -Number.POSITIVE_INFINITY,
      3.4e38,
      3.5e38,
      1e-40,
      -1e-42,
      2 ** -134,
      3 * 2 ** -134,
    ];
    for (let i = 0; i < 20_000; i++) {
      const magnitude = 2 ** Math.round(40 * next());
      values.push(next() * magnitude);
      // Near a bfloat16 midpoint: exactly on it, and a hair (below float32 resolution) to either side.
      const midpoint = (Math.round(next() * 2 ** 10) + 0.5) * 2 ** -7 * magnitude;
      values.push(midpoint, midpoint * (1 + 2 ** -40), midpoint * (1 - 2 ** -40), -midpoint * (1 + 2 ** -40));
    }
    const f64 = Float64Array.from(values);
    expect(Array.from(encodeBfloat16Fast(f64)), `seed ${seed}`).toEqual(Array.from(encodeBfloat16(f64)));
    const f32 = Float32Array.from(values);
    expect(Array.from(encodeBfloat16Fast(f32)), `seed ${seed}`).toEqual(Array.from(encodeBfloat16(f32)));
  });
});
