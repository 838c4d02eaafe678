import { describe, expect, it } from 'vitest';
import { InvalidSvdOptionError } from './errors.js';
import { loraFactors } from './lora.js';
import {
  frobenius,
  gaussianMatrix,
  matrixWithSpectrum,
  singularValuesByGram,
  tailNorm,
  TestRandom,
} from './test-support/reference.js';

const FLOAT32_EPSILON = 2 ** -23;

/** `W_shared + scale·B·A` in float64 from the float32 factors. */
function applyAdapter(
  shared: Float32Array,
  factors: { B: Float32Array; A: Float32Array; rank: number; scale: number },
  out: number,
  inF: number,
): Float64Array {
  const { B, A, rank: r, scale } = factors;
  const w = Float64Array.from(shared);
  for (let i = 0; i < out; i++) {
    for (let k = 0; k < r; k++) {
      const b = scale * B[i * r + k]!;
      for (let j = 0; j < inF; j++) w[i * inF + j]! += b * A[k * inF + j]!;
    }
  }
  return w;
}

describe('loraFactors', () => {
  it('reconstructs W_orig = W_shared + (α/r)·B·A at full rank, to float32 precision, for every α', async () => {
    const rng = new TestRandom(41);
    for (const [out, inF] of [
      [40, 70],
      [70, 40],
    ] as const) {
      const original = Float32Array.from(rng.gaussianArray(out * inF));
      const shared = Float32Array.from(rng.gaussianArray(out * inF));
      const residual = original.map((x, i) => x - shared[i]!);
      const r = Math.min(out, inF);
      let maxOriginal = 0;
      for (const x of original) maxOriginal = Math.max(maxOriginal, Math.abs(x));
      for (const alpha of [1, r, 2 * r, 16]) {
        const factors = await loraFactors({ rows: out, cols: inF, data: residual }, { rank: r, alpha });
        expect(factors.rank).toBe(r);
        expect(factors.alpha).toBe(alpha);
        expect(factors.scale).toBe(alpha / r);
        expect(factors.B.length).toBe(out * r);
        expect(factors.A.length).toBe(r * inF);
        const merged = applyAdapter(shared, factors, out, inF);
        let worst = 0;
        for (let i = 0; i < merged.length; i++) worst = Math.max(worst, Math.abs(merged[i]! - original[i]!));
        // Float32 factors: each of the r terms carries a relative rounding of ε₃₂.
        expect(worst).toBeLessThan(4 * FLOAT32_EPSILON * maxOriginal);
      }
    }
  });

  it('the default α is the rank (scale 1, B = U_r·Σ_r) and A = V_rᵀ has orthonormal rows', async () => {
    const rng = new TestRandom(42);
    const residual = Float32Array.from(rng.gaussianArray(30 * 50));
    const factors = await loraFactors({ rows: 30, cols: 50, data: residual }, { rank: 6 });
    expect(factors.alpha).toBe(6);
    expect(factors.scale).toBe(1);
    const { A, B } = factors;
    for (let p = 0; p < 6; p++) {
      for (let q = 0; q < 6; q++) {
        let dot = 0;
        for (let j = 0; j < 50; j++) dot += A[p * 50 + j]! * A[q * 50 + j]!;
        expect(Math.abs(dot - (p === q ? 1 : 0))).toBeLessThan(1e-6);
      }
    }
    // Column norms of B are the singular values.
    const sigma = singularValuesByGram({ rows: 30, cols: 50, data: Float64Array.from(residual) });
    for (let k = 0; k < 6; k++) {
      let norm = 0;
      for (let i = 0; i < 30; i++) norm += B[i * 6 + k]! ** 2;
      expect(Math.sqrt(norm)).toBeCloseTo(sigma[k]!, 5);
      expect(factors.singularValues[k]!).toBeCloseTo(sigma[k]!, 10);
    }
  });

  it('a truncated adapter is the best rank-r correction (Eckart–Young)', async () => {
    const rng = new TestRandom(43);
    const sigma = Array.from({ length: 60 }, (_, i) => 2 * 0.85 ** i);
    const residual = matrixWithSpectrum(60, 90, sigma, rng);
    const r = 12;
    const factors = await loraFactors(residual, { rank: r, alpha: 32 });
    const correction = applyAdapter(new Float32Array(60 * 90), factors, 60, 90);
    let error = 0;
    for (let i = 0; i < correction.length; i++) error += (correction[i]! - residual.data[i]!) ** 2;
    const optimum = tailNorm(sigma, r);
    expect(Math.abs(Math.sqrt(error) - optimum) / optimum).toBeLessThan(1e-3);
    expect(Math.abs(Math.sqrt(factors.discardedEnergy) - optimum) / optimum).toBeLessThan(1e-3);
  });

  it('a zero residual gets B = 0 and a seeded Kaiming-uniform A', async () => {
    const zero = { rows: 24, cols: 64, data: new Float32Array(24 * 64) };
    const factors = await loraFactors(zero, { rank: 8, alpha: 16, seed: 7 });
    expect(factors.zeroResidual).toBe(true);
    expect(factors.rank).toBe(8);
    expect(factors.scale).toBe(2);
    expect(factors.B.every((x) => x === 0)).toBe(true);
    const bound = 1 / Math.sqrt(64);
    expect(factors.A.every((x) => Math.abs(x) <= bound)).toBe(true);
    // Spread over the interval, not degenerate: mean ≈ 0, variance ≈ bound²/3.
    const mean = factors.A.reduce((s, x) => s + x, 0) / factors.A.length;
    const variance = factors.A.reduce((s, x) => s + (x - mean) ** 2, 0) / factors.A.length;
    expect(Math.abs(mean)).toBeLessThan(0.1 * bound);
    expect(variance).toBeGreaterThan((0.8 * (bound * bound)) / 3);
    expect(variance).toBeLessThan((1.2 * (bound * bound)) / 3);
    const again = await loraFactors(zero, { rank: 8, alpha: 16, seed: 7 });
    expect(again.A).toEqual(factors.A);
    const other = await loraFactors(zero, { rank: 8, alpha: 16, seed: 8 });
    expect(other.A).not.toEqual(factors.A);
    // With only an energy target there is nothing to keep.
    expect((await loraFactors(zero, { energy: 0.9 })).rank).toBe(0);
  });

  it('rank 0 gives empty factors; clamping and energy selection are reported', async () => {
    const rng = new TestRandom(44);
    const residual = gaussianMatrix(10, 16, rng);
    const empty = await loraFactors(residual, { rank: 0 });
    expect(empty.B.length).toBe(0);
    expect(empty.A.length).toBe(0);
    expect(empty.scale).toBe(0);
    expect(empty.discardedEnergy).toBeCloseTo(frobenius(residual) ** 2, 8);
    const clamped = await loraFactors(residual, { rank: 99, alpha: 4 });
    expect(clamped.rank).toBe(10);
    expect(clamped.rankClamped).toBe(true);
    expect(clamped.requestedRank).toBe(99);
    const byEnergy = await loraFactors(residual, { energy: 0.5 });
    expect(byEnergy.rank).toBeGreaterThan(0);
    expect(byEnergy.rank).toBeLessThan(10);
    expect(byEnergy.discardedEnergy / byEnergy.totalEnergy).toBeLessThanOrEqual(0.5);
  });

  it('rejects a non-positive α', async () => {
    const a = { rows: 2, cols: 2, data: new Float32Array([1, 0, 0, 1]) };
    await expect(loraFactors(a, { rank: 1, alpha: 0 })).rejects.toThrow(InvalidSvdOptionError);
    await expect(loraFactors(a, { rank: 1, alpha: Number.NaN })).rejects.toThrow(/alpha/);
    await expect(loraFactors({ ...a, data: new Float32Array(4) }, { rank: -1 })).rejects.toThrow(/rank/);
  });

  it('rejects out-of-range SVD options for a zero residual too, before its shortcut', async () => {
    const zero = { rows: 3, cols: 4, data: new Float32Array(12) };
    for (const [options, pattern] of [
      [{ energy: 2 }, /loraFactors: energy must be in \(0, 1\]/],
      [{ rank: 1.5 }, /loraFactors: rank must be an integer/],
      [{ method: 'fast' as never }, /loraFactors: method/],
      [{ oversampling: -1 }, /loraFactors: oversampling/],
      [{ powerIterations: 0.5 }, /loraFactors: powerIterations/],
      [{ seed: Number.NaN }, /loraFactors: seed/],
    ] as const) {
      await expect(loraFactors(zero, options), JSON.stringify(options)).rejects.toThrow(pattern);
      await expect(loraFactors(zero, options)).rejects.toBeInstanceOf(InvalidSvdOptionError);
    }
    // Valid options still take the shortcut.
    expect((await loraFactors(zero, { rank: 2, method: 'randomized', seed: 5 })).zeroResidual).toBe(true);
  });
});
