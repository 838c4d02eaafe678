/**
 * {@link TfjsBackend}: the rrt {@link Backend} interface over tfjs ops.
 *
 * NOTE: a tensor of this backend *is* the `tf.Tensor`, cast to the opaque {@link Tensor} type, so an op
 * costs one tfjs dispatch and nothing more. RMSNorm, LayerNorm, exact GELU, RoPE, attention and the gated activation run as
 * one fused kernel each on tfjs's cpu and wasm backends (`host-kernels.ts`), and as composites of tfjs
 * ops elsewhere. While gradients are being taken, attention and RoPE stay fused (they have gradient
 * kernels) and RMSNorm, LayerNorm, GELU and the gated activation run as composites, whose gradients are the
 * conformance-checked ones of `gradients.ts`. Paged attention has fused kernels on cpu and wasm and a WGSL
 * kernel on webgpu (`webgpu-kernels.ts`), and no gradient: it runs as its composite inside `valueAndGrad`.
 * A gather of rows (axis 0, float32 or int32 table) copies rows in a fused kernel on cpu and wasm, and is
 * tfjs's gather inside `valueAndGrad` and elsewhere.
 *
 * @module
 */
import type {
  AttentionOptions,
  Backend,
  DType,
  GateActivation,
  LowRankSegment,
  MatmulOptions,
  PagedAttentionOptions,
  PagedAttentionSpan,
  Shape,
  StorageDType,
  Tensor,
  TensorData,
  TensorOrScalar,
  TopK,
  ValueAndGrad,
  Variable,
} from '@rrt/tensor';
import {
  compositeAddLowRank,
  compositeAttention,
  compositeGatedActivation,
  compositeGelu,
  compositeLayerNorm,
  compositePagedAttention,
  decodeBfloat16,
  decodeFloat16,
  sizeOf,
} from '@rrt/tensor';
import * as tf from '@tensorflow/tfjs-core';
import { BackendNotActiveError, TensorDataError } from './errors.js';
import { registerMissingGradients } from './gradients.js';
import { registerWebgpuKernels, webgpuPagedAttentionKernel, webgpuRowInfo } from './webgpu-kernels.js';
import {
  fusedKernelNames,
  registerHostKernels,
  wasmSimdKernelsActive,
  writeRowsInPlace,
} from './host-kernels.js';

/** Which backend a {@link TfjsBackend} runs on (what `createBackend` resolved `"auto"` to). */
export type ResolvedKind = 'node-gpu' | 'node' | 'wasm' | 'webgpu' | 'cpu';

const asTf = (x: Tensor): tf.Tensor => x as unknown as tf.Tensor;
const asTfList = (xs: readonly Tensor[]): tf.Tensor[] => xs as unknown as tf.Tensor[];
const ours = (x: tf.Tensor): Tensor => x as unknown as Tensor;

/** Normalises a possibly negative axis. */
const normAxis = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

/** Converts an axes argument to what tfjs takes (undefined: all axes). */
const tfAxes = (axes: number | readonly number[] | undefined): number | number[] | undefined =>
  axes === undefined ? undefined : typeof axes === 'number' ? axes : [...axes];

/**
 * The masked value of {@link TfjsBackend.causalMask}: −∞ as the interface says. The conformance suite
 * checks `scores + mask` and its softmax on every backend, WebGPU (SwiftShader) included, where −∞ plus
 * a finite number stays −∞ and exp(−∞) is 0.
 */
const MASKED = Number.NEGATIVE_INFINITY;

/**
 * The rrt {@link Backend} on one tfjs backend. Create it with `createBackend` rather than directly.
 *
 * tfjs has one global engine with one active backend at a time. Every op checks that this object's tfjs
 * backend is the active one and throws {@link BackendNotActiveError} otherwise; {@link activate} switches
 * back.
 */
export class TfjsBackend implements Backend {
  /** `"tfjs-" + kind`, e.g. `"tfjs-wasm"`. */
  readonly name: string;
  /** Whether the fused JS kernels of `host-kernels.ts` are registered for this tfjs backend. */
  readonly hasFusedKernels: boolean;
  /** How many {@link valueAndGrad} calls are running: the fused kernels, which have no gradients, wait. */
  private gradientDepth = 0;
  /** Whether the WGSL paged attention kernel of `webgpu-kernels.ts` is registered (tfjs `webgpu`). */
  private readonly hasWebgpuKernels: boolean;

