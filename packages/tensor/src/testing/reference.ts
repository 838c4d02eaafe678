/**
 * Float64 reference implementations of every {@link Backend} op, written plainly (index arithmetic, no
 * cleverness) so that they can be checked by eye. The conformance suite compares backends against them.
 *
 * @module
 */
import type { PagedAttentionSpan, Shape } from '../backend.js';
import { sizeOf } from '../shape.js';

/** A float64 n-dimensional array: row-major `data` of `shape`. */
export interface RefArray {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

/** Makes a {@link RefArray}, checking the element count. */
export function refArray(shape: Shape, data: ArrayLike<number>): RefArray {
  if (data.length !== sizeOf(shape)) throw new Error(`refArray: ${data.length} values for shape [${shape}]`);
  return { shape: [...shape], data: Float64Array.from(data) };
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length).fill(1);
  for (let axis = shape.length - 2; axis >= 0; axis--) strides[axis] = strides[axis + 1]! * shape[axis + 1]!;
  return strides;
}

/** Multi-index of flat position `flat` in `shape`. */
function unravel(flat: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length).fill(0);
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    const dim = shape[axis]!;
    index[axis] = flat % dim;
    flat = Math.floor(flat / dim);
  }
  return index;
}

/** NumPy broadcast of shapes; throws when they do not broadcast. */
export function broadcastShapes(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let dim = 1;
    for (const shape of shapes) {
      const d = shape[shape.length - rank + i] ?? 1;
      if (d !== 1) {
        if (dim !== 1 && dim !== d) throw new Error(`shapes [${shapes.join('] [')}] do not broadcast`);
        dim = d;
      }
    }
    out.push(dim);
  }
  return out;
}

/** For each flat index of `outShape`, the flat index of the broadcast source element of `inShape`. */
function broadcastSource(inShape: readonly number[], outShape: readonly number[]): Int32Array {
  const lead = outShape.length - inShape.length;
  const inStrides = stridesOf(inShape);
  const map = new Int32Array(sizeOf(outShape));
  for (let flat = 0; flat < map.length; flat++) {
    const index = unravel(flat, outShape);
    let source = 0;
    for (let axis = 0; axis < inShape.length; axis++) {
      if (inShape[axis] !== 1) source += index[axis + lead]! * inStrides[axis]!;
    }
    map[flat] = source;
  }
  return map;
}

/** Elementwise `f(a, b)` with broadcasting. */
export function binaryRef(a: RefArray, b: RefArray, f: (x: number, y: number) => number): RefArray {
  const shape = broadcastShapes(a.shape, b.shape);
  const fromA = broadcastSource(a.shape, shape);
  const fromB = broadcastSource(b.shape, shape);
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) data[i] = f(a.data[fromA[i]!]!, b.data[fromB[i]!]!);
  return { shape, data };
}

/** Elementwise `f(x)`. */
export function unaryRef(x: RefArray, f: (v: number) => number): RefArray {
  return { shape: x.shape, data: x.data.map(f) };
}

/** `condition ? a : b` elementwise with broadcasting (condition nonzero = true). */
export function whereRef(condition: RefArray, a: RefArray, b: RefArray): RefArray {
  const shape = broadcastShapes(condition.shape, a.shape, b.shape);
  const fromC = broadcastSource(condition.shape, shape);
  const fromA = broadcastSource(a.shape, shape);
  const fromB = broadcastSource(b.shape, shape);
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    data[i] = condition.data[fromC[i]!] ? a.data[fromA[i]!]! : b.data[fromB[i]!]!;
  }
  return { shape, data };
}

