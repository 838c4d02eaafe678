/**
 * The arithmetic of a conversion on plain typed arrays: encoding to a storage dtype and back, means,
 * residuals and low-rank products. Everything that feeds a LoRA runs in float64.
 *
 * @module
 */
import { type RawTensor, toFloat32 } from '@rrt/core';
import type { Backend, Tensor } from '@rrt/tensor';
import { decodeBfloat16, decodeFloat16, encodeFloat16 } from '@rrt/tensor';

/** The float dtypes a converted checkpoint stores (safetensors spelling). */
export type FloatDType = 'F32' | 'F16' | 'BF16';

/** `config.json`'s `torch_dtype` spelling of each {@link FloatDType}. */
export const torchDtypeNames: Readonly<Record<FloatDType, string>> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
};

/** Whether a safetensors dtype is one of the {@link FloatDType}s. */
export function isFloatDType(dtype: string): dtype is FloatDType {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/**
 * Values as the little-endian bytes of `dtype`, rounded once to nearest even (float64 inputs are not
 * rounded to float32 first, which would round twice).
 */
export function encodeValues(values: Float32Array | Float64Array, dtype: FloatDType): Uint8Array {
  if (dtype === 'F32') {
    const f32 = values instanceof Float32Array ? values : Float32Array.from(values);
    return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  }
  return dtype === 'F16' ? encodeFloat16(values) : encodeBfloat16Fast(values);
}

const roundScratch = new Float32Array(1);
const roundScratchBits = new Uint32Array(roundScratch.buffer);

/**
 * Little-endian bfloat16 bytes of `values`, rounded once to nearest even, as `encodeBfloat16` of
 * `@rrt/tensor` does but about 10× faster on float64 input (that one takes a slow exact path for every
 * value that is not a float32).
 *
 * NOTE: why rounding through float32 is exact here. Every bfloat16 midpoint is a float32, and rounding is
 * monotonic, so `fround(v)` lands on the same side of a midpoint as `v` or on the midpoint itself. Only in
 * that last case can the float32 step lose the information (a tie that `v` did not have): then the
 * direction is taken from `v − fround(v)`.
 */
export function encodeBfloat16Fast(values: Float32Array | Float64Array): Uint8Array {
  const out = new Uint16Array(values.length);
  const exact = values instanceof Float32Array;
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    roundScratch[0] = value;
    const bits = roundScratchBits[0]!;
    if ((bits & 0x7fffffff) > 0x7f800000) {
      out[i] = ((bits >>> 16) | 0x40) & 0xffff; // NaN stays a quiet NaN
      continue;
    }
    let rounded = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
    if (!exact && (bits & 0xffff) === 0x8000) {
      const rest = value - roundScratch[0]!; // exact: both are doubles near each other
      if (rest !== 0) {
        // Away from zero when |v| is above the midpoint, towards zero when below.
        const above = value > 0 ? rest > 0 : rest < 0;
        rounded = (bits >>> 16) + (above ? 1 : 0);
      }
    }
    out[i] = rounded & 0xffff;
  }
  return new Uint8Array(out.buffer);
}

/** The values stored in `bytes` of `dtype`, as a new Float32Array (exact: every such value is a float32). */
export function decodeValues(bytes: Uint8Array, dtype: FloatDType): Float32Array {
  if (dtype === 'F16') return decodeFloat16(bytes);
  if (dtype === 'BF16') return decodeBfloat16(bytes);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** A checkpoint tensor's bytes as `dtype`: passed through untouched when it is stored so already. */
export function bytesAs(raw: RawTensor, dtype: FloatDType): Uint8Array {
  return raw.dtype === dtype ? raw.bytes : storeAs(toFloat32(raw), dtype).bytes;
}

/** Values encoded as `dtype` and the values those bytes hold: what a reader of the output will see. */
export function storeAs(
  values: Float32Array | Float64Array,
  dtype: FloatDType,
): { bytes: Uint8Array; stored: Float32Array } {
  const bytes = encodeValues(values, dtype);
  return {
    bytes,
    stored: dtype === 'F32' && values instanceof Float32Array ? values : decodeValues(bytes, dtype),
  };
}

/** Adds `values` into the float64 accumulator `sum`. */
export function accumulate(sum: Float64Array, values: Float32Array): void {
  for (let i = 0; i < sum.length; i++) sum[i]! += values[i]!;
}

/** Σ x² in float64. */
export function sumOfSquares(values: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < values.length; i++) total += values[i]! * values[i]!;
  return total;
}

/**
 * The factors that fold a per-loop RMSNorm weight into the next linear layer. A linear layer after an
 * RMSNorm computes `W · diag(g) · x̂`; the relaxed model applies the shared norm `g_s` at every loop, so
 * the loop's original map `W_l · diag(g_l)` equals `(W_l · diag(g_l / g_s)) · diag(g_s)`. The LoRA
 * target is then `W_l · diag(g_l / g_s)`, which makes the full-rank relaxed model exact even though the
 * norms are shared. Where `g_s` is 0 the column never reaches the output and the factor is irrelevant;
 * it is reported as `unrepresentable` when the original norm there is not 0 too, and the factor set so
 * that the target column equals the shared one.
 *
 * `addOne`: Gemma's RMSNorm scales by `1 + w`, so the gains are `1 + w` there.
 */