  /**
   * @param kind - the rrt backend kind.
   * @param tfjsName - the tfjs backend name (`"wasm"`, `"webgpu"`, `"cpu"`, `"tensorflow"`).
   */
  constructor(
    readonly kind: ResolvedKind,
    readonly tfjsName: string,
  ) {
    this.name = `tfjs-${kind}`;
    // valueAndGrad needs gradient functions that tfjs-core's bundles do not register (see gradients.ts).
    registerMissingGradients();
    this.hasFusedKernels = registerHostKernels(tfjsName);
    this.hasWebgpuKernels = registerWebgpuKernels(tfjsName);
  }

  /** Whether an op without a fused gradient runs its fused kernel now (not while a gradient is taken). */
  private fused(): boolean {
    return this.hasFusedKernels && this.gradientDepth === 0;
  }

  /**
   * Whether attention and SwiGLU run in the wasm SIMD module (tfjs-wasm only, once one has run); false
   * means they fell back to JS loops (an engine without wasm SIMD, or a tfjs build whose memory is not
   * reachable).
   */
  get usesWasmSimd(): boolean {
    return this.tfjsName === 'wasm' && wasmSimdKernelsActive();
  }

  /** Makes this object's tfjs backend the active one again (after another kind was created). */
  async activate(): Promise<void> {
    if (tf.getBackend() !== this.tfjsName) await tf.setBackend(this.tfjsName);
  }

  /** Throws unless this object's tfjs backend is the active one; a string compare per op. */
  private check(): void {
    const active = tf.getBackend();
    if (active !== this.tfjsName) throw new BackendNotActiveError(this.tfjsName, active);
  }

  // ---- creation and read-back ----

  fromArray(data: TensorData | readonly number[], shape: Shape, dtype?: DType): Tensor {
    this.check();
    const resolved: DType = dtype ?? (data instanceof Int32Array ? 'int32' : 'float32');
    if (data.length !== sizeOf(shape)) {
      throw new TensorDataError(
        'fromArray',
        `${data.length} values given for shape [${shape.join(', ')}], which holds ${sizeOf(shape)}`,
      );
    }
    // Copy: the cpu and webgpu backends keep a reference to the array they are given.
    const values = resolved === 'int32' ? Int32Array.from(data) : Float32Array.from(data);
    return ours(tf.tensor(values, [...shape], resolved));
  }