/** Batched matrix product with broadcast batch dimensions and transpose flags. */
export function matmulRef(a: RefArray, b: RefArray, transposeA = false, transposeB = false): RefArray {
  const [m, k] = transposeA ? [a.shape.at(-1)!, a.shape.at(-2)!] : [a.shape.at(-2)!, a.shape.at(-1)!];
  const [k2, n] = transposeB ? [b.shape.at(-1)!, b.shape.at(-2)!] : [b.shape.at(-2)!, b.shape.at(-1)!];
  if (k !== k2) throw new Error(`matmulRef: inner dimensions ${k} and ${k2} differ`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batchA = broadcastSource(a.shape.slice(0, -2), batch);
  const batchB = broadcastSource(b.shape.slice(0, -2), batch);
  const out = new Float64Array(sizeOf(batch) * m * n);
  const aRows = a.shape.at(-2)!;
  const aCols = a.shape.at(-1)!;
  const bRows = b.shape.at(-2)!;
  const bCols = b.shape.at(-1)!;
  for (let p = 0; p < sizeOf(batch); p++) {
    const offA = batchA[p]! * aRows * aCols;
    const offB = batchB[p]! * bRows * bCols;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let l = 0; l < k; l++) {
          const av = transposeA ? a.data[offA + l * aCols + i]! : a.data[offA + i * aCols + l]!;
          const bv = transposeB ? b.data[offB + j * bCols + l]! : b.data[offB + l * bCols + j]!;
          acc += av * bv;
        }
        out[(p * m + i) * n + j] = acc;
      }
    }
  }
  return { shape: [...batch, m, n], data: out };
}

/** The same product over absolute values: `Σ|a||b|` per output element, the scale of float32 round-off. */
export function matmulAbsRef(a: RefArray, b: RefArray, transposeA = false, transposeB = false): RefArray {
  return matmulRef(unaryRef(a, Math.abs), unaryRef(b, Math.abs), transposeA, transposeB);
}

/** Non-negative, sorted axes from an `axes` argument (undefined: all). */
export function normalizeAxes(axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : [...axes];
  return list.map((axis) => (axis < 0 ? axis + rank : axis)).sort((p, q) => p - q);
}

/** Reduction of `x` over `axes` with `combine`, starting from `init`. */
export function reduceRef(
  x: RefArray,
  axes: number | readonly number[] | undefined,
  keepDims: boolean,
  init: number,
  combine: (acc: number, v: number) => number,
): RefArray {
  const reduced = normalizeAxes(axes, x.shape.length);
  const keptShape = x.shape.map((dim, axis) => (reduced.includes(axis) ? 1 : dim));
  const outShape = keepDims ? keptShape : x.shape.filter((_, axis) => !reduced.includes(axis));
  const keptStrides = stridesOf(keptShape);
  const data = new Float64Array(sizeOf(keptShape)).fill(init);
  for (let flat = 0; flat < x.data.length; flat++) {
    const index = unravel(flat, x.shape);
    let target = 0;
    index.forEach((v, axis) => {
      if (!reduced.includes(axis)) target += v * keptStrides[axis]!;
    });
    data[target] = combine(data[target]!, x.data[flat]!);
  }
  return { shape: outShape, data };
}

/** Sum over axes. */
export const sumRef = (x: RefArray, axes?: number | readonly number[], keepDims = false): RefArray =>
  reduceRef(x, axes, keepDims, 0, (acc, v) => acc + v);

/** Mean over axes. */
export function meanRef(x: RefArray, axes?: number | readonly number[], keepDims = false): RefArray {
  const count = normalizeAxes(axes, x.shape.length).reduce((n, axis) => n * x.shape[axis]!, 1);
  return unaryRef(sumRef(x, axes, keepDims), (v) => v / count);
}

/** Maximum over axes. */
export const maxRef = (x: RefArray, axes?: number | readonly number[], keepDims = false): RefArray =>
  reduceRef(x, axes, keepDims, Number.NEGATIVE_INFINITY, Math.max);

/** Moves `axis` last, applies `f` to each row, and moves it back. */
function alongAxis(x: RefArray, axis: number, f: (row: Float64Array) => Float64Array): RefArray {
  const rank = x.shape.length;
  const a = axis < 0 ? axis + rank : axis;
  const perm = [...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== a), a];
  const moved = transposeRef(x, perm);
  const width = x.shape[a]!;
  const data = new Float64Array(moved.data.length);
  for (let start = 0; start < data.length; start += width) {
    data.set(f(moved.data.subarray(start, start + width)), start);
  }
  const inverse: number[] = [];
  perm.forEach((to, from) => {
    inverse[to] = from;
  });
  return transposeRef({ shape: moved.shape, data }, inverse);
}