export function normFoldFactors(
  original: Float32Array,
  shared: Float32Array,
  addOne: boolean,
): { factors: Float64Array; unrepresentable: number[]; identity: boolean } {
  const factors = new Float64Array(original.length);
  const unrepresentable: number[] = [];
  let identity = true;
  for (let j = 0; j < original.length; j++) {
    const gOriginal = original[j]! + (addOne ? 1 : 0);
    const gShared = shared[j]! + (addOne ? 1 : 0);
    if (gShared === 0) {
      factors[j] = Number.NaN; // marks "use the shared column" for foldedTarget
      if (gOriginal !== 0) unrepresentable.push(j);
      identity = false;
    } else {
      factors[j] = gOriginal / gShared;
      if (factors[j] !== 1) identity = false;
    }
  }
  return { factors, unrepresentable, identity };
}

/**
 * The residual `target · diag(factors) − shared` of an `[out, in]` weight in float64, with the norm
 * factors of {@link normFoldFactors} folded in (none: factor 1); columns whose factor is NaN take the
 * shared column, a zero residual. Also returns ‖target · diag(factors)‖²_F.
 */
export function foldedResidual(
  target: Float32Array,
  shared: Float32Array,
  inFeatures: number,
  factors: Float64Array | undefined,
): { values: Float64Array; targetSquared: number } {
  const values = new Float64Array(target.length);
  let targetSquared = 0;
  for (let i = 0; i < target.length; i++) {
    const factor = factors ? factors[i % inFeatures]! : 1;
    const t = Number.isNaN(factor) ? shared[i]! : target[i]! * factor;
    targetSquared += t * t;
    values[i] = t - shared[i]!;
  }
  return { values, targetSquared };
}

/**
 * ‖R − scale · B · A‖²_F for `R: [rows, cols]`, `B: [rows, rank]`, `A: [rank, cols]`. The product runs on
 * `backend` (float32 matmul) when one is given and the product is large, else in float64 here; the
 * difference and the sum are always float64.
 */
export async function lowRankErrorSquared(
  r: Float64Array,
  b: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
  rank: number,
  scale: number,
  backend?: Backend,
): Promise<number> {
  if (rank === 0) return sumOfSquares(r);
  const product = await lowRankProductOnBackend(b, a, rows, cols, rank, backend);
  if (product) {
    let total = 0;
    for (let i = 0; i < product.length; i++) {
      const difference = r[i]! - scale * product[i]!;
      total += difference * difference;
    }
    return total;
  }
  let total = 0;
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    row.fill(0);
    addScaledProductRow(row, i, b, a, cols, rank, scale);
    const offset = i * cols;
    for (let j = 0; j < cols; j++) {
      const difference = r[offset + j]! - row[j]!;
      total += difference * difference;
    }
  }
  return total;
}

/**
 * `base + scale · B · A` for `base: [rows, cols]`, in float64 (the product on `backend` in float32 when
 * one is given and the product is large).
 */
export async function addLowRank(
  base: Float32Array,
  b: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
  rank: number,
  scale: number,
  backend?: Backend,
): Promise<Float64Array> {
  const out = Float64Array.from(base);
  const product = await lowRankProductOnBackend(b, a, rows, cols, rank, backend);
  if (product) {
    for (let i = 0; i < out.length; i++) out[i]! += scale * product[i]!;
    return out;
  }
  for (let i = 0; i < rows; i++) {
    addScaledProductRow(out.subarray(i * cols, (i + 1) * cols), i, b, a, cols, rank, scale);
  }
  return out;
}

/** Products with more multiply-adds than this run on the backend, when one is given. */
const BACKEND_PRODUCT_MIN_WORK = 4_000_000;

/**
 * `B · A` (`B: [rows, rank]`, `A: [rank, cols]`) computed on `backend` in float32, or `undefined` when no
 * backend is given or the product is too small to be worth the upload (the caller then runs it in
 * float64). Every tensor it makes is disposed, also when the upload, the matmul or the read throws.
 */
async function lowRankProductOnBackend(
  b: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
  rank: number,
  backend: Backend | undefined,
): Promise<Float32Array | undefined> {
  if (!backend || rows * cols * rank <= BACKEND_PRODUCT_MIN_WORK) return undefined;
  const created: Tensor[] = [];
  try {
    const bt = backend.fromArray(b, [rows, rank]);
    created.push(bt);
    const at = backend.fromArray(a, [rank, cols]);
    created.push(at);
    const product = backend.matmul(bt, at);
    created.push(product);
    return (await backend.read(product)) as Float32Array;
  } finally {
    backend.dispose(created);
  }
}

/** Adds row `i` of `scale · B · A` into `row` (`cols` values), in float64. */
function addScaledProductRow(
  row: Float64Array,
  i: number,
  b: Float32Array,
  a: Float32Array,
  cols: number,
  rank: number,
  scale: number,
): void {
  for (let k = 0; k < rank; k++) {
    const coefficient = scale * b[i * rank + k]!;
    if (coefficient === 0) continue;
    const offset = k * cols;
    for (let j = 0; j < cols; j++) row[j]! += coefficient * a[offset + j]!;
  }
}
