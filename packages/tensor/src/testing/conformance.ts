/**
 * The conformance suite: vitest `describe`/`it` blocks that check every op of a {@link Backend} against
 * the float64 arithmetic of `reference.ts`, on fresh seeded random inputs, with stated tolerances; and
 * check that each op leaves no live tensor behind.
 *
 * @module
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Backend, DType, Tensor, TensorData, Variable } from '../backend.js';
import { decodeBfloat16, decodeFloat16, encodeBfloat16, encodeFloat16 } from '../half.js';
import { sizeOf } from '../shape.js';
import { expectClose, expectExact, expectShape, expectWithin, type Tolerance } from './compare.js';
import { SeededRandom } from './random.js';
import {
  compositeAddLowRank,
  compositeAttention,
  compositeGatedActivation,
  compositeGelu,
  compositeLayerNorm,
  compositePagedAttention,
} from '../composite.js';
import {
  argmaxRef,
  attentionRef,
  binaryRef,
  addLowRankRef,
  causalMaskRef,
  concatRef,
  gatherRef,
  geluScalar,
  geluTanhScalar,
  layerNormRef,
  logSoftmaxRef,
  matmulAbsRef,
  matmulRef,
  maxRef,
  meanRef,
  pagedAttentionRef,
  type RefArray,
  refArray,
  rmsNormRef,
  ropeRef,
  sigmoidScalar,
  siluScalar,
  sliceRef,
  softmaxRef,
  stackRef,
  sumRef,
  topkRef,
  transposeRef,
  unaryRef,
  whereRef,
} from './reference.js';

/** Tolerances of the suite, per kind of op; all for float32 results against float64 references. */
export interface ConformanceTolerances {
  /** add, sub, mul, div, maximum, square: correctly rounded float32 is within ½ ulp (2⁻²⁴ relative). */
  arithmetic: Tolerance;
  /** exp, log, sqrt, rsqrt, tanh, sigmoid, silu, geluTanh. */
  transcendental: Tolerance;
  /** matmul: each output may be off by this times `Σ|aᵢ||bᵢ|`, its sum of absolute products. */
  matmul: number;
  /** sum and mean: each output may be off by this times the sum (mean: mean) of absolute inputs. */
  reduction: number;
  /** softmax, logSoftmax, rmsNorm, rope, masked attention. */
  normalization: Tolerance;
  /**
   * valueAndGrad against float64 central differences: `abs` is scaled by the largest reference gradient
   * of the case (at least 1).
   */
  gradient: Tolerance;
}

/** Default tolerances: a few float32 ulps for single operations, more for accumulations. */
export const defaultTolerances: ConformanceTolerances = {
  arithmetic: { abs: 0, rel: 4 * 2 ** -24 },
  transcendental: { abs: 1e-6, rel: 1e-5 },
  matmul: 1e-5,
  reduction: 1e-5,
  normalization: { abs: 1e-6, rel: 2e-5 },
  gradient: { abs: 2e-5, rel: 2e-4 },
};

/** Options of {@link describeBackendConformance}. */
export interface ConformanceOptions {
  /** Skip the whole suite, saying why in one line (e.g. "no WebGPU adapter"). */
  skip?: string;
  /** Overrides of {@link defaultTolerances}; say why next to any override. */
  tolerances?: Partial<ConformanceTolerances>;
  /** Base seed of the random inputs (each test derives its own from its name). Default 1. */
  seed?: number;
}

/** String hash (FNV-1a) for per-test seeds that do not depend on test order. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** A random input: the tensor and the same float32 values as a float64 reference array. */
interface Input {
  t: Tensor;
  r: RefArray;
}

/** What each test body gets: the backend, a seeded PRNG, and helpers that track tensors for disposal. */
class Harness {
  private readonly owned: Tensor[] = [];

  constructor(
    readonly b: Backend,
    readonly rng: SeededRandom,
    readonly tol: ConformanceTolerances,
  ) {}

  /** Registers tensors for disposal at the end of the test; returns the first. */
  own<T extends Tensor>(x: T, ...more: Tensor[]): T {
    this.owned.push(x, ...more);
    return x;
  }

  disposeAll(): void {
    this.b.dispose(this.owned);
  }

  /** Uniform random float32 input in [low, high). */
  input(shape: readonly number[], low = -1, high = 1): Input {
    return this.from(shape, this.rng.floats(sizeOf(shape), low, high));
  }

  /** Input of given values. */
  from(shape: readonly number[], values: Float32Array | Int32Array, dtype?: DType): Input {
    const t = this.own(this.b.fromArray(values, shape, dtype));
    return { t, r: refArray(shape, values) };
  }

  /** Random int32 input in [low, high). */
  ints(shape: readonly number[], low: number, high: number): Input {
    return this.from(shape, this.rng.ints(sizeOf(shape), low, high), 'int32');
  }

  /** Reads a tensor, checking its shape and dtype first. */
  async read(
    what: string,
    x: Tensor,
    shape: readonly number[],
    dtype: DType = 'float32',
  ): Promise<TensorData> {
    expectShape(what, x.shape, shape);
    expect(x.dtype, `${what}: dtype`).toBe(dtype);
    const data = await this.b.read(x);
    expect(data, `${what}: read() array type`).toBeInstanceOf(dtype === 'int32' ? Int32Array : Float32Array);
    return data;
  }

  /** Checks a float32 result elementwise against `want` within `tol`. */
  async within(what: string, got: Tensor, want: RefArray, tol: Tolerance): Promise<void> {
    this.own(got);
    expectWithin(what, await this.read(what, got, want.shape), want.data, tol);
  }

  /** Checks a result for exact equality with `want`. */
  async exact(what: string, got: Tensor, want: RefArray, dtype: DType = 'float32'): Promise<void> {
    this.own(got);
    expectExact(what, await this.read(what, got, want.shape, dtype), want.data);
  }

  /** Checks a result against `want` with a per-element bound. */
  async bounded(what: string, got: Tensor, want: RefArray, bound: (i: number) => number): Promise<void> {
    this.own(got);
    expectClose(what, await this.read(what, got, want.shape), want.data, bound);
  }

  /**
   * Checks `valueAndGrad` of `loss = Σ r ⊙ f(x₁, …)` (r a fixed random weight, so every output element
   * gets its own upstream gradient) against central differences of the float64 reference `ref`.
   */
  async gradCheck(
    what: string,
    inputs: readonly Input[],
    f: (b: Backend, xs: Tensor[]) => Tensor,
    ref: (xs: RefArray[]) => RefArray,
  ): Promise<void> {
    const { b } = this;
    const refs = inputs.map((input) => input.r);
    const outShape = ref(refs).shape;
    const weight = this.input(outShape);
    const variables = this.ownVariables(inputs.map((input, i) => b.variable(input.t, `grad_check_${i}`)));
    const refLoss = (xs: RefArray[]) => {
      const out = ref(xs).data;
      let total = 0;
      for (let i = 0; i < out.length; i++) total += out[i]! * weight.r.data[i]!;
      return total;
    };
    const { value, grads } = b.valueAndGrad(() => b.sum(b.mul(f(b, variables), weight.t)), variables);
    this.own(value, ...grads);
    const wantValue = refLoss(refs);
    const scale = sumRef(
      unaryRef(
        binaryRef(ref(refs), weight.r, (p, q) => p * q),
        Math.abs,
      ),
    ).data[0]!;
    expectClose(
      `${what}: value`,
      await this.read(`${what}: value`, value, []),
      [wantValue],
      () => 1e-5 * scale + 1e-6,
    );
    for (let i = 0; i < inputs.length; i++) {
      const want = centralDifferences(refLoss, refs, i);
      const largest = Math.max(1, ...want.map(Math.abs));
      const got = await this.read(`${what}: grad ${i}`, grads[i]!, refs[i]!.shape);
      const { abs, rel } = this.tol.gradient;
      expectClose(`${what}: d/dx${i}`, got, want, (j) => abs * largest + rel * Math.abs(want[j]!));
    }
  }

  private ownVariables(vs: Variable[]): Variable[] {
    this.own(vs[0]!, ...vs.slice(1));
    return vs;
  }
}

/** ∂loss/∂xs[which] by float64 central differences. */
function centralDifferences(loss: (xs: RefArray[]) => number, xs: RefArray[], which: number): number[] {
  const x = xs[which]!;
  const grad: number[] = [];
  for (let j = 0; j < x.data.length; j++) {
    const h = 1e-5 * Math.max(1, Math.abs(x.data[j]!));
    const plus = Float64Array.from(x.data);
    const minus = Float64Array.from(x.data);
    plus[j]! += h;
    minus[j]! -= h;
    const withX = (data: Float64Array) => xs.map((v, i) => (i === which ? { shape: x.shape, data } : v));
    grad.push((loss(withX(plus)) - loss(withX(minus))) / (2 * h));
  }
  return grad;
}

const add = (p: number, q: number) => p + q;
const sub = (p: number, q: number) => p - q;
const mul = (p: number, q: number) => p * q;
const div = (p: number, q: number) => p / q;