/** Softmax along `axis`. */
export function softmaxRef(x: RefArray, axis = -1): RefArray {
  return alongAxis(x, axis, (row) => {
    const top = Math.max(...row);
    const e = row.map((v) => Math.exp(v - top));
    const total = e.reduce((s, v) => s + v, 0);
    return e.map((v) => v / total);
  });
}

/** Log-softmax along `axis`. */
export function logSoftmaxRef(x: RefArray, axis = -1): RefArray {
  return alongAxis(x, axis, (row) => {
    const top = Math.max(...row);
    const logTotal = Math.log(row.reduce((s, v) => s + Math.exp(v - top), 0));
    return row.map((v) => v - top - logTotal);
  });
}

/** Index of the maximum along `axis` (first on ties); the axis is removed. */
export function argmaxRef(x: RefArray, axis = -1): RefArray {
  const rank = x.shape.length;
  const a = axis < 0 ? axis + rank : axis;
  const moved = alongAxis(x, a, (row) => {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    return new Float64Array(row.length).fill(best);
  });
  // Every entry along the axis now holds the argmax; take the first.
  return sliceRef(
    moved,
    new Array(rank).fill(0),
    x.shape.map((d, i) => (i === a ? 1 : d)),
    a,
  );
}

/** RMSNorm over the last axis. */
export function rmsNormRef(x: RefArray, weight: RefArray, eps: number): RefArray {
  const width = x.shape.at(-1)!;
  const data = new Float64Array(x.data.length);
  for (let start = 0; start < data.length; start += width) {
    let sumSquares = 0;
    for (let i = 0; i < width; i++) sumSquares += x.data[start + i]! ** 2;
    const scale = 1 / Math.sqrt(sumSquares / width + eps);
    for (let i = 0; i < width; i++) data[start + i] = x.data[start + i]! * scale * weight.data[i]!;
  }
  return { shape: x.shape, data };
}

/** LayerNorm over the last axis, biased variance (two passes, float64). */
export function layerNormRef(x: RefArray, weight: RefArray, bias: RefArray, eps: number): RefArray {
  const width = x.shape.at(-1)!;
  const data = new Float64Array(x.data.length);
  for (let start = 0; start < data.length; start += width) {
    let sum = 0;
    for (let i = 0; i < width; i++) sum += x.data[start + i]!;
    const mean = sum / width;
    let squares = 0;
    for (let i = 0; i < width; i++) squares += (x.data[start + i]! - mean) ** 2;
    const scale = 1 / Math.sqrt(squares / width + eps);
    for (let i = 0; i < width; i++) {
      data[start + i] = (x.data[start + i]! - mean) * scale * weight.data[i]! + bias.data[i]!;
    }
  }
  return { shape: x.shape, data };
}

/** RoPE, rotate-half layout: `[x₁·cos − x₂·sin, x₂·cos + x₁·sin]` with `cos`, `sin` broadcasting. */
export function ropeRef(x: RefArray, cos: RefArray, sin: RefArray): RefArray {
  const width = x.shape.at(-1)!;
  const halfWidth = width / 2;
  const halfShape = [...x.shape.slice(0, -1), halfWidth];
  const first = sliceRef(x, new Array(x.shape.length).fill(0), halfShape);
  const second = sliceRef(x, [...new Array(x.shape.length - 1).fill(0), halfWidth], halfShape);
  const sub = (p: number, q: number) => p - q;
  const add = (p: number, q: number) => p + q;
  const mul = (p: number, q: number) => p * q;
  const rotatedFirst = binaryRef(binaryRef(first, cos, mul), binaryRef(second, sin, mul), sub);
  const rotatedSecond = binaryRef(binaryRef(second, cos, mul), binaryRef(first, sin, mul), add);
  return concatRef([rotatedFirst, rotatedSecond], -1);
}