  fromBytes(bytes: Uint8Array, dtype: StorageDType, shape: Shape): Tensor {
    this.check();
    const count = sizeOf(shape);
    const width = dtype === 'float16' || dtype === 'bfloat16' ? 2 : 4;
    if (bytes.byteLength !== count * width) {
      throw new TensorDataError(
        'fromBytes',
        `${bytes.byteLength} bytes of ${dtype} given for shape [${shape.join(', ')}], which needs ${count * width}`,
      );
    }
    let values: Float32Array | Int32Array;
    if (dtype === 'float16') values = decodeFloat16(bytes);
    else if (dtype === 'bfloat16') values = decodeBfloat16(bytes);
    else {
      // Copy into a fresh, aligned buffer (the view may sit at any offset); little-endian like the host.
      const copy = bytes.slice().buffer;
      values = dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy);
    }
    return ours(tf.tensor(values, [...shape], dtype === 'int32' ? 'int32' : 'float32'));
  }

  fill(shape: Shape, value: number, dtype: DType = 'float32'): Tensor {
    this.check();
    return ours(tf.fill([...shape], value, dtype));
  }

  async read(x: Tensor): Promise<TensorData> {
    this.check();
    // `data()` works on every backend (`dataSync` does not on WebGPU in Node). Copy, because the cpu
    // backend hands out its own storage — which after a cast from int32 is still an Int32Array. The wasm
    // backend's `data()` is already a copy of its heap: copying again cost ≈ 5 µs per 4,096 floats, paid
    // by every serving step's readout.
    const tx = asTf(x);
    const data = await tx.data();
    const ofDtype = tx.dtype === 'int32' ? data instanceof Int32Array : data instanceof Float32Array;
    if (this.tfjsName === 'wasm' && ofDtype) return data as TensorData;
    if (tx.dtype === 'int32')
      return data instanceof Int32Array ? data.slice() : Int32Array.from(data as Float32Array);
    return data instanceof Float32Array ? data.slice() : Float32Array.from(data as Int32Array);
  }

  // ---- matrix products ----

  matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
    this.check();
    const ta = asTf(a);
    const tb = asTf(b);
    const transposeA = options.transposeA ?? false;
    const transposeB = options.transposeB ?? false;
    const inner = transposeA ? ta.shape[ta.rank - 2]! : ta.shape[ta.rank - 1]!;
    if (inner === 0 || ta.size === 0 || tb.size === 0) {
      // tfjs's kernels mishandle empty operands (the cpu one returns data for a zero-size batch).
      const rows = transposeA ? ta.shape[ta.rank - 1]! : ta.shape[ta.rank - 2]!;
      const cols = transposeB ? tb.shape[tb.rank - 2]! : tb.shape[tb.rank - 1]!;
      const batch = broadcastShape(ta.shape.slice(0, -2), tb.shape.slice(0, -2));
      return ours(tf.zeros([...batch, rows, cols]));
    }
    if (!transposeA && ta.rank > 2 && sizeOf(tb.shape.slice(0, -2)) === 1) {
      // NOTE: x [..., m, k] · W [k, n] as one [(…·m), k] · [k, n] product: tfjs's wasm backend runs
      // XNNPACK only for an unbatched, untransposed product (≈ 40× faster than its batched loop), and the
      // other backends lose nothing. The reshapes are free.
      const batch = broadcastShape(ta.shape.slice(0, -2), tb.shape.slice(0, -2));
      const [rows, depth] = ta.shape.slice(-2) as [number, number];
      return ours(
        tf.tidy(() => {
          const flatA = tf.reshape(ta, [-1, depth]);
          const flatB = tb.rank === 2 ? tb : tf.reshape(tb, tb.shape.slice(-2));
          const product = tf.matMul(flatA, flatB, false, transposeB);
          return tf.reshape(product, [...batch, rows, product.shape[1]!]);
        }),
      );
    }
    if (!batchesBroadcastSafely(ta.shape, tb.shape)) {
      // tfjs kernels flatten the batch dimensions and only broadcast a batch of one; broadcast explicitly.
      return ours(
        tf.tidy(() => {
          const batch = broadcastShape(ta.shape.slice(0, -2), tb.shape.slice(0, -2));
          const fullA = tf.broadcastTo(ta, [...batch, ...ta.shape.slice(-2)]);
          const fullB = tf.broadcastTo(tb, [...batch, ...tb.shape.slice(-2)]);
          return tf.matMul(fullA, fullB, transposeA, transposeB);
        }),
      );
    }
    return ours(tf.matMul(ta, tb, transposeA, transposeB));
  }

  // ---- elementwise ----

  add(a: Tensor, b: TensorOrScalar): Tensor {
    this.check();
    return this.binary(tf.add, a, b);
  }
  sub(a: Tensor, b: TensorOrScalar): Tensor {
    this.check();
    return this.binary(tf.sub, a, b);
  }
  mul(a: Tensor, b: TensorOrScalar): Tensor {
    this.check();
    return this.binary(tf.mul, a, b);
  }
  div(a: Tensor, b: TensorOrScalar): Tensor {
    this.check();
    return this.binary(tf.div, a, b);
  }
  maximum(a: Tensor, b: TensorOrScalar): Tensor {
    this.check();
    return this.binary(tf.maximum, a, b);
  }

  /** Applies a tfjs binary op; a number operand takes the tensor's dtype (tfjs would make it float32). */
  private binary(
    op: (a: tf.Tensor, b: tf.Tensor | number) => tf.Tensor,
    a: Tensor,
    b: TensorOrScalar,
  ): Tensor {
    const ta = asTf(a);
    if (typeof b !== 'number') return ours(op(ta, asTf(b)));
    if (ta.dtype === 'float32') return ours(op(ta, b));
    return ours(tf.tidy(() => op(ta, tf.scalar(b, ta.dtype))));
  }

  neg(x: Tensor): Tensor {
    this.check();
    return ours(tf.neg(asTf(x)));
  }
  exp(x: Tensor): Tensor {
    this.check();
    return ours(tf.exp(asTf(x)));
  }
  log(x: Tensor): Tensor {
    this.check();
    return ours(tf.log(asTf(x)));
  }
  sqrt(x: Tensor): Tensor {
    this.check();
    return ours(tf.sqrt(asTf(x)));
  }
  rsqrt(x: Tensor): Tensor {
    this.check();
    return ours(tf.rsqrt(asTf(x)));
  }
  square(x: Tensor): Tensor {
    this.check();
    return ours(tf.square(asTf(x)));
  }
  tanh(x: Tensor): Tensor {
    this.check();
    return ours(tf.tanh(asTf(x)));
  }
  sigmoid(x: Tensor): Tensor {
    this.check();
    return ours(tf.sigmoid(asTf(x)));
  }
  silu(x: Tensor): Tensor {
    this.check();
    const tx = asTf(x);
    return ours(tf.tidy(() => tf.mul(tx, tf.sigmoid(tx))));
  }
  geluTanh(x: Tensor): Tensor {
    this.check();
    const tx = asTf(x);
    const sqrtTwoOverPi = Math.sqrt(2 / Math.PI);
    return ours(
      tf.tidy(() => {
        // ½x(1 + tanh(√(2/π)(x + 0.044715x³))), with x + 0.044715x³ = x(1 + 0.044715x²).
        const inner = tf.mul(tf.mul(tx, tf.add(tf.mul(tf.square(tx), 0.044715), 1)), sqrtTwoOverPi);
        return tf.mul(tf.mul(tx, 0.5), tf.add(tf.tanh(inner), 1));
      }),
    );
  }
  gelu(x: Tensor): Tensor {
    this.check();
    if (this.fused()) return ours(tf.engine().runKernel(fusedKernelNames.gelu, { x: asTf(x) }) as tf.Tensor);
    return compositeGelu(this, x);
  }
  cast(x: Tensor, dtype: DType): Tensor {
    this.check();
    return ours(tf.cast(asTf(x), dtype));
  }

  // ---- reductions ----

  sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
    this.check();
    const tx = asTf(x);
    if (tx.size === 0) return emptyReduction(tx, axes, keepDims, 0);
    return ours(tf.sum(tx, tfAxes(axes), keepDims));
  }
  mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
    this.check();
    const tx = asTf(x);
    if (tx.size === 0) return emptyReduction(tx, axes, keepDims, Number.NaN);
    return ours(tf.mean(tx, tfAxes(axes), keepDims));
  }
  max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
    this.check();
    const tx = asTf(x);
    if (tx.size === 0) return emptyReduction(tx, axes, keepDims, Number.NEGATIVE_INFINITY);
    return ours(tf.max(tx, tfAxes(axes), keepDims));
  }
  /** `axis` defaults to the last axis (as for softmax and topk). */
  argmax(x: Tensor, axis = -1): Tensor {
    this.check();
    return ours(tf.argMax(asTf(x), axis));
  }
  topk(x: Tensor, k: number): TopK {
    this.check();
    const { values, indices } = tf.topk(asTf(x), k, true);
    return { values: ours(values), indices: ours(indices) };
  }

  // ---- normalisation and activations ----

  softmax(x: Tensor, axis = -1): Tensor {
    this.check();
    const tx = asTf(x);
    // tfjs's Softmax kernel only takes the last axis.
    if (normAxis(axis, tx.rank) === tx.rank - 1) return ours(tf.softmax(tx));
    return ours(
      tf.tidy(() => {
        const shifted = tf.exp(tf.sub(tx, tf.max(tx, axis, true)));
        return tf.div(shifted, tf.sum(shifted, axis, true));
      }),
    );
  }
  logSoftmax(x: Tensor, axis = -1): Tensor {
    this.check();
    const tx = asTf(x);
    if (normAxis(axis, tx.rank) === tx.rank - 1) return ours(tf.logSoftmax(tx));
    return ours(
      tf.tidy(() => {
        const shifted = tf.sub(tx, tf.max(tx, axis, true));
        return tf.sub(shifted, tf.log(tf.sum(tf.exp(shifted), axis, true)));
      }),
    );
  }
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    this.check();
    const tx = asTf(x);
    const tw = asTf(weight);
    if (this.fused()) {
      return ours(
        tf.engine().runKernel(fusedKernelNames.rmsNorm, { x: tx, weight: tw }, { eps }) as tf.Tensor,
      );
    }
    return ours(
      tf.tidy(() => {
        const inverseRms = tf.rsqrt(tf.add(tf.mean(tf.square(tx), -1, true), eps)); // [..., 1]
        return tf.mul(tf.mul(tx, inverseRms), tw);
      }),
    );
  }
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
    this.check();
    if (this.fused()) {
      return ours(
        tf
          .engine()
          .runKernel(
            fusedKernelNames.layerNorm,
            { x: asTf(x), weight: asTf(weight), bias: asTf(bias) },
            { eps },
          ) as tf.Tensor,
      );
    }
    return compositeLayerNorm(this, x, weight, bias, eps);
  }
  rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    this.check();
    const tx = asTf(x);
    const tc = asTf(cos);
    const ts = asTf(sin);
    // The fused RoPE has a gradient (the inverse rotation), so it runs while gradients are taken too.
    if (this.hasFusedKernels) {
      return ours(tf.engine().runKernel(fusedKernelNames.rope, { x: tx, cos: tc, sin: ts }) as tf.Tensor);
    }
    return ours(
      tf.tidy(() => {
        // The two halves [..., T, D/2]; slices rather than split, whose SplitV kernel has no gradient here.
        const halfWidth = tx.shape[tx.rank - 1]! / 2;
        const begin = new Array<number>(tx.rank).fill(0);
        const size = [...tx.shape.slice(0, -1), halfWidth];
        const first = tf.slice(tx, begin, size);
        const second = tf.slice(tx, [...begin.slice(0, -1), halfWidth], size);
        const rotatedFirst = tf.sub(tf.mul(first, tc), tf.mul(second, ts));
        const rotatedSecond = tf.add(tf.mul(second, tc), tf.mul(first, ts));
        return tf.concat([rotatedFirst, rotatedSecond], -1);
      }),
    );
  }
  attention(queries: Tensor, keys: Tensor, values: Tensor, options: AttentionOptions): Tensor {
    this.check();
    const [tq, tk, tv] = [asTf(queries), asTf(keys), asTf(values)];
    const keyLength = options.keyLength ?? tk.shape[1]!;
    if (
      tq.rank !== 4 ||
      tk.rank !== 4 ||
      tv.rank !== 4 ||
      tk.shape[0] !== tq.shape[0] ||
      tk.shape[3] !== tq.shape[3] ||
      tq.shape[2]! % tk.shape[2]! !== 0 ||
      tv.shape.some((dim, axis) => dim !== tk.shape[axis]) ||
      keyLength < 1 ||
      keyLength > tk.shape[1]! ||
      badScoreOptions(options)
    ) {
      throw new TensorDataError(
        'attention',
        `queries [B, T, H, D], keys and values [B, S, kvH, D] with kvH dividing H and 1 ≤ keyLength ≤ S expected; ` +
          `got queries [${tq.shape}], keys [${tk.shape}], values [${tv.shape}], keyLength ${keyLength}` +
          scoreOptionsText(options),
      );
    }
    // The fused attention has its own gradient kernel, so it runs while gradients are taken too.
    if (this.hasFusedKernels) {
      const attrs = {
        scale: options.scale,
        queryOffset: options.queryOffset,
        keyLength,
        window: options.window ?? 0,
        softCap: options.softCap ?? 0,
      };
      return ours(
        tf
          .engine()
          .runKernel(fusedKernelNames.attention, { queries: tq, keys: tk, values: tv }, attrs) as tf.Tensor,
      );
    }
    return compositeAttention(this, queries, keys, values, options);
  }
  pagedAttention(
    queries: Tensor,
    keyPool: Tensor,
    valuePool: Tensor,
    spans: readonly PagedAttentionSpan[],
    options: PagedAttentionOptions,
  ): Tensor {
    this.check();
    const [tq, tk, tv] = [asTf(queries), asTf(keyPool), asTf(valuePool)];
    if (
      tq.rank !== 4 ||
      tq.shape[0] !== 1 ||
      tk.rank !== 4 ||
      tk.shape[3] !== tq.shape[3] ||
      tq.shape[2]! % tk.shape[2]! !== 0 ||
      tv.rank !== 4 ||
      tv.shape.some((dim, axis) => dim !== tk.shape[axis]) ||
      badScoreOptions(options)
    ) {
      throw new TensorDataError(
        'pagedAttention',
        `queries [1, M, H, D], keyPool and valuePool [pages, pageSize, kvH, D] with kvH dividing H expected; ` +
          `got queries [${tq.shape}], keyPool [${tk.shape}], valuePool [${tv.shape}]` +
          scoreOptionsText(options),
      );
    }
    const [pages, pageSize] = tk.shape as [number, number];
    let rows = 0;
    for (const [index, span] of spans.entries()) {
      const { keyLength, queryOffset } = span;
      const needed = Math.ceil(keyLength / pageSize);
      const badPage = span.pages
        .slice(0, needed)
        .find((page) => !Number.isInteger(page) || page < 0 || page >= pages);
      if (
        !Number.isInteger(span.rows) ||
        span.rows < 1 ||
        !Number.isInteger(queryOffset) ||
        queryOffset < 0 ||
        !Number.isInteger(keyLength) ||
        keyLength < 1 ||
        span.pages.length < needed ||
        badPage !== undefined
      ) {
        throw new TensorDataError(
          'pagedAttention',
          `span ${index}: rows ≥ 1, queryOffset ≥ 0, keyLength ≥ 1 and ⌈keyLength / ${pageSize}⌉ page ids in ` +
            `0…${pages - 1} expected; got rows ${span.rows}, queryOffset ${queryOffset}, keyLength ${keyLength}, ` +
            `pages [${span.pages}]`,
        );
      }
      rows += span.rows;
    }
    if (rows !== tq.shape[1]) {
      throw new TensorDataError('pagedAttention', `the spans hold ${rows} rows, the queries ${tq.shape[1]}`);
    }
    // The WGSL kernel knows the scale only: a window or soft-cap takes the composite there. The wasm SIMD
    // and JS kernels take every option, as their contiguous twins do (bit-identical to them).
    const onlyScale = Object.entries(options).every(([key, value]) => key === 'scale' || value === undefined);
    const table: number[] = [];
    for (const span of spans) {
      const needed = Math.ceil(span.keyLength / pageSize);
      table.push(span.rows, span.queryOffset, span.keyLength, ...span.pages.slice(0, needed));
    }
    if (this.hasWebgpuKernels && this.gradientDepth === 0 && onlyScale) {
      const rowInfo = tf.tensor1d(webgpuRowInfo(spans.length, table, pageSize), 'int32');
      const output = tf
        .engine()
        .runKernel(
          webgpuPagedAttentionKernel,
          { queries: tq, keyPool: tk, valuePool: tv, rowInfo },
          { scale: options.scale },
        ) as tf.Tensor;
      rowInfo.dispose();
      return ours(output);
    }
    if (this.fused()) {
      const attrs = {
        scale: options.scale,
        spans: spans.length,
        table,
        ...(options.window !== undefined ? { window: options.window } : {}),
        ...(options.softCap !== undefined ? { softCap: options.softCap } : {}),
      };
      return ours(
        tf
          .engine()
          .runKernel(
            fusedKernelNames.pagedAttention,
            { queries: tq, keyPool: tk, valuePool: tv },
            attrs as unknown as tf.NamedAttrMap,
          ) as tf.Tensor,
      );
    }
    return compositePagedAttention(this, queries, keyPool, valuePool, spans, options);
  }
  gatedActivation(gate: Tensor, up: Tensor, activation: GateActivation): Tensor {
    this.check();
    const [tg, tu] = [asTf(gate), asTf(up)];
    if (tg.shape.length !== tu.shape.length || tg.shape.some((dim, axis) => dim !== tu.shape[axis])) {
      throw new TensorDataError(
        'gatedActivation',
        `gate [${tg.shape}] and up [${tu.shape}] must have one shape`,
      );
    }
    if (this.fused()) {
      return ours(
        tf
          .engine()
          .runKernel(fusedKernelNames.gatedActivation, { gate: tg, up: tu }, { activation }) as tf.Tensor,
      );
    }
    return compositeGatedActivation(this, gate, up, activation);
  }
  addLowRank(
    base: Tensor,
    x: Tensor,
    aRows: Tensor,
    bRows: Tensor,
    segments: readonly LowRankSegment[],
  ): Tensor {
    this.check();
    const [tBase, tx, ta, tb] = [asTf(base), asTf(x), asTf(aRows), asTf(bRows)];
    const [rows, out] = tBase.shape as [number, number];
    const [width, inner] = ta.shape as [number, number];
    if (
      [tBase, tx, ta, tb].some((t) => t.rank !== 2 || t.dtype !== 'float32') ||
      tx.shape[0] !== rows ||
      tx.shape[1] !== inner ||
      tb.shape[0] !== width ||
      tb.shape[1] !== out
    ) {
      throw new TensorDataError(
        'addLowRank',
        `float32 base [M, out], x [M, in], aRows [W, in] and bRows [W, out] expected; got base ` +
          `[${tBase.shape}], x [${tx.shape}], aRows [${ta.shape}], bRows [${tb.shape}]`,
      );
    }
    let covered = 0;
    for (const [index, { rows: count, start, rank, scale }] of segments.entries()) {
      if (
        !Number.isInteger(count) ||
        count < 1 ||
        !Number.isInteger(rank) ||
        rank < 0 ||
        (rank > 0 && (!Number.isInteger(start) || start < 0 || start + rank > width)) ||
        !Number.isFinite(scale)
      ) {
        throw new TensorDataError(
          'addLowRank',
          `segment ${index}: rows ≥ 1, rank ≥ 0, start … start + rank − 1 within the ${width} adapter rows ` +
            `and a finite scale expected; got rows ${count}, start ${start}, rank ${rank}, scale ${scale}`,
        );
      }
      covered += count;
    }
    if (covered !== rows) {
      throw new TensorDataError('addLowRank', `the segments hold ${covered} rows, base ${rows}`);
    }
    if (this.fused()) {
      const attrs = {
        table: segments.flatMap(({ rows: count, start, rank }) => [count, rank > 0 ? start : 0, rank]),
        scales: segments.map(({ scale }) => scale),
      };
      return ours(
        tf
          .engine()
          .runKernel(
            fusedKernelNames.addLowRank,
            { base: tBase, x: tx, aRows: ta, bRows: tb },
            attrs as unknown as tf.NamedAttrMap,
          ) as tf.Tensor,
      );
    }
    return compositeAddLowRank(this, base, x, aRows, bRows, segments);
  }
  causalMask(queryLength: number, keyLength: number, offset: number): Tensor {
    this.check();
    const values = new Float32Array(queryLength * keyLength);
    for (let i = 0; i < queryLength; i++) {
      const last = offset + i; // the last key position query i may see
      for (let j = last + 1; j < keyLength; j++) values[i * keyLength + j] = MASKED;
    }
    return ours(tf.tensor(values, [queryLength, keyLength], 'float32'));
  }

  // ---- indexing and layout ----

  gather(table: Tensor, indices: Tensor, axis = 0): Tensor {
    this.check();
    const [tt, ti] = [asTf(table), asTf(indices)];
    // Rows of a float32 or int32 table: one copy per row on cpu and wasm (`RrtGatherRows`, no gradient:
    // tfjs's gather serves valueAndGrad, and everything else).
    if (
      this.fused() &&
      tt.rank >= 1 &&
      normAxis(axis, tt.rank) === 0 &&
      ti.dtype === 'int32' &&
      ti.size > 0 &&
      (tt.dtype === 'float32' || tt.dtype === 'int32')
    ) {
      return ours(
        tf.engine().runKernel(fusedKernelNames.gatherRows, { table: tt, indices: ti }) as tf.Tensor,
      );
    }
    return ours(tf.gather(tt, ti, axis));
  }
  slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
    this.check();
    return ours(tf.slice(asTf(x), [...begin], [...size]));
  }
  concat(xs: readonly Tensor[], axis: number): Tensor {
    this.check();
    return ours(tf.concat(asTfList(xs), axis));
  }
  reshape(x: Tensor, shape: Shape): Tensor {
    this.check();
    return ours(tf.reshape(asTf(x), [...shape]));
  }
  transpose(x: Tensor, perm?: readonly number[]): Tensor {
    this.check();
    return ours(tf.transpose(asTf(x), perm === undefined ? undefined : [...perm]));
  }
  stack(xs: readonly Tensor[], axis = 0): Tensor {
    this.check();
    return ours(tf.stack(asTfList(xs), axis));
  }
  where(condition: Tensor, a: Tensor, b: Tensor): Tensor {
    this.check();
    const tc = asTf(condition);
    return ours(tf.tidy(() => tf.where(tf.cast(tc, 'bool'), asTf(a), asTf(b))));
  }

  // ---- the one mutation ----

  writeRows(target: Tensor, indices: ArrayLike<number>, rows: Tensor): void {
    this.check();
    const [tt, tr] = [asTf(target), asTf(rows)];
    if (indices.length === 0 && tr.size === 0) return;
    // rowShape: the trailing axes of `target` that hold size(rows) / M values, and that `rows` ends with.
    const rowSize = indices.length > 0 ? tr.size / indices.length : Number.NaN;
    let lead = tt.rank;
    while (lead > 0 && sizeOf(tt.shape.slice(lead)) < rowSize) lead--;
    const rowShape = tt.shape.slice(lead);
    const positions = sizeOf(tt.shape.slice(0, lead));
    if (
      tt.dtype !== 'float32' ||
      tr.dtype !== 'float32' ||
      lead < 1 ||
      sizeOf(rowShape) !== rowSize ||
      rowShape.length > tr.rank ||
      rowShape.some((dim, axis) => dim !== tr.shape[tr.rank - rowShape.length + axis])
    ) {
      throw new TensorDataError(
        'writeRows',
        `float32 rows [M, ...rowShape] (or [..., ...rowShape] of M rows) with M = indices.length into a ` +
          `float32 target [...lead, ...rowShape]; got target [${tt.shape}] ${tt.dtype}, rows [${tr.shape}] ` +
          `${tr.dtype}, ${indices.length} indices`,
      );
    }
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i]!;
      if (!Number.isInteger(index) || index < 0 || index >= positions) {
        throw new TensorDataError(
          'writeRows',
          `index ${index} (entry ${i}) outside the target's ${positions} rows`,
        );
      }
    }
    if ((tt as tf.Variable).trainable !== undefined) {
      throw new TensorDataError('writeRows', 'the target is a Variable; change variables with assign()');
    }
    writeRowsInPlace(tt, indices, tr);
  }

  // ---- memory ----

  // biome-ignore lint/suspicious/noConfusingVoidType: the signature of Backend.tidy, which allows a void scope
  tidy<T extends Tensor | Tensor[] | Record<string, Tensor> | void>(fn: () => T): T {
    this.check();
    return tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
  }
  keep<T extends Tensor>(x: T): T {
    return tf.keep(asTf(x)) as unknown as T;
  }
  dispose(x: Tensor | readonly Tensor[] | Record<string, Tensor>): void {
    tf.dispose(x as unknown as tf.TensorContainer);
  }
  numTensors(): number {
    return tf.memory().numTensors;
  }

  // ---- training ----

  variable(initial: Tensor, name?: string): Variable {
    this.check();
    // tfjs requires unique variable names engine-wide; keep the caller's name when it is free.
    const registered = tf.engine().registeredVariables;
    let unique = name;
    if (name !== undefined && registered[name] !== undefined) {
      let n = 1;
      while (registered[`${name}_${n}`] !== undefined) n++;
      unique = `${name}_${n}`;
    }
    return tf.variable(asTf(initial), true, unique) as unknown as Variable;
  }
  assign(variable: Variable, value: Tensor): void {
    this.check();
    // tfjs shares the value's storage by reference count: disposing `value` later is safe.
    (variable as unknown as tf.Variable).assign(asTf(value));
  }
  valueAndGrad(f: () => Tensor, variables: readonly Variable[]): ValueAndGrad {
    this.check();
    const xs = variables as unknown as tf.Variable[];
    this.gradientDepth++;
    let result: { value: tf.Tensor; grads: (tf.Tensor | null)[] };
    try {
      result = tf.engine().gradients(() => asTf(f()), xs, undefined, /* allowNoGradients */ true);
    } finally {
      this.gradientDepth--;
    }
    const { value, grads } = result;
    // A variable that does not reach the value gets a zero gradient rather than null.
    const filled = grads.map((grad, i) => grad ?? tf.zerosLike(xs[i]!));
    return { value: ours(value), grads: filled.map(ours) };
  }
}