/**
 * Registers the conformance suite for a backend as vitest `describe`/`it` blocks.
 *
 * Every op is checked against float64 arithmetic on seeded random inputs (non-square, batched,
 * broadcast, empty and length-1 shapes), and every test asserts that `numTensors()` returns to its
 * baseline. Call it at the top level of a test file; the factory runs once, in `beforeAll`.
 *
 * @param label - names the `describe` block, e.g. `"tfjs-wasm"`.
 * @param factory - creates the backend under test.
 * @example
 * ```ts
 * // packages/backend-foo/src/conformance.test.ts
 * import { describeBackendConformance } from '@rrt/tensor/testing';
 * import { createFooBackend } from './index.js';
 * describeBackendConformance('foo', () => createFooBackend());
 * ```
 */
export function describeBackendConformance(
  label: string,
  factory: () => Promise<Backend>,
  options: ConformanceOptions = {},
): void {
  if (options.skip !== undefined) {
    describe.skip(`${label} conformance (skipped: ${options.skip})`, () => {
      it('is skipped', () => {});
    });
    return;
  }
  const tol: ConformanceTolerances = { ...defaultTolerances, ...options.tolerances };
  const baseSeed = options.seed ?? 1;
  let backend: Backend | undefined;

  /** Registers one test: a fresh harness, the body, disposal of its tensors and the leak check. */
  const test = (name: string, body: (h: Harness) => Promise<void>) => {
    it(name, async () => {
      const b = backend!;
      const baseline = b.numTensors();
      const h = new Harness(b, new SeededRandom(hash(`${baseSeed}:${name}`)), tol);
      try {
        await body(h);
      } finally {
        h.disposeAll();
      }
      expect(b.numTensors(), `${name}: live tensors after the test (a leak)`).toBe(baseline);
    });
  };

  describe(`${label} conformance`, () => {
    beforeAll(async () => {
      backend = await factory();
    });

    describe('creation and read-back', () => registerCreation(test));
    describe('matmul', () => registerMatmul(test));
    describe('elementwise', () => registerElementwise(test));
    describe('reductions', () => registerReductions(test));
    describe('transformer ops', () => registerTransformerOps(test));
    describe('indexing and layout', () => registerLayout(test));
    describe('fused ops', () => registerFusedOps(test));
    describe('the one mutation: writeRows', () => registerWriteRows(test));
    describe('memory', () => registerMemory(test));
    describe('training', () => registerTraining(test));
  });
}

type Register = (name: string, body: (h: Harness) => Promise<void>) => void;

function registerCreation(test: Register): void {
  test('fromArray: float32 from Float32Array and number[], int32 from Int32Array, scalars', async (h) => {
    const { b } = h;
    const values = h.rng.floats(6);
    await h.exact('Float32Array [2, 3]', b.fromArray(values, [2, 3]), refArray([2, 3], values));
    await h.exact('number[] [3]', b.fromArray([1.5, -2, 3], [3]), refArray([3], [1.5, -2, 3]));
    const ints = Int32Array.from([-7, 0, 2147483647, -2147483648]);
    await h.exact('Int32Array [4]', b.fromArray(ints, [4]), refArray([4], ints), 'int32');
    await h.exact('number[] as int32', b.fromArray([3, -4], [2], 'int32'), refArray([2], [3, -4]), 'int32');
    await h.exact('scalar []', b.fromArray([2.5], []), refArray([], [2.5]));
    await h.exact('empty [0, 3]', b.fromArray([], [0, 3]), refArray([0, 3], []));
  });

  test('fromArray copies its input', async (h) => {
    const values = Float32Array.from([1, 2, 3]);
    const x = h.own(h.b.fromArray(values, [3]));
    values[0] = 99;
    expectExact('after mutating the source', await h.b.read(x), [1, 2, 3]);
  });

  test('fromArray rejects a length that does not match the shape', async (h) => {
    expect(() => h.own(h.b.fromArray([1, 2, 3], [2, 2]))).toThrow();
  });

  test('read returns a copy: mutating it leaves the tensor unchanged', async (h) => {
    const x = h.own(h.b.fromArray([1, 2, 3], [3]));
    const first = await h.b.read(x);
    first[0] = 99;
    expectExact('second read', await h.b.read(x), [1, 2, 3]);
  });

  test('read of int32 is exact over the whole range', async (h) => {
    const ints = Int32Array.from([-2147483648, -1, 0, 1, 16777217, 2147483647, ...h.rng.ints(10, -1e9, 1e9)]);
    await h.exact('int32', h.b.fromArray(ints, [ints.length]), refArray([ints.length], ints), 'int32');
  });

  test('fromBytes float16 decodes like decodeFloat16 (random, subnormal, ±0, ±∞, NaN)', async (h) => {
    const specials = [0, -0, 1, -1, 65504, -65504, 6.1e-5, 5.96e-8, 3e-7, Infinity, -Infinity, Number.NaN];
    const values = [...h.rng.floats(20, -4, 4), ...specials];
    const bytes = encodeFloat16(values);
    const want = decodeFloat16(bytes);
    const got = h.own(h.b.fromBytes(bytes, 'float16', [4, 8]));
    expectExact('float16', await h.read('float16', got, [4, 8]), want);
  });

  test('fromBytes bfloat16 decodes like decodeBfloat16 (random, subnormal, ±0, ±∞, NaN)', async (h) => {
    const specials = [0, -0, 1, -1, 3.38e38, 1e-39, Infinity, -Infinity, Number.NaN];
    const values = [...h.rng.floats(15, -100, 100), ...specials];
    const bytes = encodeBfloat16(values);
    const want = decodeBfloat16(bytes);
    const got = h.own(h.b.fromBytes(bytes, 'bfloat16', [24]));
    expectExact('bfloat16', await h.read('bfloat16', got, [24]), want);
  });

  test('fromBytes float32 and int32 from an unaligned view', async (h) => {
    const floats = h.rng.floats(6);
    const ints = h.rng.ints(6, -1000, 1000);
    for (const [dtype, source] of [
      ['float32', floats],
      ['int32', ints],
    ] as const) {
      const padded = new Uint8Array(source.byteLength + 3);
      padded.set(new Uint8Array(source.buffer), 1);
      const view = padded.subarray(1, 1 + source.byteLength); // byteOffset 1: not 4-aligned
      const got = h.own(h.b.fromBytes(view, dtype, [2, 3]));
      expectExact(`${dtype} bytes`, await h.read(dtype, got, [2, 3], dtype), source);
    }
  });

  test('fromBytes rejects a byte length that does not match the shape', async (h) => {
    expect(() => h.own(h.b.fromBytes(new Uint8Array(10), 'float16', [2, 3]))).toThrow();
    expect(() => h.own(h.b.fromBytes(new Uint8Array(10), 'float32', [2]))).toThrow();
  });

  test('fill: float32, int32, scalar and empty shapes', async (h) => {
    const { b } = h;
    await h.exact('float32 [2, 3]', b.fill([2, 3], -1.25), refArray([2, 3], new Array(6).fill(-1.25)));
    await h.exact('int32 [4]', b.fill([4], 7, 'int32'), refArray([4], [7, 7, 7, 7]), 'int32');
    await h.exact('scalar', b.fill([], 3), refArray([], [3]));
    await h.exact('empty [2, 0]', b.fill([2, 0], 1), refArray([2, 0], []));
  });
}

/** Batch shapes of (a, b) for the batched matmul cases: equal, broadcast, one side unbatched, rank 3 and 4. */
const MATMUL_BATCHES: readonly [readonly number[], readonly number[]][] = [
  [[], []],
  [[3], [3]],
  [
    [2, 3],
    [2, 3],
  ],
  [[4], []],
  [[], [4]],
  [
    [2, 1],
    [1, 3],
  ],
  [[2, 3], [3]],
  [[1], [5]],
  [[2, 1], [3]],
  [[3], [1, 1]],
];