/** Additive causal mask: 0 where `j ≤ offset + i`, −∞ elsewhere. */
export function causalMaskRef(queryLength: number, keyLength: number, offset: number): RefArray {
  const data = new Float64Array(queryLength * keyLength);
  for (let i = 0; i < queryLength; i++) {
    for (let j = 0; j < keyLength; j++)
      data[i * keyLength + j] = j <= offset + i ? 0 : Number.NEGATIVE_INFINITY;
  }
  return { shape: [queryLength, keyLength], data };
}

/** Entries of `table` picked along `axis` by integer `indices` of shape `indicesShape`. */
export function gatherRef(table: RefArray, indices: RefArray, axis = 0): RefArray {
  const rank = table.shape.length;
  const a = axis < 0 ? axis + rank : axis;
  const outer = sizeOf(table.shape.slice(0, a));
  const rows = table.shape[a]!;
  const inner = sizeOf(table.shape.slice(a + 1));
  const count = indices.data.length;
  const data = new Float64Array(outer * count * inner);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < count; c++) {
      const row = indices.data[c]!;
      for (let i = 0; i < inner; i++)
        data[(o * count + c) * inner + i] = table.data[(o * rows + row) * inner + i]!;
    }
  }
  return { shape: [...table.shape.slice(0, a), ...indices.shape, ...table.shape.slice(a + 1)], data };
}

/**
 * The slice at `begin` with extent `size` (`-1`: to the end). With `collapseAxis`, that axis (of extent
 * one) is removed from the result.
 */
export function sliceRef(
  x: RefArray,
  begin: readonly number[],
  size: readonly number[],
  collapseAxis?: number,
): RefArray {
  const extent = x.shape.map((dim, axis) => (size[axis] === -1 ? dim - begin[axis]! : size[axis]!));
  const strides = stridesOf(x.shape);
  const data = new Float64Array(sizeOf(extent));
  for (let flat = 0; flat < data.length; flat++) {
    const index = unravel(flat, extent);
    let source = 0;
    index.forEach((v, axis) => {
      source += (v + begin[axis]!) * strides[axis]!;
    });
    data[flat] = x.data[source]!;
  }
  const shape = collapseAxis === undefined ? extent : extent.filter((_, axis) => axis !== collapseAxis);
  return { shape, data };
}

/** Joins arrays along `axis`. */
export function concatRef(xs: readonly RefArray[], axis: number): RefArray {
  const rank = xs[0]!.shape.length;
  const a = axis < 0 ? axis + rank : axis;
  const shape = [...xs[0]!.shape];
  shape[a] = xs.reduce((n, x) => n + x.shape[a]!, 0);
  const data = new Float64Array(sizeOf(shape));
  for (let flat = 0; flat < data.length; flat++) {
    const index = unravel(flat, shape);
    let along = index[a]!;
    let piece = 0;
    while (along >= xs[piece]!.shape[a]!) along -= xs[piece++]!.shape[a]!;
    const source = xs[piece]!;
    index[a] = along;
    const strides = stridesOf(source.shape);
    data[flat] = source.data[index.reduce((s, v, i) => s + v * strides[i]!, 0)]!;
  }
  return { shape, data };
}

/** Permutes axes (`perm` defaults to reversing them). */
export function transposeRef(x: RefArray, perm?: readonly number[]): RefArray {
  const rank = x.shape.length;
  const order = perm ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
  const shape = order.map((axis) => x.shape[axis]!);
  const strides = stridesOf(x.shape);
  const data = new Float64Array(x.data.length);
  for (let flat = 0; flat < data.length; flat++) {
    const index = unravel(flat, shape);
    let source = 0;
    index.forEach((v, i) => {
      source += v * strides[order[i]!]!;
    });
    data[flat] = x.data[source]!;
  }
  return { shape, data };
}

