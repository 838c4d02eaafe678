// The float64 references that the conformance suite trusts, checked on small cases worked by hand.
import { describe, expect, it } from 'vitest';
import { expectClose, expectExact } from './compare.js';
import { SeededRandom } from './random.js';
import {
  argmaxRef,
  binaryRef,
  causalMaskRef,
  concatRef,
  erfScalar,
  gatherRef,
  geluScalar,
  layerNormRef,
  logSoftmaxRef,
  matmulRef,
  maxRef,
  meanRef,
  refArray,
  rmsNormRef,
  ropeRef,
  sliceRef,
  softmaxRef,
  stackRef,
  sumRef,
  topkRef,
  transposeRef,
  whereRef,
} from './reference.js';

describe('reference arithmetic', () => {
  it('matmul with transposes and a broadcast batch', () => {
    const a = refArray([2, 3], [1, 2, 3, 4, 5, 6]);
    const b = refArray([3, 2], [7, 8, 9, 10, 11, 12]);
    expect(Array.from(matmulRef(a, b).data)).toEqual([58, 64, 139, 154]);
    // aᵀ·a = [[17, 22, 27], [22, 29, 36], [27, 36, 45]]
    expect(Array.from(matmulRef(a, a, true, false).data)).toEqual([17, 22, 27, 22, 29, 36, 27, 36, 45]);
    // a·aᵀ = [[14, 32], [32, 77]]
    expect(Array.from(matmulRef(a, a, false, true).data)).toEqual([14, 32, 32, 77]);
    const batched = matmulRef(refArray([2, 1, 1, 1], [2, 3]), refArray([3, 1, 1], [1, 10, 100]));
    expect(batched.shape).toEqual([2, 3, 1, 1]);
    expect(Array.from(batched.data)).toEqual([2, 20, 200, 3, 30, 300]);
  });

  it('broadcasting binary op and where', () => {
    const sum = binaryRef(refArray([2, 1], [1, 2]), refArray([3], [10, 20, 30]), (p, q) => p + q);
    expect(sum.shape).toEqual([2, 3]);
    expect(Array.from(sum.data)).toEqual([11, 21, 31, 12, 22, 32]);
    const chosen = whereRef(
      refArray([2, 1], [1, 0]),
      refArray([2, 2], [1, 2, 3, 4]),
      refArray([2], [-1, -2]),
    );
    expect(Array.from(chosen.data)).toEqual([1, 2, -1, -2]);
  });

  it('reductions over axes, with and without keepDims', () => {
    const x = refArray([2, 3], [1, 5, 3, 4, 2, 6]);
    expect(Array.from(sumRef(x).data)).toEqual([21]);
    expect(Array.from(sumRef(x, 0).data)).toEqual([5, 7, 9]);
    expect(sumRef(x, -1, true).shape).toEqual([2, 1]);
    expect(Array.from(meanRef(x, 1).data)).toEqual([3, 4]);
    expect(Array.from(maxRef(x, 1).data)).toEqual([5, 6]);
    expect(Array.from(argmaxRef(x, 1).data)).toEqual([1, 2]);
    expect(Array.from(argmaxRef(x, 0).data)).toEqual([1, 0, 1]);
  });

  it('softmax and logSoftmax along an axis', () => {
    const x = refArray([2, 2], [0, Math.log(3), 1, 1]);
    expectClose('softmax', softmaxRef(x).data, [0.25, 0.75, 0.5, 0.5], () => 1e-15);
    expectClose(
      'softmax axis 0',
      softmaxRef(x, 0).data,
      [1 / (1 + Math.E), 3 / (3 + Math.E), Math.E / (1 + Math.E), Math.E / (3 + Math.E)],
      () => 1e-15,
    );
    expectClose(
      'logSoftmax',
      logSoftmaxRef(x).data,
      [Math.log(0.25), Math.log(0.75), Math.log(0.5), Math.log(0.5)],
      () => 1e-15,
    );
  });

  it('erf and the exact GELU against tabulated values; layerNorm by hand', () => {
    // erf values from Abramowitz & Stegun table 7.1 / mpmath, to 16 digits.
    const table: [number, number][] = [
      [0, 0],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [2, 0.9953222650189527],
      [2.9, 0.9999589021219005],
      [3.5, 0.9999992569016276],
      [-1, -0.8427007929497149],
    ];
    expectClose(
      'erf',
      table.map(([x]) => erfScalar(x)),
      table.map(([, y]) => y),
      () => 3e-14, // the series near |x| = 3 loses ~2e-14 to cancellation; ample for float32 checks
    );
    // GELU(1) = Φ(1) = 0.8413447460685429; GELU(−2) = −2·Φ(−2) = −0.04550026389635842.
    expectClose(
      'gelu',
      [geluScalar(1), geluScalar(-2)],
      [0.8413447460685429, -0.04550026389635842],
      () => 1e-15,
    );
    const normed = layerNormRef(
      refArray([3], [1, 2, 3]),
      refArray([3], [1, 2, 1]),
      refArray([3], [0, 1, -1]),
      0,
    );
    const unit = Math.sqrt(1.5); // (x − 2) / √(2/3)
    expectClose('layerNorm', normed.data, [-unit, 1, unit - 1], () => 1e-15);
  });

  it('rmsNorm, rope, causal mask', () => {
    // x = [3, 4]: mean(x²) = 12.5, so x/√12.5 · w
    const normed = rmsNormRef(refArray([1, 2], [3, 4]), refArray([2], [1, 2]), 0);
    expectClose('rmsNorm', normed.data, [3 / Math.sqrt(12.5), 8 / Math.sqrt(12.5)], () => 1e-15);
    // Pair 0 (x₁=1, x₂=3) turns by 90° (cos 0, sin 1); pair 1 (x₁=2, x₂=4) by 0° (cos 1, sin 0).
    const x = refArray([1, 4], [1, 2, 3, 4]); // x1 = [1, 2], x2 = [3, 4]
    const rotated = ropeRef(x, refArray([1, 2], [0, 1]), refArray([1, 2], [1, 0]));
    expect(Array.from(rotated.data)).toEqual([1 * 0 - 3 * 1, 2 * 1 - 4 * 0, 3 * 0 + 1 * 1, 4 * 1 + 2 * 0]);
    const mask = causalMaskRef(2, 4, 1);
    const inf = Number.NEGATIVE_INFINITY;
    expect(Array.from(mask.data)).toEqual([0, 0, inf, inf, 0, 0, 0, inf]);
  });

  it('gather, slice, concat, transpose, stack, topk', () => {
    const table = refArray([3, 2], [0, 1, 10, 11, 20, 21]);
    expect(Array.from(gatherRef(table, refArray([2], [2, 0])).data)).toEqual([20, 21, 0, 1]);
    expect(Array.from(gatherRef(table, refArray([2], [1, 1]), 1).data)).toEqual([1, 1, 11, 11, 21, 21]);
    expect(Array.from(sliceRef(table, [1, 1], [-1, 1]).data)).toEqual([11, 21]);
    const joined = concatRef([table, refArray([1, 2], [30, 31])], 0);
    expect(joined.shape).toEqual([4, 2]);
    expect(Array.from(joined.data)).toEqual([0, 1, 10, 11, 20, 21, 30, 31]);
    expect(Array.from(transposeRef(table).data)).toEqual([0, 10, 20, 1, 11, 21]);
    const stacked = stackRef([refArray([2], [1, 2]), refArray([2], [3, 4])], 1);
    expect(stacked.shape).toEqual([2, 2]);
    expect(Array.from(stacked.data)).toEqual([1, 3, 2, 4]);
    const top = topkRef(refArray([1, 4], [3, 9, 3, 1]), 3);
    expect(Array.from(top.values.data)).toEqual([9, 3, 3]);
    expect(Array.from(top.indices.data)).toEqual([1, 0, 2]);
  });

  it('compare helpers catch a wrong value and accept NaN and ∞ only where expected', () => {
    expect(() => expectExact('x', [1, 2], [1, 3])).toThrow(/1 of 2 values off/);
    expect(() =>
      expectExact('x', [Number.NaN, Number.POSITIVE_INFINITY], [Number.NaN, Number.POSITIVE_INFINITY]),
    ).not.toThrow();
    expect(() => expectExact('x', [Number.NaN], [0])).toThrow();
    expect(() => expectClose('x', [1.1], [1], () => 0.05)).toThrow();
  });

  it('the seeded PRNG reproduces its sequence and stays in range', () => {
    const first = new SeededRandom(42).floats(100, -2, 3);
    const again = new SeededRandom(42).floats(100, -2, 3);
    expect(Array.from(again)).toEqual(Array.from(first));
    expect(first.every((v) => v >= -2 && v < 3)).toBe(true);
    expect(new SeededRandom(43).floats(1)[0]).not.toBe(first[0]);
  });
});