function registerMatmul(test: Register): void {
  for (const [batchA, batchB] of MATMUL_BATCHES) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const name = `batch [${batchA}]·[${batchB}], transposeA=${transposeA}, transposeB=${transposeB}`;
        test(name, async (h) => {
          const [m, k, n] = [5, 7, 3];
          const a = h.input([...batchA, ...(transposeA ? [k, m] : [m, k])]);
          const b = h.input([...batchB, ...(transposeB ? [n, k] : [k, n])]);
          const want = matmulRef(a.r, b.r, transposeA, transposeB);
          const scale = matmulAbsRef(a.r, b.r, transposeA, transposeB);
          const got = h.b.matmul(a.t, b.t, { transposeA, transposeB });
          await h.bounded(name, got, want, (i) => h.tol.matmul * scale.data[i]!);
        });
      }
    }
  }

  test('long inner dimension (k = 300), non-square', async (h) => {
    const a = h.input([6, 300]);
    const b = h.input([300, 9]);
    const scale = matmulAbsRef(a.r, b.r);
    await h.bounded(
      '[6,300]·[300,9]',
      h.b.matmul(a.t, b.t),
      matmulRef(a.r, b.r),
      (i) => h.tol.matmul * scale.data[i]!,
    );
  });

  test('vector shapes: GEMV [1,k]·[k,n] with transposeB, outer product [m,1]·[1,n], [1,1]·[1,1]', async (h) => {
    const cases: [number[], number[], boolean][] = [
      [[1, 33], [17, 33], true],
      [[4, 1], [1, 6], false],
      [[1, 1], [1, 1], false],
    ];
    for (const [shapeA, shapeB, transposeB] of cases) {
      const a = h.input(shapeA);
      const b = h.input(shapeB);
      const scale = matmulAbsRef(a.r, b.r, false, transposeB);
      const what = `[${shapeA}]·[${shapeB}]${transposeB ? 'ᵀ' : ''}`;
      const got = h.b.matmul(a.t, b.t, { transposeB });
      await h.bounded(
        what,
        got,
        matmulRef(a.r, b.r, false, transposeB),
        (i) => h.tol.matmul * scale.data[i]!,
      );
    }
  });

  test('empty: m = 0, k = 0 (all zeros), batch = 0', async (h) => {
    const cases: [number[], number[]][] = [
      [
        [0, 4],
        [4, 3],
      ],
      [
        [2, 0],
        [0, 3],
      ],
      [
        [0, 2, 3],
        [3, 4],
      ],
    ];
    for (const [shapeA, shapeB] of cases) {
      const a = h.input(shapeA);
      const b = h.input(shapeB);
      await h.exact(`[${shapeA}]·[${shapeB}]`, h.b.matmul(a.t, b.t), matmulRef(a.r, b.r));
    }
  });
}

function registerElementwise(test: Register): void {
  const binaries = [
    ['add', add],
    ['sub', sub],
    ['mul', mul],
    ['div', div],
    ['maximum', Math.max],
  ] as const;
  const shapePairs: [number[], number[]][] = [
    [
      [3, 5],
      [3, 5],
    ],
    [
      [2, 3, 4],
      [3, 1],
    ],
    [[4], [2, 3, 4]],
    [
      [2, 1, 4],
      [1, 3, 1],
    ],
    [[2, 3], []],
    [[1], [1]],
    [[0, 3], [3]],
  ];
  for (const [op, f] of binaries) {
    test(`${op}: same shape, broadcast, scalar tensor, length-1 and empty`, async (h) => {
      for (const [shapeA, shapeB] of shapePairs) {
        const a = h.input(shapeA);
        // Keep divisors away from zero so that the quotient is well conditioned.
        const b =
          op === 'div' ? h.from(shapeB, h.rng.floatsAwayFromZero(sizeOf(shapeB), 0.5, 2)) : h.input(shapeB);
        await h.within(
          `${op} [${shapeA}] [${shapeB}]`,
          h.b[op](a.t, b.t),
          binaryRef(a.r, b.r, f),
          h.tol.arithmetic,
        );
      }
    });
    test(`${op}: number operand`, async (h) => {
      const a = h.input([2, 3]);
      const scalar = Math.fround(h.rng.uniform(0.5, 2));
      const want = binaryRef(a.r, refArray([], [scalar]), f);
      await h.within(`${op} [2,3] number`, h.b[op](a.t, scalar), want, h.tol.arithmetic);
    });
  }

  test('int32 add, sub, mul, maximum, neg are exact and stay int32 (also with a number operand)', async (h) => {
    const { b } = h;
    const x = h.ints([3, 4], -1000, 1000);
    const y = h.ints([4], -1000, 1000);
    await h.exact('add', b.add(x.t, y.t), binaryRef(x.r, y.r, add), 'int32');
    await h.exact('sub', b.sub(x.t, y.t), binaryRef(x.r, y.r, sub), 'int32');
    await h.exact('mul', b.mul(x.t, y.t), binaryRef(x.r, y.r, mul), 'int32');
    await h.exact('maximum', b.maximum(x.t, y.t), binaryRef(x.r, y.r, Math.max), 'int32');
    await h.exact(
      'neg',
      b.neg(x.t),
      unaryRef(x.r, (v) => -v),
      'int32',
    );
    await h.exact(
      'add number',
      b.add(x.t, 3),
      unaryRef(x.r, (v) => v + 3),
      'int32',
    );
    await h.exact(
      'mul number',
      b.mul(x.t, -2),
      unaryRef(x.r, (v) => v * -2),
      'int32',
    );
  });

  const unaries = [
    ['neg', (v: number) => -v, -3, 3, 'arithmetic'],
    ['square', (v: number) => v * v, -3, 3, 'arithmetic'],
    ['exp', Math.exp, -10, 10, 'transcendental'],
    ['log', Math.log, 0.01, 100, 'transcendental'],
    ['sqrt', Math.sqrt, 0.01, 100, 'transcendental'],
    ['rsqrt', (v: number) => 1 / Math.sqrt(v), 0.01, 100, 'transcendental'],
    ['tanh', Math.tanh, -5, 5, 'transcendental'],
    ['sigmoid', sigmoidScalar, -10, 10, 'transcendental'],
    ['silu', siluScalar, -10, 10, 'transcendental'],
    ['geluTanh', geluTanhScalar, -6, 6, 'transcendental'],
    ['gelu', geluScalar, -6, 6, 'transcendental'],
  ] as const;
  for (const [op, f, low, high, kind] of unaries) {
    test(`${op}: random inputs in [${low}, ${high}), length-1 and empty`, async (h) => {
      for (const shape of [[4, 9], [1], [0, 2]]) {
        const x = h.input(shape, low, high);
        await h.within(`${op} [${shape}]`, h.b[op](x.t), unaryRef(x.r, f), h.tol[kind]);
      }
    });
  }

  test('saturating activations stay finite at large |x|', async (h) => {
    const x = h.from([8], Float32Array.from([-80, -30, -15, 15, 30, 80, -100, 100]));
    for (const [op, f] of [
      ['sigmoid', sigmoidScalar],
      ['tanh', Math.tanh],
      ['silu', siluScalar],
      ['geluTanh', geluTanhScalar],
      ['gelu', geluScalar],
    ] as const) {
      await h.within(`${op} large |x|`, h.b[op](x.t), unaryRef(x.r, f), h.tol.transcendental);
    }
  });

  test('cast: float32 → int32 truncates toward zero; int32 → float32 is exact', async (h) => {
    const x = h.from([10], Float32Array.from([-2.7, -2.5, -0.5, -0.25, 0, 0.5, 2.5, 2.7, 3, 1e6 + 0.5]));
    await h.exact('to int32', h.b.cast(x.t, 'int32'), unaryRef(x.r, Math.trunc), 'int32');
    const ints = h.ints([2, 5], -16777216, 16777216);
    await h.exact('to float32', h.b.cast(ints.t, 'float32'), ints.r);
  });
}

function registerReductions(test: Register): void {
  const axesCases: [number[], number | number[] | undefined][] = [
    [[3, 4, 5], undefined],
    [[3, 4, 5], 0],
    [[3, 4, 5], -1],
    [
      [3, 4, 5],
      [0, 2],
    ],
    [[3, 4, 5], [1]],
    [[7], 0],
    [[2, 1, 6], 1],
  ];
  for (const keepDims of [false, true]) {
    test(`sum, mean, max over all, one, negative and several axes (keepDims=${keepDims})`, async (h) => {
      for (const [shape, axes] of axesCases) {
        const x = h.input(shape);
        const what = (op: string) => `${op} [${shape}] axes=${JSON.stringify(axes)} keepDims=${keepDims}`;
        const absX = unaryRef(x.r, Math.abs);
        const sumScale = sumRef(absX, axes, keepDims);
        const meanScale = meanRef(absX, axes, keepDims);
        await h.bounded(
          what('sum'),
          h.b.sum(x.t, axes, keepDims),
          sumRef(x.r, axes, keepDims),
          (i) => h.tol.reduction * sumScale.data[i]!,
        );
        await h.bounded(
          what('mean'),
          h.b.mean(x.t, axes, keepDims),
          meanRef(x.r, axes, keepDims),
          (i) => h.tol.reduction * meanScale.data[i]!,
        );
        await h.exact(what('max'), h.b.max(x.t, axes, keepDims), maxRef(x.r, axes, keepDims));
      }
    });
  }

  test('int32 sum is exact and int32', async (h) => {
    const x = h.ints([4, 6], -10000, 10000);
    await h.exact('sum axis 1', h.b.sum(x.t, 1), sumRef(x.r, 1), 'int32');
    await h.exact('sum all', h.b.sum(x.t), sumRef(x.r), 'int32');
  });

  test('sum over an empty axis is zero', async (h) => {
    const x = h.input([3, 0]);
    await h.exact('sum [3,0] axis 1', h.b.sum(x.t, 1), refArray([3], [0, 0, 0]));
  });

  test('argmax: last axis by default, axis 0, first index on ties; int32', async (h) => {
    const x = h.input([4, 7]);
    await h.exact('argmax default axis', h.b.argmax(x.t), argmaxRef(x.r, -1), 'int32');
    await h.exact('argmax axis 0', h.b.argmax(x.t, 0), argmaxRef(x.r, 0), 'int32');
    const ties = h.from([2, 5], Float32Array.from([1, 3, 3, 0, 3, -1, -1, -2, -1, -1]));
    await h.exact('argmax ties', h.b.argmax(ties.t, -1), refArray([2], [1, 0]), 'int32');
  });

  test('topk: k = 1, 3 and the full width; values descending, int32 indices', async (h) => {
    const x = h.input([3, 8]);
    for (const k of [1, 3, 8]) {
      const { values, indices } = h.b.topk(x.t, k);
      const want = topkRef(x.r, k);
      await h.exact(`topk k=${k} values`, values, want.values);
      await h.exact(`topk k=${k} indices`, indices, want.indices, 'int32');
    }
    const single = h.input([2, 1]);
    const { values, indices } = h.b.topk(single.t, 1);
    await h.exact('topk of width 1', values, single.r);
    await h.exact('topk of width 1 indices', indices, refArray([2, 1], [0, 0]), 'int32');
  });
}

