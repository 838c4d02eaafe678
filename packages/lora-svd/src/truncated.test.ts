import { describe, expect, it } from 'vitest';
import { InvalidMatrixError, InvalidSvdOptionError } from './errors.js';
import { rankForEnergy, truncatedSvd } from './truncated.js';
import {
  frobenius,
  frobeniusDistance,
  gaussianMatrix,
  matmul,
  matrixWithSpectrum,
  orthonormalityError,
  reconstruct,
  singularValuesByGram,
  tailNorm,
  TestRandom,
} from './test-support/reference.js';

/** The smallest r with Σ_{i<r} σᵢ² ≥ fraction · Σ σᵢ², by a direct scan. */
function referenceEnergyRank(sigma: readonly number[], fraction: number): number {
  const total = sigma.reduce((s, x) => s + x * x, 0);
  let kept = 0;
  for (let r = 0; r < sigma.length; r++) {
    if (kept >= fraction * total) return r;
    kept += sigma[r]! ** 2;
  }
  return sigma.length;
}

describe('truncatedSvd', () => {
  it('exact path: the truncation error is the Eckart–Young optimum √(Σ dropped σᵢ²)', async () => {
    const rng = new TestRandom(31);
    // σ from an independent computation (Jacobi eigenvalues of AᵀA) on a Gaussian matrix, and a constructed
    // matrix with a known, steeply decaying spectrum.
    const gaussian = gaussianMatrix(60, 45, rng);
    const gaussianSigma = Array.from(singularValuesByGram(gaussian));
    const knownSigma = Array.from({ length: 100 }, (_, i) => Math.exp(-i / 8));
    const known = matrixWithSpectrum(100, 160, knownSigma, rng);
    for (const [a, sigma] of [
      [gaussian, gaussianSigma],
      [known, knownSigma],
    ] as const) {
      for (const r of [1, 5, 20, 40]) {
        const svd = await truncatedSvd(a, { rank: r });
        expect(svd.method).toBe('exact');
        expect(svd.rank).toBe(r);
        expect(svd.rankClamped).toBe(false);
        const error = frobeniusDistance(reconstruct(svd.U, svd.S, svd.V), a);
        const optimum = tailNorm(sigma, r);
        expect(Math.abs(error - optimum) / optimum).toBeLessThan(1e-3);
        expect(Math.abs(Math.sqrt(svd.discardedEnergy) - optimum) / optimum).toBeLessThan(1e-3);
        expect(orthonormalityError(svd.U)).toBeLessThan(1e-6);
        expect(orthonormalityError(svd.V)).toBeLessThan(1e-6);
      }
    }
  });

  it("'auto' picks exact for small or nearly full-rank problems and randomized otherwise", async () => {
    const rng = new TestRandom(32);
    const sigma = Array.from({ length: 260 }, (_, i) => 1 / (1 + i));
    const a = matrixWithSpectrum(260, 300, sigma, rng);
    const small = await truncatedSvd(gaussianMatrix(40, 256, rng), { rank: 3 });
    expect(small.method).toBe('exact');
    const randomized = await truncatedSvd(a, { rank: 20, seed: 4 });
    expect(randomized.method).toBe('randomized');
    expect(randomized.spectrum).toBeUndefined();
    const error = frobeniusDistance(reconstruct(randomized.U, randomized.S, randomized.V), a);
    expect(error).toBeLessThan(1.01 * tailNorm(sigma, 20));
    // 2·(rank + oversampling) > min(rows, cols): exact.
    const nearFull = await truncatedSvd(a, { rank: 121 });
    expect(nearFull.method).toBe('exact');
    const forced = await truncatedSvd(gaussianMatrix(30, 30, rng), { rank: 3, method: 'randomized' });
    expect(forced.method).toBe('randomized');
  });

  it('clamps the rank to min(rows, cols) and says so', async () => {
    const rng = new TestRandom(33);
    const a = gaussianMatrix(12, 30, rng);
    const svd = await truncatedSvd(a, { rank: 50 });
    expect(svd.rank).toBe(12);
    expect(svd.rankClamped).toBe(true);
    expect(svd.requestedRank).toBe(50);
    expect(frobeniusDistance(reconstruct(svd.U, svd.S, svd.V), a)).toBeLessThan(1e-12 * frobenius(a));
    const unclamped = await truncatedSvd(a, { rank: 12 });
    expect(unclamped.rankClamped).toBe(false);
    const everything = await truncatedSvd(a);
    expect(everything.rank).toBe(12);
    expect(everything.requestedRank).toBeUndefined();
  });

  it('rank by energy picks the smallest rank that reaches the fraction (exact path)', async () => {
    const rng = new TestRandom(34);
    const sigma = Array.from({ length: 80 }, (_, i) => 0.9 ** i);
    const a = matrixWithSpectrum(80, 120, sigma, rng);
    for (const energy of [0.3, 0.5, 0.9, 0.99, 0.999999]) {
      const svd = await truncatedSvd(a, { energy });
      expect(svd.rank).toBe(referenceEnergyRank(sigma, energy));
      const kept = 1 - svd.discardedEnergy / svd.totalEnergy;
      expect(kept).toBeGreaterThanOrEqual(energy * (1 - 1e-12));
    }
    // With a cap, the cap wins.
    expect((await truncatedSvd(a, { energy: 0.99, rank: 10 })).rank).toBe(10);
  });

  it('energy 1 keeps exactly the numerical rank; a zero matrix has rank 0', async () => {
    const rng = new TestRandom(35);
    const lowRank = matmul(gaussianMatrix(40, 7, rng), gaussianMatrix(7, 50, rng));
    const svd = await truncatedSvd(lowRank, { energy: 1 });
    expect(svd.rank).toBe(7);
    expect(frobeniusDistance(reconstruct(svd.U, svd.S, svd.V), lowRank)).toBeLessThan(
      1e-12 * frobenius(lowRank),
    );
    const zero = await truncatedSvd({ rows: 5, cols: 9, data: new Float32Array(45) }, { energy: 0.5 });
    expect(zero.rank).toBe(0);
    expect(zero.U.cols).toBe(0);
    expect(zero.V.rows).toBe(9);
  });

  it('rank by energy on the randomized path reaches the fraction with a rank close to the optimal one', async () => {
    const rng = new TestRandom(36);
    const sigma = Array.from({ length: 280 }, (_, i) => 0.97 ** i);
    const a = matrixWithSpectrum(280, 320, sigma, rng);
    for (const energy of [0.5, 0.9, 0.99]) {
      const svd = await truncatedSvd(a, { energy, method: 'randomized', seed: 5 });
      expect(svd.method).toBe('randomized');
      const best = referenceEnergyRank(sigma, energy);
      expect(svd.rank).toBeGreaterThanOrEqual(best);
      expect(svd.rank).toBeLessThanOrEqual(best + 1);
      // What the factors actually retain, measured independently.
      const residual = frobeniusDistance(reconstruct(svd.U, svd.S, svd.V), a) ** 2;
      expect(1 - residual / frobenius(a) ** 2).toBeGreaterThanOrEqual(energy * (1 - 1e-9));
      expect(Math.abs(svd.discardedEnergy - residual)).toBeLessThan(1e-9 * svd.totalEnergy);
    }
  });

  it('rank 0 gives empty factors with all the energy discarded', async () => {
    const rng = new TestRandom(37);
    const a = gaussianMatrix(8, 6, rng);
    const svd = await truncatedSvd(a, { rank: 0 });
    expect(svd.rank).toBe(0);
    expect(svd.U).toMatchObject({ rows: 8, cols: 0 });
    expect(svd.V).toMatchObject({ rows: 6, cols: 0 });
    expect(svd.discardedEnergy).toBeCloseTo(frobenius(a) ** 2, 10);
  });

  it('rankForEnergy scans cumulative energy', () => {
    expect(rankForEnergy(new Float64Array([3, 2, 1]), 14, 0.9)).toBe(2);
    expect(rankForEnergy(new Float64Array([3, 2, 1]), 14, 0.5)).toBe(1);
    expect(rankForEnergy(new Float64Array([3, 2, 1]), 14, 1)).toBe(3);
    expect(rankForEnergy(new Float64Array([3, 2]), 14, 1)).toBeNull();
    expect(rankForEnergy(new Float64Array([0, 0]), 0, 1)).toBe(0);
  });

  it('rejects options out of range and malformed matrices with typed errors', async () => {
    const a = { rows: 2, cols: 2, data: new Float64Array([1, 2, 3, 4]) };
    await expect(truncatedSvd(a, { rank: -1 })).rejects.toThrow(InvalidSvdOptionError);
    await expect(truncatedSvd(a, { rank: 1.5 })).rejects.toThrow(/rank must be an integer/);
    await expect(truncatedSvd(a, { energy: 0 })).rejects.toThrow(/energy must be in \(0, 1\]/);
    await expect(truncatedSvd(a, { energy: 1.1 })).rejects.toThrow(InvalidSvdOptionError);
    await expect(truncatedSvd(a, { oversampling: -2 })).rejects.toThrow(/oversampling/);
    await expect(truncatedSvd(a, { powerIterations: 0.5 })).rejects.toThrow(/powerIterations/);
    await expect(truncatedSvd(a, { method: 'fast' as never })).rejects.toThrow(/method/);
    await expect(truncatedSvd({ rows: 2, cols: 2, data: new Float64Array(3) })).rejects.toThrow(
      InvalidMatrixError,
    );
  });
});
