import { describe, expect, it } from 'vitest';
import { randomizedSvd } from './randomized.js';
import {
  frobenius,
  frobeniusDistance,
  gaussianMatrix,
  matmul,
  matrixWithSpectrum,
  orthonormalityError,
  reconstruct,
  tailNorm,
  TestRandom,
} from './test-support/reference.js';

/** σᵢ = (i + 1)^(−decay). */
function powerLaw(k: number, decay: number): number[] {
  return Array.from({ length: k }, (_, i) => (i + 1) ** -decay);
}

describe('randomizedSvd (host products, float64)', () => {
  it.each([
    [300, 500, 1, 20],
    [500, 300, 0.5, 20],
    [300, 500, 2, 40],
  ])(
    'is within 1 percent of the Eckart–Young optimum (%i × %i, σᵢ ∝ i^-%s, rank %i)',
    async (rows, cols, decay, r) => {
      const rng = new TestRandom(rows + 7 * r);
      const sigma = powerLaw(Math.min(rows, cols), decay);
      const a = matrixWithSpectrum(rows, cols, sigma, rng);
      const { U, S, V, sketchSize } = await randomizedSvd(a, r, { seed: 1 });
      expect(sketchSize).toBe(r + 10);
      const error = frobeniusDistance(reconstruct(U, S, V), a);
      const optimum = tailNorm(sigma, r);
      expect(error).toBeGreaterThanOrEqual(optimum * (1 - 1e-9));
      expect(error).toBeLessThan(1.01 * optimum);
      expect(orthonormalityError(U)).toBeLessThan(1e-10);
      expect(orthonormalityError(V)).toBeLessThan(1e-10);
      // A projection never overestimates: σ̃ᵢ ≤ σᵢ.
      for (let i = 0; i < r; i++) expect(S[i]!).toBeLessThanOrEqual(sigma[i]! * (1 + 1e-10));
      // And the leading values are found accurately.
      expect(Math.abs(S[0]! - sigma[0]!)).toBeLessThan(1e-6 * sigma[0]!);
    },
  );

  it('recovers a matrix of rank below the sketch size exactly', async () => {
    const rng = new TestRandom(21);
    const a = matmul(gaussianMatrix(120, 6, rng), gaussianMatrix(6, 90, rng));
    const { U, S, V } = await randomizedSvd(a, 8, { seed: 2 });
    expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-12 * frobenius(a));
    expect(S[6]!).toBeLessThan(1e-12 * S[0]!);
    expect(orthonormalityError(U)).toBeLessThan(1e-10);
    expect(orthonormalityError(V)).toBeLessThan(1e-10);
  });

  it('is reproducible from its seed, and different seeds give different sketches', async () => {
    const rng = new TestRandom(22);
    const a = gaussianMatrix(60, 80, rng);
    const first = await randomizedSvd(a, 5, { seed: 123, powerIterations: 0, oversampling: 2 });
    const again = await randomizedSvd(a, 5, { seed: 123, powerIterations: 0, oversampling: 2 });
    const other = await randomizedSvd(a, 5, { seed: 124, powerIterations: 0, oversampling: 2 });
    expect(again.S).toEqual(first.S);
    expect(again.U.data).toEqual(first.U.data);
    expect(other.S[0]).not.toBe(first.S[0]);
  });

  it('power iterations improve a flat-ish spectrum', async () => {
    const rng = new TestRandom(23);
    const sigma = powerLaw(200, 0.3);
    const a = matrixWithSpectrum(200, 260, sigma, rng);
    const optimum = tailNorm(sigma, 10);
    const errors: number[] = [];
    for (const q of [0, 2]) {
      const { U, S, V } = await randomizedSvd(a, 10, { seed: 3, powerIterations: q, oversampling: 5 });
      errors.push(frobeniusDistance(reconstruct(U, S, V), a) / optimum);
    }
    expect(errors[1]!).toBeLessThan(errors[0]!);
    expect(errors[1]!).toBeLessThan(1.01);
  });

  it('handles zero, wide, tall, 1 × n and n × 1 matrices and rank 0', async () => {
    const zero = await randomizedSvd({ rows: 30, cols: 20, data: new Float32Array(600) }, 4);
    expect(Array.from(zero.S)).toEqual([0, 0, 0, 0]);
    expect(orthonormalityError(zero.U)).toBeLessThan(1e-12);
    expect(orthonormalityError(zero.V)).toBeLessThan(1e-12);
    const rng = new TestRandom(24);
    for (const [rows, cols] of [
      [1, 40],
      [40, 1],
      [5, 70],
      [70, 5],
    ] as const) {
      const a = gaussianMatrix(rows, cols, rng);
      const r = Math.min(rows, cols);
      const { U, S, V } = await randomizedSvd(a, r);
      expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-12 * frobenius(a));
    }
    const none = await randomizedSvd(gaussianMatrix(10, 12, rng), 0);
    expect(none.S.length).toBe(0);
    expect(none.U.rows).toBe(10);
    expect(none.V.rows).toBe(12);
  });
});