function registerTransformerOps(test: Register): void {
  test('softmax and logSoftmax: last axis (default), axis 0, a middle axis', async (h) => {
    const x = h.input([3, 4, 6], -4, 4);
    for (const axis of [undefined, -1, 0, 1]) {
      const a = axis ?? -1;
      await h.within(`softmax axis ${axis}`, h.b.softmax(x.t, axis), softmaxRef(x.r, a), h.tol.normalization);
      await h.within(
        `logSoftmax axis ${axis}`,
        h.b.logSoftmax(x.t, axis),
        logSoftmaxRef(x.r, a),
        h.tol.normalization,
      );
    }
  });

  test('softmax and logSoftmax are stable for large logits and exact on a length-1 axis', async (h) => {
    const big = h.input([2, 9], -300, 300);
    await h.within('softmax large', h.b.softmax(big.t), softmaxRef(big.r), h.tol.normalization);
    await h.within('logSoftmax large', h.b.logSoftmax(big.t), logSoftmaxRef(big.r), h.tol.normalization);
    const single = h.input([3, 1]);
    await h.within(
      'softmax width 1',
      h.b.softmax(single.t),
      refArray([3, 1], [1, 1, 1]),
      h.tol.normalization,
    );
    await h.within(
      'logSoftmax width 1',
      h.b.logSoftmax(single.t),
      refArray([3, 1], [0, 0, 0]),
      h.tol.normalization,
    );
  });

  test('rmsNorm: rank 2 and 3, eps that matters for small inputs, width 1', async (h) => {
    for (const [shape, scale, eps] of [
      [[5, 16], 1, 1e-5],
      [[2, 3, 8], 3, 1e-6],
      [[4, 8], 1e-3, 1e-5], // mean(x²) ≈ 3e-7, comparable to eps
      [[3, 1], 1, 1e-5],
    ] as const) {
      const x = h.input(shape, -scale, scale);
      const w = h.input([shape.at(-1)!], 0.5, 1.5);
      await h.within(
        `rmsNorm [${shape}]`,
        h.b.rmsNorm(x.t, w.t, eps),
        rmsNormRef(x.r, w.r, eps),
        h.tol.normalization,
      );
    }
  });

  test('layerNorm: rank 2 and 3, an offset mean, eps that matters for small inputs, width 1', async (h) => {
    for (const [shape, low, high, eps] of [
      [[5, 16], -1, 1, 1e-5],
      [[2, 3, 8], 2, 5, 1e-6], // a mean far from 0: centring must happen before squaring
      [[4, 8], -1e-3, 1e-3, 1e-5], // var ≈ 3e-7, comparable to eps
      [[3, 1], -1, 1, 1e-5], // width 1: every row normalises to its bias
    ] as const) {
      const x = h.input(shape, low, high);
      const w = h.input([shape.at(-1)!], 0.5, 1.5);
      const bias = h.input([shape.at(-1)!]);
      const want = layerNormRef(x.r, w.r, bias.r, eps);
      await h.within(`layerNorm [${shape}]`, h.b.layerNorm(x.t, w.t, bias.t, eps), want, h.tol.normalization);
      await h.within(
        `layerNorm [${shape}] (composite)`,
        compositeLayerNorm(h.b, x.t, w.t, bias.t, eps),
        want,
        h.tol.normalization,
      );
    }
  });

  test('gelu (composite) matches the exact GELU, saturation included', async (h) => {
    const x = h.input([6, 9], -8, 8);
    await h.within(
      'gelu composite',
      compositeGelu(h.b, x.t),
      unaryRef(x.r, geluScalar),
      h.tol.transcendental,
    );
    const large = h.from([6], Float32Array.from([-80, -30, -10, 10, 30, 80]));
    await h.within(
      'gelu composite large |x|',
      compositeGelu(h.b, large.t),
      unaryRef(large.r, geluScalar),
      h.tol.transcendental,
    );
  });

  test('rope: [B, H, T, D] with cos/sin [T, D/2] and [1, 1, T, D/2]; rank 2; D = 2', async (h) => {
    const cases: [number[], number[]][] = [
      [
        [2, 3, 5, 8],
        [5, 4],
      ],
      [
        [1, 2, 4, 6],
        [1, 1, 4, 3],
      ],
      [
        [7, 4],
        [7, 2],
      ],
      [
        [3, 2],
        [3, 1],
      ],
      [
        [2, 5, 3, 8], // the decoder's [B, T, heads, D] with its table rows [T, 1, D/2]
        [5, 1, 4],
      ],
    ];
    for (const [shape, tableShape] of cases) {
      const x = h.input(shape);
      const angles = h.rng.floats(sizeOf(tableShape), -Math.PI, Math.PI);
      const cos = h.from(tableShape, angles.map(Math.cos));
      const sin = h.from(tableShape, angles.map(Math.sin));
      const want = ropeRef(x.r, cos.r, sin.r);
      await h.within(
        `rope [${shape}] / [${tableShape}]`,
        h.b.rope(x.t, cos.t, sin.t),
        want,
        h.tol.normalization,
      );
    }
  });

  test('causalMask: 0 on and below the offset diagonal, −∞ above', async (h) => {
    for (const [q, k, offset] of [
      [4, 4, 0],
      [3, 7, 4],
      [1, 9, 8],
      [2, 5, 1],
      [1, 1, 0],
    ] as const) {
      await h.exact(
        `causalMask(${q}, ${k}, ${offset})`,
        h.b.causalMask(q, k, offset),
        causalMaskRef(q, k, offset),
      );
    }
  });

  test('masked attention: scores + causalMask, softmax — −∞ plus finite works and rows sum to 1', async (h) => {
    for (const [q, k, offset] of [
      [5, 5, 0],
      [3, 8, 5],
    ] as const) {
      const scores = h.input([2, q, k], -3, 3);
      const mask = h.own(h.b.causalMask(q, k, offset));
      const masked = h.own(h.b.add(scores.t, mask));
      const want = softmaxRef(binaryRef(scores.r, causalMaskRef(q, k, offset), add));
      await h.within(`softmax(scores + mask) q=${q} k=${k}`, h.b.softmax(masked), want, h.tol.normalization);
    }
  });
}