/**
 * A reduction of a tensor with no elements: `identity` (0 for sum, NaN for mean, −∞ for max) wherever
 * the output has elements. tfjs's wasm kernels return uninitialised memory there.
 */
function emptyReduction(
  x: tf.Tensor,
  axes: number | readonly number[] | undefined,
  keepDims: boolean,
  identity: number,
): Tensor {
  const rank = x.rank;
  const reduced =
    axes === undefined
      ? x.shape.map((_, axis) => axis)
      : (typeof axes === 'number' ? [axes] : [...axes]).map((axis) => normAxis(axis, rank));
  const shape = keepDims
    ? x.shape.map((dim, axis) => (reduced.includes(axis) ? 1 : dim))
    : x.shape.filter((_, axis) => !reduced.includes(axis));
  if (x.dtype === 'int32' && !Number.isNaN(identity)) {
    return ours(tf.fill(shape, Number.isFinite(identity) ? identity : -2147483648, 'int32'));
  }
  return ours(tf.fill(shape, identity, 'float32'));
}

/** Whether tfjs's BatchMatMul kernels handle these batch dimensions without explicit broadcasting. */
function batchesBroadcastSafely(aShape: readonly number[], bShape: readonly number[]): boolean {
  const batchA = aShape.slice(0, -2);
  const batchB = bShape.slice(0, -2);
  // The kernels flatten the batch dimensions and pair batch i with i, or broadcast a batch of one.
  if (sizeOf(batchA) === 1 || sizeOf(batchB) === 1) return true;
  const rank = Math.max(batchA.length, batchB.length);
  const padA = [...new Array(rank - batchA.length).fill(1), ...batchA];
  const padB = [...new Array(rank - batchB.length).fill(1), ...batchB];
  return padA.every((dim, axis) => dim === padB[axis]);
}

/** NumPy broadcast of two shapes (the shapes are validated by tfjs afterwards). */
function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Whether a `window` (an integer ≥ 1) or `softCap` (> 0) of attention's options is out of range. */
function badScoreOptions(options: PagedAttentionOptions): boolean {
  return (
    (options.window !== undefined && !(Number.isInteger(options.window) && options.window >= 1)) ||
    (options.softCap !== undefined && !(options.softCap > 0))
  );
}

/** The `window` and `softCap` given, with what each must be, for a shape error's message. */
function scoreOptionsText(options: PagedAttentionOptions): string {
  return (
    (options.window !== undefined ? `, window ${options.window} (an integer ≥ 1)` : '') +
    (options.softCap !== undefined ? `, softCap ${options.softCap} (> 0)` : '')
  );
}