/** Stacks same-shaped arrays along a new `axis`. */
export function stackRef(xs: readonly RefArray[], axis = 0): RefArray {
  const rank = xs[0]!.shape.length + 1;
  const a = axis < 0 ? axis + rank : axis;
  const expanded = xs.map((x) => ({ shape: [...x.shape.slice(0, a), 1, ...x.shape.slice(a)], data: x.data }));
  return concatRef(expanded, a);
}

/** The `k` largest entries along the last axis, descending; indices of equal values in index order. */
export function topkRef(x: RefArray, k: number): { values: RefArray; indices: RefArray } {
  const width = x.shape.at(-1)!;
  const rows = x.data.length / width;
  const values = new Float64Array(rows * k);
  const indices = new Float64Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const order = Array.from({ length: width }, (_, i) => i).sort(
      (p, q) => x.data[r * width + q]! - x.data[r * width + p]! || p - q,
    );
    for (let i = 0; i < k; i++) {
      indices[r * k + i] = order[i]!;
      values[r * k + i] = x.data[r * width + order[i]!]!;
    }
  }
  const shape = [...x.shape.slice(0, -1), k];
  return { values: { shape, data: values }, indices: { shape, data: indices } };
}

/** SiLU `x·σ(x)`. */
export const siluScalar = (v: number): number => v / (1 + Math.exp(-v));
/** Logistic sigmoid. */
export const sigmoidScalar = (v: number): number => 1 / (1 + Math.exp(-v));
/** GELU, tanh approximation. */
export const geluTanhScalar = (v: number): number =>
  0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));

/**
 * The error function to float64 precision: its Maclaurin series for |x| < 3 (cancellation between its
 * terms costs up to ~2e-14 near 3), the continued fraction
 * of erfc beyond (Lentz's method). Independent of the Chebyshev fit the backends use.
 */
export function erfScalar(x: number): number {
  const z = Math.abs(x);
  let value: number;
  if (z < 3) {
    let term = z;
    let sum = z;
    for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (-z * z) / n;
      sum += term / (2 * n + 1);
    }
    value = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(z) = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + …))))).
    const tiny = 1e-300;
    let f = z;
    let c = z;
    let d = 0;
    for (let n = 1; n < 200; n++) {
      const a = n / 2;
      d = z + a * d;
      d = d === 0 ? tiny : 1 / d;
      c = z + a / c;
      if (c === 0) c = tiny;
      const delta = c * d;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    value = 1 - Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
  }
  return x < 0 ? -value : value;
}

/** GELU, exact: `½x(1 + erf(x/√2))`. */
export const geluScalar = (v: number): number => 0.5 * v * (1 + erfScalar(v / Math.SQRT2));

/**
 * Causal grouped-query attention: `q: [B, T, H, D]`, `k`, `v: [B, S, kvH, D]` → `[B, T, H, D]`; query `t`
 * sees keys `j ≤ min(offset + t, keyLength − 1)` (and, with a `window`, `j > offset + t − window`); head
 * `h` reads key head `⌊h·kvH/H⌋`; with `softCap` the scaled scores are `softCap·tanh(s/softCap)`.
 */
export function attentionRef(
  q: RefArray,
  k: RefArray,
  v: RefArray,
  scale: number,
  offset: number,
  keyLength = k.shape[1]!,
  { window, softCap }: { window?: number; softCap?: number } = {},
): RefArray {
  const [batch, length, heads, headDim] = q.shape as [number, number, number, number];
  const [, keySlots, kvHeads] = k.shape as [number, number, number, number];
  const data = new Float64Array(q.data.length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor((h * kvHeads) / heads);
        const last = Math.min(offset + t, keyLength - 1);
        const qBase = ((b * length + t) * heads + h) * headDim;
        // A window keeps the keys j with (offset + t) − j < window.
        const first = window === undefined ? 0 : Math.max(0, offset + t - window + 1);
        const scores: number[] = [];
        for (let j = first; j <= last; j++) {
          const kBase = ((b * keySlots + j) * kvHeads + kvh) * headDim;
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += q.data[qBase + i]! * k.data[kBase + i]!;
          scores.push(softCap === undefined ? dot * scale : softCap * Math.tanh((dot * scale) / softCap));
        }
        const top = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - top));
        const total = weights.reduce((s, w) => s + w, 0);
        for (let j = first; j <= last; j++) {
          const vBase = ((b * keySlots + j) * kvHeads + kvh) * headDim;
          for (let i = 0; i < headDim; i++)
            data[qBase + i]! += (weights[j - first]! / total) * v.data[vBase + i]!;
        }
      }
    }
  }
  return { shape: q.shape, data };
}