function registerLayout(test: Register): void {
  test('gather: embedding rows (repeated ids), axis 1, int32 table, 2-D ids, empty ids', async (h) => {
    const table = h.input([10, 6]);
    const ids = h.from([5], Int32Array.from([3, 0, 9, 3, 3]), 'int32');
    await h.exact('rows', h.b.gather(table.t, ids.t), gatherRef(table.r, ids.r));
    const ids2 = h.ints([2, 3], 0, 10);
    await h.exact('2-D ids', h.b.gather(table.t, ids2.t, 0), gatherRef(table.r, ids2.r, 0));
    const cols = h.ints([4], 0, 6);
    await h.exact('axis 1', h.b.gather(table.t, cols.t, 1), gatherRef(table.r, cols.r, 1));
    const intTable = h.ints([5, 3], -50, 50);
    const some = h.ints([4], 0, 5);
    await h.exact('int32 table', h.b.gather(intTable.t, some.t), gatherRef(intTable.r, some.r), 'int32');
    const none = h.from([0], new Int32Array(0), 'int32');
    await h.exact('empty ids', h.b.gather(table.t, none.t), gatherRef(table.r, none.r));
  });

  test('slice: begin/size with -1, size 0, full, rank 3', async (h) => {
    const x = h.input([4, 5, 6]);
    for (const [begin, size] of [
      [
        [1, 0, 2],
        [2, 5, 3],
      ],
      [
        [0, 2, 1],
        [-1, -1, 4],
      ],
      [
        [0, 0, 0],
        [4, 5, 6],
      ],
      [
        [2, 1, 0],
        [0, 3, 6],
      ],
    ]) {
      await h.exact(`slice ${begin} ${size}`, h.b.slice(x.t, begin!, size!), sliceRef(x.r, begin!, size!));
    }
  });

  test('concat: axis 0, negative axis, three pieces, an empty piece, one piece, int32', async (h) => {
    const a = h.input([2, 3]);
    const b = h.input([4, 3]);
    const c = h.input([2, 5]);
    const empty = h.input([0, 3]);
    await h.exact('axis 0', h.b.concat([a.t, b.t], 0), concatRef([a.r, b.r], 0));
    await h.exact('axis -1, three', h.b.concat([a.t, c.t, a.t], -1), concatRef([a.r, c.r, a.r], -1));
    await h.exact('empty piece', h.b.concat([a.t, empty.t, b.t], 0), concatRef([a.r, empty.r, b.r], 0));
    await h.exact('one piece', h.b.concat([c.t], 1), c.r);
    const i = h.ints([2, 2], -9, 9);
    await h.exact('int32', h.b.concat([i.t, i.t], 1), concatRef([i.r, i.r], 1), 'int32');
  });

  test('reshape: -1, to and from scalar, empty', async (h) => {
    const x = h.input([2, 3, 4]);
    await h.exact('[6, -1]', h.b.reshape(x.t, [6, -1]), { shape: [6, 4], data: x.r.data });
    await h.exact('[24]', h.b.reshape(x.t, [24]), { shape: [24], data: x.r.data });
    const one = h.input([1, 1]);
    await h.exact('to scalar', h.b.reshape(one.t, []), { shape: [], data: one.r.data });
    const empty = h.input([0, 4]);
    await h.exact('empty', h.b.reshape(empty.t, [2, 0, 2]), { shape: [2, 0, 2], data: empty.r.data });
  });

  test('transpose: default reverses, [0, 2, 1, 3], rank 2', async (h) => {
    const x = h.input([2, 3, 4, 5]);
    await h.exact('default', h.b.transpose(x.t), transposeRef(x.r));
    await h.exact('[0,2,1,3]', h.b.transpose(x.t, [0, 2, 1, 3]), transposeRef(x.r, [0, 2, 1, 3]));
    const m = h.input([3, 7]);
    await h.exact('rank 2', h.b.transpose(m.t, [1, 0]), transposeRef(m.r, [1, 0]));
  });

  test('stack: axis 0 (default), last axis, one tensor', async (h) => {
    const xs = [h.input([2, 3]), h.input([2, 3]), h.input([2, 3])];
    await h.exact(
      'axis 0',
      h.b.stack(xs.map((x) => x.t)),
      stackRef(
        xs.map((x) => x.r),
        0,
      ),
    );
    await h.exact(
      'axis 2',
      h.b.stack(
        xs.map((x) => x.t),
        2,
      ),
      stackRef(
        xs.map((x) => x.r),
        2,
      ),
    );
    await h.exact(
      'axis -1',
      h.b.stack(
        xs.map((x) => x.t),
        -1,
      ),
      stackRef(
        xs.map((x) => x.r),
        -1,
      ),
    );
    await h.exact('one', h.b.stack([xs[0]!.t], 1), stackRef([xs[0]!.r], 1));
  });

  test('where: int32 0/1 condition broadcasting against both branches', async (h) => {
    const condition = h.ints([3, 1], 0, 2);
    const a = h.input([3, 4]);
    const b = h.input([4]);
    await h.exact('where [3,1] [3,4] [4]', h.b.where(condition.t, a.t, b.t), whereRef(condition.r, a.r, b.r));
    const full = h.ints([2, 3], 0, 2);
    const p = h.input([2, 3]);
    const q = h.input([2, 3]);
    await h.exact('where same shape', h.b.where(full.t, p.t, q.t), whereRef(full.r, p.r, q.r));
  });
}

/** Attention cases: [B, T, H, kvH, D, S, queryOffset, keyLength]. */
const ATTENTION_CASES: readonly (readonly [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
])[] = [
  [2, 5, 4, 2, 8, 5, 0, 5], // a whole sequence, GQA with 2 groups, batch 2
  [2, 1, 4, 4, 6, 9, 6, 7], // one decode step against a buffer with unused slots (MHA)
  [1, 3, 6, 2, 4, 20, 4, 7], // a chunk after a cached prefix of 4, G = 3, 13 slots unused
  [3, 2, 2, 1, 8, 40, 30, 32], // multi-query, 32 keys (a multiple of the composite's key block)
  [1, 4, 2, 2, 2, 4, 0, 4], // headDim 2
];

