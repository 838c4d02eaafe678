import { describe, expect, it } from 'vitest';
import { InvalidMatrixError } from './errors.js';
import { exactSvd } from './exact.js';
import {
  frobenius,
  frobeniusDistance,
  gaussianMatrix,
  matmul,
  matrixWithSpectrum,
  orthonormalityError,
  reconstruct,
  singularValuesByGram,
  TestRandom,
} from './test-support/reference.js';

/** Geometric spectrum from `top` down to `top · ratio`. */
function geometric(k: number, top: number, ratio: number): number[] {
  return Array.from({ length: k }, (_, i) => top * ratio ** (i / Math.max(1, k - 1)));
}

describe('exactSvd', () => {
  it.each([
    [120, 200],
    [200, 120],
    [90, 90],
  ])('recovers a known spectrum spanning 8 decades (%i × %i)', (rows, cols) => {
    const rng = new TestRandom(rows * 1000 + cols);
    const sigma = geometric(Math.min(rows, cols), 10, 1e-8);
    const a = matrixWithSpectrum(rows, cols, sigma, rng);
    const { U, S, V, spectrum } = exactSvd(a);
    expect(S.length).toBe(sigma.length);
    expect(spectrum).toEqual(S);
    // Absolute accuracy ε·σ₁ (times a modest factor) on every value, the tiny ones included: a Gram-matrix
    // method would get values below √ε·σ₁ ≈ 1.5e-7 wrong entirely.
    for (let i = 0; i < sigma.length; i++)
      expect(Math.abs(S[i]! - sigma[i]!)).toBeLessThan(1e-12 * sigma[0]!);
    expect(Math.abs(S.at(-1)! - sigma.at(-1)!) / sigma.at(-1)!).toBeLessThan(1e-3);
    expect(orthonormalityError(U)).toBeLessThan(1e-12);
    expect(orthonormalityError(V)).toBeLessThan(1e-12);
    expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-13 * frobenius(a));
  });

  it('matches the eigenvalues of the Gram matrix (independent Jacobi solver) on Gaussian matrices', () => {
    const rng = new TestRandom(7);
    for (const [rows, cols] of [
      [40, 70],
      [70, 40],
      [1, 9],
      [9, 1],
      [1, 1],
    ] as const) {
      const a = gaussianMatrix(rows, cols, rng);
      const reference = singularValuesByGram(a);
      const { S, U, V } = exactSvd(a);
      for (let i = 0; i < S.length; i++)
        expect(Math.abs(S[i]! - reference[i]!)).toBeLessThan(1e-10 * reference[0]!);
      expect(orthonormalityError(U)).toBeLessThan(1e-12);
      expect(orthonormalityError(V)).toBeLessThan(1e-12);
      expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-13 * frobenius(a));
    }
  });

  it('gives singular values in descending order and vectors only for the requested count', () => {
    const rng = new TestRandom(11);
    const a = gaussianMatrix(50, 30, rng);
    const full = exactSvd(a);
    const part = exactSvd(a, 4);
    for (let i = 1; i < full.S.length; i++) expect(full.S[i]!).toBeLessThanOrEqual(full.S[i - 1]!);
    expect(part.U.cols).toBe(4);
    expect(part.V.cols).toBe(4);
    expect(part.S.length).toBe(4);
    expect(part.spectrum).toEqual(full.spectrum);
    // The leading triplets agree with the full decomposition up to each pair's common sign.
    for (let j = 0; j < 4; j++) {
      let dotU = 0;
      for (let i = 0; i < 50; i++) dotU += part.U.data[i * 4 + j]! * full.U.data[i * 30 + j]!;
      expect(Math.abs(Math.abs(dotU) - 1)).toBeLessThan(1e-10);
    }
  });

  it('handles a rank-deficient matrix: zero tail, orthonormal completion', () => {
    const rng = new TestRandom(3);
    for (const [rows, cols] of [
      [50, 80],
      [80, 50],
    ] as const) {
      const a = matmul(gaussianMatrix(rows, 5, rng), gaussianMatrix(5, cols, rng));
      const { U, S, V } = exactSvd(a);
      expect(S[4]!).toBeGreaterThan(1e-3 * S[0]!);
      for (let i = 5; i < S.length; i++) expect(S[i]!).toBeLessThan(1e-13 * S[0]!);
      expect(orthonormalityError(U)).toBeLessThan(1e-12);
      expect(orthonormalityError(V)).toBeLessThan(1e-12);
      expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-13 * frobenius(a));
    }
  });

  it('handles repeated singular values', () => {
    const rng = new TestRandom(5);
    const sigma = [4, 4, 4, 2, 2, 1, 1, 1, 1, 0.5];
    const a = matrixWithSpectrum(25, 18, sigma, rng);
    const { U, S, V } = exactSvd(a);
    for (let i = 0; i < sigma.length; i++) expect(S[i]!).toBeCloseTo(sigma[i]!, 12);
    for (let i = sigma.length; i < S.length; i++) expect(S[i]!).toBeLessThan(1e-13);
    expect(orthonormalityError(U)).toBeLessThan(1e-12);
    expect(orthonormalityError(V)).toBeLessThan(1e-12);
    expect(frobeniusDistance(reconstruct(U, S, V), a)).toBeLessThan(1e-13 * frobenius(a));
  });

  it('gives zeros and orthonormal vectors for a zero matrix', () => {
    for (const [rows, cols] of [
      [6, 4],
      [4, 6],
      [1, 5],
      [5, 1],
    ] as const) {
      const { U, S, V } = exactSvd({ rows, cols, data: new Float32Array(rows * cols) });
      expect(Array.from(S)).toEqual(new Array(Math.min(rows, cols)).fill(0));
      expect(orthonormalityError(U)).toBe(0);
      expect(orthonormalityError(V)).toBe(0);
    }
  });

  it('is accurate relative to the scale of the matrix, however large or small', () => {
    const rng = new TestRandom(9);
    const base = gaussianMatrix(20, 30, rng);
    const reference = exactSvd(base).S;
    for (const scale of [1e-150, 1e-30, 1e30, 1e150]) {
      const { S } = exactSvd({ ...base, data: base.data.map((x) => x * scale) });
      for (let i = 0; i < S.length; i++)
        expect(Math.abs(S[i]! / scale - reference[i]!)).toBeLessThan(1e-12 * reference[0]!);
    }
  });

  it('accepts float32 data and empty matrices', () => {
    const rng = new TestRandom(13);
    const a = gaussianMatrix(12, 7, rng);
    const a32 = { ...a, data: Float32Array.from(a.data) };
    const reference = singularValuesByGram({ ...a, data: Float64Array.from(a32.data) });
    const { S } = exactSvd(a32);
    for (let i = 0; i < S.length; i++)
      expect(Math.abs(S[i]! - reference[i]!)).toBeLessThan(1e-10 * reference[0]!);
    const empty = exactSvd({ rows: 0, cols: 5, data: new Float32Array(0) });
    expect(empty.S.length).toBe(0);
    expect(empty.U.rows).toBe(0);
    expect(empty.V.rows).toBe(5);
  });

  it('rejects malformed matrices with a typed error', () => {
    expect(() => exactSvd({ rows: 2, cols: 3, data: new Float32Array(5) })).toThrow(InvalidMatrixError);
    expect(() => exactSvd({ rows: 2, cols: 2, data: new Float64Array([1, Number.NaN, 0, 1]) })).toThrow(
      InvalidMatrixError,
    );
    expect(() =>
      exactSvd({ rows: 1, cols: 2, data: new Float64Array([1, Number.POSITIVE_INFINITY]) }),
    ).toThrow(InvalidMatrixError);
    expect(() => exactSvd({ rows: -1, cols: 2, data: new Float64Array(0) })).toThrow(/non-negative integer/);
  });
});