/**
 * Paged attention: each span's key and value positions read one by one from the pools `[pages, pageSize,
 * kvH, D]` through its block table into a contiguous history, then {@link attentionRef} over it; the spans'
 * rows `[1, M, H, D]` in order.
 */
export function pagedAttentionRef(
  q: RefArray,
  keyPool: RefArray,
  valuePool: RefArray,
  spans: readonly PagedAttentionSpan[],
  scale: number,
  scoreOptions: { window?: number; softCap?: number } = {},
): RefArray {
  const [, , heads, headDim] = q.shape as [number, number, number, number];
  const [, pageSize, kvHeads] = keyPool.shape as [number, number, number, number];
  const width = kvHeads * headDim;
  const data = new Float64Array(q.data.length);
  let firstRow = 0;
  for (const span of spans) {
    const history = (pool: RefArray) => {
      const rows = new Float64Array(span.keyLength * width);
      for (let j = 0; j < span.keyLength; j++) {
        const at = (span.pages[Math.floor(j / pageSize)]! * pageSize + (j % pageSize)) * width;
        rows.set(pool.data.subarray(at, at + width), j * width);
      }
      return refArray([1, span.keyLength, kvHeads, headDim], rows);
    };
    const rowWidth = heads * headDim;
    const queries = refArray(
      [1, span.rows, heads, headDim],
      q.data.subarray(firstRow * rowWidth, (firstRow + span.rows) * rowWidth),
    );
    const out = attentionRef(
      queries,
      history(keyPool),
      history(valuePool),
      scale,
      span.queryOffset,
      span.keyLength,
      scoreOptions,
    );
    data.set(out.data, firstRow * rowWidth);
    firstRow += span.rows;
  }
  return { shape: q.shape, data };
}

/**
 * {@link Backend.addLowRank} in float64: each segment's rows get `base + scale·(x·Aᵀ)·B` with its rows of
 * `aRows` and `bRows`. Also returns, per element, the same sum over absolute values (`|base| + |scale|·
 * Σ_k |Σ_i x_i·a_ki|_abs·|b_kj|`, the scale a float32 evaluation's rounding error is proportional to).
 */
export function addLowRankRef(
  base: RefArray,
  x: RefArray,
  aRows: RefArray,
  bRows: RefArray,
  segments: readonly { rows: number; start: number; rank: number; scale: number }[],
): { value: RefArray; magnitude: RefArray } {
  const [rows, out] = base.shape as [number, number];
  const inner = x.shape[1]!;
  const value = Float64Array.from(base.data);
  const magnitude = base.data.map(Math.abs);
  let row = 0;
  for (const segment of segments) {
    for (let r = row; r < row + segment.rows; r++) {
      for (let k = segment.start; k < segment.start + segment.rank; k++) {
        let shrunk = 0;
        let shrunkAbs = 0;
        for (let i = 0; i < inner; i++) {
          shrunk += x.data[r * inner + i]! * aRows.data[k * inner + i]!;
          shrunkAbs += Math.abs(x.data[r * inner + i]! * aRows.data[k * inner + i]!);
        }
        for (let j = 0; j < out; j++) {
          value[r * out + j]! += segment.scale * shrunk * bRows.data[k * out + j]!;
          magnitude[r * out + j]! += Math.abs(segment.scale * bRows.data[k * out + j]!) * shrunkAbs;
        }
      }
    }
    row += segment.rows;
  }
  if (row !== rows) throw new Error(`addLowRankRef: the segments hold ${row} rows, base ${rows}`);
  return { value: refArray([rows, out], value), magnitude: refArray([rows, out], magnitude) };
}