function registerFusedOps(test: Register): void {
  test('attention: causal GQA over a (partly filled) key buffer, against float64 and the composite', async (h) => {
    for (const [batch, length, heads, kvHeads, headDim, slots, offset, keyLength] of ATTENTION_CASES) {
      const q = h.input([batch, length, heads, headDim], -2, 2);
      const k = h.input([batch, slots, kvHeads, headDim], -2, 2);
      const v = h.input([batch, slots, kvHeads, headDim]);
      const options = { scale: 1 / Math.sqrt(headDim), queryOffset: offset, keyLength };
      const want = attentionRef(q.r, k.r, v.r, options.scale, offset, keyLength);
      const label = `attention B=${batch} T=${length} H=${heads} kvH=${kvHeads} D=${headDim} S=${slots} offset=${offset} keys=${keyLength}`;
      await h.within(label, h.b.attention(q.t, k.t, v.t, options), want, h.tol.normalization);
      await h.within(
        `${label} (composite)`,
        compositeAttention(h.b, q.t, k.t, v.t, options),
        want,
        h.tol.normalization,
      );
    }
  });

  test('attention: sliding window (keys j > p − window) and soft-capped scores, against float64 and the composite', async (h) => {
    // [B, T, H, kvH, D, S, offset, keyLength, window, softCap]: windows shorter than, equal to and longer
    // than the keys, a chunk that straddles the window edge, decoding past it, and a cap that bites.
    const cases: [number, number, number, number, number, number, number, number, number, number?][] = [
      [1, 9, 4, 2, 8, 9, 0, 9, 3], // prefill: the window slides across the chunk
      [2, 1, 2, 1, 4, 20, 17, 18, 5], // one decode step at position 17, window 5: keys 13…17
      [1, 4, 6, 2, 4, 24, 10, 14, 4, 0.75], // a chunk after a cached prefix, window and cap
      [1, 5, 2, 2, 8, 5, 0, 5, 1], // window 1: each query sees only itself
      [1, 6, 2, 1, 4, 6, 0, 6, 100, 1.5], // a window longer than every key: the cap alone
    ];
    for (const [batch, length, heads, kvHeads, headDim, slots, offset, keyLength, window, softCap] of cases) {
      const q = h.input([batch, length, heads, headDim], -2, 2);
      const k = h.input([batch, slots, kvHeads, headDim], -2, 2);
      const v = h.input([batch, slots, kvHeads, headDim]);
      const options = {
        scale: 1 / Math.sqrt(headDim),
        queryOffset: offset,
        keyLength,
        window,
        ...(softCap !== undefined ? { softCap } : {}),
      };
      const want = attentionRef(q.r, k.r, v.r, options.scale, offset, keyLength, { window, softCap });
      const label = `attention window=${window} softCap=${softCap} T=${length} offset=${offset} keys=${keyLength}`;
      await h.within(label, h.b.attention(q.t, k.t, v.t, options), want, h.tol.normalization);
      await h.within(
        `${label} (composite)`,
        compositeAttention(h.b, q.t, k.t, v.t, options),
        want,
        h.tol.normalization,
      );
    }
  });

  test('attention: with window w a query at position p sees exactly the keys p − w + 1 … p', async (h) => {
    // Zero queries weigh every visible key alike; value j is the one-hot of j, so the output's nonzero
    // entries name the keys a query saw. 8 keys, queries at positions 2…7 after a cache of 2.
    const keys = 8;
    const eye = Float32Array.from({ length: keys * keys }, (_, i) => (i % (keys + 1) === 0 ? 1 : 0));
    const values = h.from([1, keys, 1, keys], eye);
    const zeros = h.from([1, 6, 1, keys], new Float32Array(6 * keys));
    for (const window of [1, 3, 8]) {
      const options = { scale: 1, queryOffset: 2, window };
      for (const [how, out] of [
        ['fused', h.b.attention(zeros.t, values.t, values.t, options)],
        ['composite', compositeAttention(h.b, zeros.t, values.t, values.t, options)],
      ] as const) {
        const data = await h.b.read(out);
        h.b.dispose(out);
        for (let t = 0; t < 6; t++) {
          const position = 2 + t;
          const seen = [...data.subarray(t * keys, (t + 1) * keys)].flatMap((weight, j) =>
            weight > 0 ? [j] : [],
          );
          const expected = Array.from({ length: keys }, (_, j) => j).filter(
            (j) => j <= position && position - j < window,
          );
          if (seen.join() !== expected.join()) {
            throw new Error(
              `${how}, window ${window}, position ${position}: saw keys ${seen}, expected ${expected}`,
            );
          }
        }
      }
    }
  });

  test('attention: keyLength defaults to every key; unused slots do not matter (NaN there)', async (h) => {
    const q = h.input([1, 2, 2, 4]);
    const k = h.input([1, 3, 1, 4]);
    const v = h.input([1, 3, 1, 4]);
    await h.within(
      'attention default keyLength',
      h.b.attention(q.t, k.t, v.t, { scale: 0.5, queryOffset: 1 }),
      attentionRef(q.r, k.r, v.r, 0.5, 1),
      h.tol.normalization,
    );
    const poisoned = (x: Input) => {
      const data = Float32Array.from(x.r.data);
      data.fill(Number.NaN, 2 * 4); // slot 2 of [1, 3, 1, 4]
      return h.from([1, 3, 1, 4], data);
    };
    await h.within(
      'attention ignores slots ≥ keyLength',
      h.b.attention(q.t, poisoned(k).t, poisoned(v).t, { scale: 0.5, queryOffset: 0, keyLength: 2 }),
      attentionRef(q.r, k.r, v.r, 0.5, 0, 2),
      h.tol.normalization,
    );
  });

  test('pagedAttention: ragged spans over a paged pool, against float64 and the composite', async (h) => {
    // [H, kvH, D, pageSize, pages] and spans { rows, queryOffset, keyLength, pages }: block tables out of
    // page order, partial last pages, a table longer than needed, prefill chunks and decode rows.
    const cases = [
      {
        heads: 4,
        kvHeads: 2,
        headDim: 8,
        pageSize: 3,
        pages: 9,
        spans: [
          { rows: 1, queryOffset: 6, keyLength: 7, pages: [5, 0, 7] }, // decode row, last page 1 of 3
          { rows: 4, queryOffset: 0, keyLength: 4, pages: [2, 8] }, // a whole prompt of 4
          { rows: 3, queryOffset: 5, keyLength: 8, pages: [6, 1, 3, 4] }, // a chunk after 5; table longer
          { rows: 1, queryOffset: 0, keyLength: 1, pages: [4] }, // the first token of a sequence
        ],
      },
      {
        heads: 6,
        kvHeads: 2,
        headDim: 4,
        pageSize: 4,
        pages: 5,
        spans: [{ rows: 2, queryOffset: 9, keyLength: 11, pages: [3, 0, 4] }],
      },
      {
        heads: 2,
        kvHeads: 1,
        headDim: 6, // not a multiple of 4: the SIMD kernel's fallback
        pageSize: 2,
        pages: 4,
        spans: [
          { rows: 2, queryOffset: 1, keyLength: 3, pages: [3, 1] },
          { rows: 1, queryOffset: 4, keyLength: 5, pages: [0, 2, 1] },
        ],
      },
    ];
    for (const { heads, kvHeads, headDim, pageSize, pages, spans } of cases) {
      const rows = spans.reduce((n, span) => n + span.rows, 0);
      const q = h.input([1, rows, heads, headDim], -2, 2);
      const k = h.input([pages, pageSize, kvHeads, headDim], -2, 2);
      const v = h.input([pages, pageSize, kvHeads, headDim]);
      const options = { scale: 1 / Math.sqrt(headDim) };
      const want = pagedAttentionRef(q.r, k.r, v.r, spans, options.scale);
      const label = `pagedAttention H=${heads} kvH=${kvHeads} D=${headDim} pageSize=${pageSize} spans=${spans.length}`;
      await h.within(label, h.b.pagedAttention(q.t, k.t, v.t, spans, options), want, h.tol.normalization);
      await h.within(
        `${label} (composite)`,
        compositePagedAttention(h.b, q.t, k.t, v.t, spans, options),
        want,
        h.tol.normalization,
      );
      // A sliding window shorter than the histories, and a soft-cap the scores reach (inputs in ±2).
      const scored = { ...options, window: 3, softCap: 1.5 };
      const wantScored = pagedAttentionRef(q.r, k.r, v.r, spans, scored.scale, scored);
      await h.within(
        `${label} window 3, softCap 1.5`,
        h.b.pagedAttention(q.t, k.t, v.t, spans, scored),
        wantScored,
        h.tol.normalization,
      );
      await h.within(
        `${label} window 3, softCap 1.5 (composite)`,
        compositePagedAttention(h.b, q.t, k.t, v.t, spans, scored),
        wantScored,
        h.tol.normalization,
      );
    }
  });

  test('pagedAttention: positions past keyLength and pages outside the table are not read (NaN there)', async (h) => {
    const data = h.rng.floats(4 * 2 * 1 * 4, -1, 1);
    const poisoned = Float32Array.from(data);
    poisoned.fill(Number.NaN, (1 * 2 + 1) * 4, (1 * 2 + 2) * 4); // page 1 slot 1: past keyLength 3
    poisoned.fill(Number.NaN, 2 * 2 * 4, 3 * 2 * 4); // page 2: in no table
    const pool = h.from([4, 2, 1, 4], poisoned);
    const clean = refArray([4, 2, 1, 4], data);
    const q = h.input([1, 2, 2, 4]);
    const spans = [{ rows: 2, queryOffset: 1, keyLength: 3, pages: [3, 1] }];
    await h.within(
      'pagedAttention ignores unread slots',
      h.b.pagedAttention(q.t, pool.t, pool.t, spans, { scale: 0.5 }),
      pagedAttentionRef(q.r, clean, clean, spans, 0.5),
      h.tol.normalization,
    );
  });

  test('addLowRank: each segment of rows gets its own adapter, against float64 and the composite', async (h) => {
    // [in, out, W] and segments: adapters of different ranks at any start, a segment without one, one
    // row alone, a run of rows sharing an adapter, two segments with the same adapter, widths that are and
    // are not multiples of 4 (the SIMD kernel's tails), a single segment over every row.
    const cases = [
      {
        inner: 12,
        out: 8,
        width: 10,
        segments: [
          { rows: 1, start: 4, rank: 3, scale: 0.5 },
          { rows: 3, start: 0, rank: 4, scale: 2 },
          { rows: 2, start: 0, rank: 0, scale: 0 },
          { rows: 1, start: 7, rank: 3, scale: -1.25 },
          { rows: 2, start: 4, rank: 3, scale: 0.5 },
        ],
      },
      { inner: 7, out: 5, width: 6, segments: [{ rows: 3, start: 1, rank: 5, scale: 1 }] },
      {
        inner: 64,
        out: 172,
        width: 80,
        segments: [
          { rows: 2, start: 32, rank: 16, scale: 1 },
          { rows: 5, start: 0, rank: 16, scale: 1 },
          { rows: 1, start: 64, rank: 16, scale: 1 },
        ],
      },
    ];
    for (const { inner, out, width, segments } of cases) {
      const rows = segments.reduce((n, segment) => n + segment.rows, 0);
      const base = h.input([rows, out], -2, 2);
      const x = h.input([rows, inner], -2, 2);
      const aRows = h.input([width, inner]);
      const bRows = h.input([width, out]);
      const { value, magnitude } = addLowRankRef(base.r, x.r, aRows.r, bRows.r, segments);
      const label = `addLowRank in=${inner} out=${out} W=${width} segments=${segments.length}`;
      // Observed (20 seeds of in 64, out 172, rank 16): at most 9.4e-9 of the magnitude on cpu, 3.8e-8 on
      // wasm; the bound is 2e-7 of it, scaled with a backend's matmul tolerance.
      const bound = (i: number) => (2e-7 * h.tol.matmul * magnitude.data[i]!) / defaultTolerances.matmul;
      await h.bounded(label, h.b.addLowRank(base.t, x.t, aRows.t, bRows.t, segments), value, bound);
      await h.bounded(
        `${label} (composite)`,
        compositeAddLowRank(h.b, base.t, x.t, aRows.t, bRows.t, segments),
        value,
        bound,
      );
    }
  });

  test('addLowRank: a row gets the same bits alone as in a batch of other segments', async (h) => {
    const [inner, out, width] = [20, 9, 12];
    const segments = [
      { rows: 2, start: 0, rank: 4, scale: 0.75 },
      { rows: 3, start: 4, rank: 8, scale: 1.5 },
      { rows: 1, start: 2, rank: 5, scale: -2 },
    ];
    const base = h.input([6, out], -2, 2);
    const x = h.input([6, inner], -2, 2);
    const aRows = h.input([width, inner]);
    const bRows = h.input([width, out]);
    const batched = (await h.b.read(
      h.own(h.b.addLowRank(base.t, x.t, aRows.t, bRows.t, segments)),
    )) as Float32Array;
    let row = 0;
    for (const segment of segments) {
      for (let r = row; r < row + segment.rows; r++) {
        const alone = h.b.addLowRank(
          h.own(h.b.slice(base.t, [r, 0], [1, -1])),
          h.own(h.b.slice(x.t, [r, 0], [1, -1])),
          aRows.t,
          bRows.t,
          [{ ...segment, rows: 1 }],
        );
        await h.exact(`row ${r} alone`, alone, refArray([1, out], batched.subarray(r * out, (r + 1) * out)));
      }
      row += segment.rows;
    }
  });

  test('gatedActivation: silu and gelu-tanh gates times up', async (h) => {
    const gate = h.input([3, 7], -4, 4);
    const up = h.input([3, 7]);
    for (const [activation, f] of [
      ['silu', siluScalar],
      ['gelu-tanh', geluTanhScalar],
    ] as const) {
      const want = binaryRef(unaryRef(gate.r, f), up.r, mul);
      await h.within(activation, h.b.gatedActivation(gate.t, up.t, activation), want, h.tol.transcendental);
      await h.within(
        `${activation} (composite)`,
        compositeGatedActivation(h.b, gate.t, up.t, activation),
        want,
        h.tol.transcendental,
      );
    }
  });
}

function registerWriteRows(test: Register): void {
  test('writeRows: rows land at flattened leading positions; the rest and the source stay', async (h) => {
    const { b } = h;
    // A [batch 2, capacity 4, kvHeads 3, headDim 2] buffer; write positions 1 and 2 of batch 0, 3 of batch 1.
    const target = h.own(b.fill([2, 4, 3, 2], 0));
    const rows = h.input([3, 3, 2]);
    const indices = [1, 2, 7];
    b.writeRows(target, indices, rows.t);
    const want = new Float64Array(2 * 4 * 3 * 2);
    for (const [i, row] of indices.entries()) want.set(rows.r.data.subarray(i * 6, (i + 1) * 6), row * 6);
    await h.exact('after one write', b.add(target, 0), refArray([2, 4, 3, 2], want));
    expectExact('the rows are unchanged', await b.read(rows.t), rows.r.data);
    // A second write overwrites one row and adds another; a reshape of the buffer sees both.
    const more = h.input([2, 3, 2]);
    b.writeRows(target, Int32Array.from([2, 4]), more.t);
    want.set(more.r.data.subarray(0, 6), 2 * 6);
    want.set(more.r.data.subarray(6, 12), 4 * 6);
    await h.exact('after a second write', b.add(target, 0), refArray([2, 4, 3, 2], want));
    await h.exact('through a reshape', b.reshape(target, [8, 6]), refArray([8, 6], want));
    // Rows given as [batch 1, 2 new positions, 3, 2]: leading axes flatten to the 2 rows.
    const chunk = h.input([1, 2, 3, 2]);
    b.writeRows(target, [5, 6], chunk.t);
    want.set(chunk.r.data, 5 * 6);
    await h.exact('rows with two leading axes', b.add(target, 0), refArray([2, 4, 3, 2], want));
  });

  test('writeRows: a paged pool [pages, pageSize, heads, dim]; a tensor computed before the write keeps its value', async (h) => {
    const { b } = h;
    const pool = h.own(b.fill([3, 2, 1, 4], 0));
    const before = h.own(b.mul(pool, 1));
    const rows = h.input([2, 1, 4]);
    b.writeRows(pool, [5, 0], rows.t); // page 2 slot 1, page 0 slot 0
    const want = new Float64Array(3 * 2 * 4);
    want.set(rows.r.data.subarray(0, 4), 5 * 4);
    want.set(rows.r.data.subarray(4, 8), 0);
    expectExact('pool', await b.read(pool), want);
    expectExact('computed before', await b.read(before), new Float64Array(24));
    // Attention reads the written rows (the use a KV cache makes of it).
    const q = h.input([1, 1, 1, 4]);
    const keys = h.own(b.fill([1, 2, 1, 4], 0));
    b.writeRows(keys, [0, 1], h.input([2, 1, 4]).t);
    const keysRead = refArray([1, 2, 1, 4], await b.read(keys));
    await h.within(
      'attention over written keys',
      b.attention(q.t, keys, keys, { scale: 1, queryOffset: 1 }),
      attentionRef(q.r, keysRead, keysRead, 1, 1),
      h.tol.normalization,
    );
  });
}

function registerMemory(test: Register): void {
  test('tidy disposes what it made except what it returns (tensor, array, record)', async (h) => {
    const { b } = h;
    const base = b.numTensors();
    const x = h.own(b.fromArray([1, 2], [2]));
    const single = h.own(b.tidy(() => b.add(b.mul(x, 2), 1)));
    expect(b.numTensors(), 'after tidy returning a tensor').toBe(base + 2);
    expectExact('single', await b.read(single), [3, 5]);
    const list = b.tidy(() => [b.neg(x), b.square(b.neg(x))]);
    h.own(list[0]!, list[1]!);
    expect(b.numTensors(), 'after tidy returning an array').toBe(base + 4);
    const record = b.tidy(() => ({ p: b.exp(b.neg(x)), q: b.add(x, x) }));
    h.own(record['p']!, record['q']!);
    expect(b.numTensors(), 'after tidy returning a record').toBe(base + 6);
    b.tidy(() => {
      b.add(x, 1);
    });
    expect(b.numTensors(), 'after tidy returning nothing').toBe(base + 6);
  });

  test('keep survives the enclosing tidy scopes; nested tidy returns outward', async (h) => {
    const { b } = h;
    const base = b.numTensors();
    let kept: Tensor | undefined;
    const outer = b.tidy(() => {
      const inner = b.tidy(() => {
        kept = b.keep(b.fill([2], 4));
        b.fill([3], 0); // disposed by the inner scope
        return b.fill([1], 1);
      });
      b.fill([3], 0); // disposed by the outer scope
      return b.add(inner, 1);
    });
    h.own(outer, kept!);
    expect(b.numTensors(), 'kept + returned').toBe(base + 2);
    expectExact('kept', await b.read(kept!), [4, 4]);
    expectExact('outer', await b.read(outer), [2]);
  });

  test('dispose: a tensor, an array, a record; disposing twice is harmless', async (h) => {
    const { b } = h;
    const base = b.numTensors();
    const x = b.fill([2], 1);
    b.dispose(x);
    b.dispose(x);
    const list = [b.fill([1], 1), b.fill([1], 2)];
    b.dispose(list);
    const record = { p: b.fill([1], 1), q: b.fill([1], 2) };
    b.dispose(record);
    b.dispose(record);
    expect(b.numTensors()).toBe(base);
  });
}

function registerTraining(test: Register): void {
  test('variable copies its initial value; assign replaces it with a copy', async (h) => {
    const { b } = h;
    const initial = b.fromArray([1, 2, 3], [3]);
    const v = h.own(b.variable(initial, 'conformance_variable'));
    b.dispose(initial);
    expectExact('after disposing the initial tensor', await b.read(v), [1, 2, 3]);
    const value = b.fromArray([4, 5, 6], [3]);
    b.assign(v, value);
    b.dispose(value);
    expectExact('after assign and disposing the value', await b.read(v), [4, 5, 6]);
  });

  test('valueAndGrad: a variable that does not reach the value gets zeros; nothing else stays alive', async (h) => {
    const { b } = h;
    const used = h.own(b.variable(h.input([3]).t));
    const unused = h.own(b.variable(h.input([2, 2]).t));
    const base = b.numTensors();
    const { value, grads } = b.valueAndGrad(() => b.sum(b.square(used)), [used, unused]);
    expect(b.numTensors(), 'value + 2 gradients').toBe(base + 3);
    h.own(value, ...grads);
    expectExact('unused gradient', await h.read('unused gradient', grads[1]!, [2, 2]), [0, 0, 0, 0]);
  });

  registerGradientChecks(test);

  test('MLP: gather (repeated ids) + rmsNorm + matmul + silu + matmul + logSoftmax loss, all gradients', async (h) => {
    const [vocab, width, hidden, tokens] = [13, 8, 10, 7];
    const ids = Int32Array.from(h.rng.ints(tokens, 0, vocab));
    ids[3] = ids[0]!; // a repeated id: its embedding row must sum both gradients
    const targets = h.rng.ints(tokens, 0, vocab);
    const oneHot = new Float32Array(tokens * vocab);
    targets.forEach((target, t) => {
      oneHot[t * vocab + target] = 1;
    });
    const idsIn = h.from([tokens], ids, 'int32');
    const oneHotIn = h.from([tokens, vocab], oneHot);
    const params = [
      h.input([vocab, width]), // embedding
      h.input([width], 0.5, 1.5), // norm weight
      h.input([width, hidden], -0.6, 0.6), // up projection [in, out]
      h.input([vocab, hidden], -0.6, 0.6), // output projection [out, in] (transposeB)
    ];
    const eps = 1e-5;
    const forward = (b: Backend, [embedding, norm, up, out]: Tensor[]) => {
      const x = b.gather(embedding!, idsIn.t); // [T, d]
      const hiddenState = b.silu(b.matmul(b.rmsNorm(x, norm!, eps), up!)); // [T, hidden]
      const logits = b.matmul(hiddenState, out!, { transposeB: true }); // [T, vocab]
      const picked = b.sum(b.mul(b.logSoftmax(logits), oneHotIn.t), -1); // [T]
      return b.mul(b.mean(picked), -1); // scalar: mean negative log-likelihood
    };
    const forwardRef = ([embedding, norm, up, out]: RefArray[]) => {
      const x = gatherRef(embedding!, idsIn.r);
      const hiddenState = unaryRef(matmulRef(rmsNormRef(x, norm!, eps), up!), siluScalar);
      const logits = matmulRef(hiddenState, out!, false, true);
      const picked = sumRef(binaryRef(logSoftmaxRef(logits), oneHotIn.r, mul), -1);
      return unaryRef(meanRef(picked), (v) => -v);
    };
    await h.gradCheck('MLP', params, forward, forwardRef);
  });
}

function registerGradientChecks(test: Register): void {
  const binaryOps = [
    ['add', add],
    ['sub', sub],
    ['mul', mul],
    ['div', div],
    ['maximum', Math.max],
  ] as const;
  for (const [op, f] of binaryOps) {
    test(`gradient of ${op} with broadcasting [2,3,4] ⊙ [3,1]`, async (h) => {
      const a = h.input([2, 3, 4]);
      const b = op === 'div' ? h.from([3, 1], h.rng.floatsAwayFromZero(3, 0.5, 2)) : h.input([3, 1]);
      await h.gradCheck(
        op,
        [a, b],
        (be, [x, y]) => be[op](x!, y!),
        ([x, y]) => binaryRef(x!, y!, f),
      );
    });
  }

  const unaryOps = [
    ['neg', (v: number) => -v, -2, 2],
    ['exp', Math.exp, -2, 2],
    ['log', Math.log, 0.5, 2],
    ['sqrt', Math.sqrt, 0.5, 2],
    ['rsqrt', (v: number) => 1 / Math.sqrt(v), 0.5, 2],
    ['square', (v: number) => v * v, -2, 2],
    ['tanh', Math.tanh, -2, 2],
    ['sigmoid', sigmoidScalar, -3, 3],
    ['silu', siluScalar, -3, 3],
    ['geluTanh', geluTanhScalar, -3, 3],
    ['gelu', geluScalar, -3, 3],
  ] as const;
  for (const [op, f, low, high] of unaryOps) {
    test(`gradient of ${op}`, async (h) => {
      await h.gradCheck(
        op,
        [h.input([3, 4], low, high)],
        (b, [x]) => b[op](x!),
        ([x]) => unaryRef(x!, f),
      );
    });
  }

  for (const [batchA, batchB] of [
    [[], []],
    [[2, 1], [3]],
  ] as const) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        test(`gradient of matmul [${batchA}]·[${batchB}] transposeA=${transposeA} transposeB=${transposeB}`, async (h) => {
          const [m, k, n] = [3, 4, 2];
          const a = h.input([...batchA, ...(transposeA ? [k, m] : [m, k])]);
          const b = h.input([...batchB, ...(transposeB ? [n, k] : [k, n])]);
          await h.gradCheck(
            'matmul',
            [a, b],
            (be, [x, y]) => be.matmul(x!, y!, { transposeA, transposeB }),
            ([x, y]) => matmulRef(x!, y!, transposeA, transposeB),
          );
        });
      }
    }
  }

  test('gradient of sum, mean, max over axes', async (h) => {
    const x = h.input([3, 4, 5]);
    await h.gradCheck(
      'sum [0,2]',
      [x],
      (b, [v]) => b.sum(v!, [0, 2]),
      ([v]) => sumRef(v!, [0, 2]),
    );
    await h.gradCheck(
      'sum all',
      [x],
      (b, [v]) => b.sum(v!),
      ([v]) => sumRef(v!),
    );
    await h.gradCheck(
      'mean -1 keepDims',
      [x],
      (b, [v]) => b.mean(v!, -1, true),
      ([v]) => meanRef(v!, -1, true),
    );
    await h.gradCheck(
      'max 1',
      [x],
      (b, [v]) => b.max(v!, 1),
      ([v]) => maxRef(v!, 1),
    );
  });

  test('gradient of softmax and logSoftmax (last and other axes)', async (h) => {
    const x = h.input([3, 5], -2, 2);
    await h.gradCheck(
      'softmax',
      [x],
      (b, [v]) => b.softmax(v!),
      ([v]) => softmaxRef(v!),
    );
    await h.gradCheck(
      'softmax axis 0',
      [x],
      (b, [v]) => b.softmax(v!, 0),
      ([v]) => softmaxRef(v!, 0),
    );
    await h.gradCheck(
      'logSoftmax',
      [x],
      (b, [v]) => b.logSoftmax(v!),
      ([v]) => logSoftmaxRef(v!),
    );
    await h.gradCheck(
      'logSoftmax axis 0',
      [x],
      (b, [v]) => b.logSoftmax(v!, 0),
      ([v]) => logSoftmaxRef(v!, 0),
    );
  });

  test('gradient of rmsNorm (input and weight) and rope (input, cos, sin)', async (h) => {
    const x = h.input([2, 3, 6]);
    const w = h.input([6], 0.5, 1.5);
    await h.gradCheck(
      'rmsNorm',
      [x, w],
      (b, [v, g]) => b.rmsNorm(v!, g!, 1e-5),
      ([v, g]) => rmsNormRef(v!, g!, 1e-5),
    );
    const cos = h.input([3, 3]);
    const sin = h.input([3, 3]);
    await h.gradCheck(
      'rope',
      [x, cos, sin],
      (b, [v, c, s]) => b.rope(v!, c!, s!),
      ([v, c, s]) => ropeRef(v!, c!, s!),
    );
  });

  test('gradient of layerNorm (input, weight and bias)', async (h) => {
    const x = h.input([2, 3, 6]);
    const w = h.input([6], 0.5, 1.5);
    const bias = h.input([6]);
    await h.gradCheck(
      'layerNorm',
      [x, w, bias],
      (b, [v, g, c]) => b.layerNorm(v!, g!, c!, 1e-5),
      ([v, g, c]) => layerNormRef(v!, g!, c!, 1e-5),
    );
  });

  test('gradient of attention (queries, keys, values) and gatedActivation', async (h) => {
    const q = h.input([1, 3, 2, 4]);
    const k = h.input([1, 5, 1, 4]);
    const v = h.input([1, 5, 1, 4]);
    const options = { scale: 0.5, queryOffset: 1, keyLength: 4 };
    await h.gradCheck(
      'attention',
      [q, k, v],
      (b, [x, y, z]) => b.attention(x!, y!, z!, options),
      ([x, y, z]) => attentionRef(x!, y!, z!, 0.5, 1, 4),
    );
    const windowed = { ...options, window: 2, softCap: 0.8 };
    await h.gradCheck(
      'attention with a window and a soft-cap',
      [q, k, v],
      (b, [x, y, z]) => b.attention(x!, y!, z!, windowed),
      ([x, y, z]) => attentionRef(x!, y!, z!, 0.5, 1, 4, { window: 2, softCap: 0.8 }),
    );
    const gate = h.input([2, 5], -3, 3);
    const up = h.input([2, 5]);
    await h.gradCheck(
      'gatedActivation silu',
      [gate, up],
      (b, [g, u]) => b.gatedActivation(g!, u!, 'silu'),
      ([g, u]) => binaryRef(unaryRef(g!, siluScalar), u!, mul),
    );
  });

  test('gradient of gather (repeated indices, axis 0 and 1)', async (h) => {
    const table = h.input([6, 4]);
    const ids = h.from([5], Int32Array.from([2, 5, 2, 0, 2]), 'int32');
    await h.gradCheck(
      'gather axis 0',
      [table],
      (b, [t]) => b.gather(t!, ids.t),
      ([t]) => gatherRef(t!, ids.r),
    );
    const cols = h.from([3], Int32Array.from([3, 3, 1]), 'int32');
    await h.gradCheck(
      'gather axis 1',
      [table],
      (b, [t]) => b.gather(t!, cols.t, 1),
      ([t]) => gatherRef(t!, cols.r, 1),
    );
  });

  test('gradient of slice, concat, reshape, transpose, stack, where', async (h) => {
    const x = h.input([3, 4]);
    const y = h.input([3, 2]);
    await h.gradCheck(
      'slice',
      [x],
      (b, [v]) => b.slice(v!, [1, 1], [2, -1]),
      ([v]) => sliceRef(v!, [1, 1], [2, -1]),
    );
    await h.gradCheck(
      'concat',
      [x, y],
      (b, [p, q]) => b.concat([p!, q!, p!], 1),
      ([p, q]) => concatRef([p!, q!, p!], 1),
    );
    await h.gradCheck(
      'reshape',
      [x],
      (b, [v]) => b.reshape(v!, [2, 6]),
      ([v]) => ({ shape: [2, 6], data: v!.data }),
    );
    await h.gradCheck(
      'transpose',
      [x],
      (b, [v]) => b.transpose(v!),
      ([v]) => transposeRef(v!),
    );
    await h.gradCheck(
      'stack',
      [x, x],
      (b, [p, q]) => b.stack([p!, q!], 1),
      ([p, q]) => stackRef([p!, q!], 1),
    );
    const condition = h.ints([3, 1], 0, 2);
    const other = h.input([4]);
    await h.gradCheck(
      'where',
      [x, other],
      (b, [p, q]) => b.where(condition.t, p!, q!),
      ([p, q]) => whereRef(condition.r, p!, q!),
    );
  });
}
