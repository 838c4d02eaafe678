/**
 * Composite implementations of the fused ops of {@link Backend}, built from its elementary ops. A
 * backend without a fused kernel (or one taking gradients through it) calls these; the conformance
 * suite checks fused and composite implementations against the same float64 references.
 *
 * @module
 */
import type {
  AttentionOptions,
  Backend,
  GateActivation,
  LowRankSegment,
  PagedAttentionOptions,
  PagedAttentionSpan,
  Tensor,
} from './backend.js';

/**
 * {@link compositeAttention} runs over key lengths padded to a multiple of this, with the padding masked
 * out.
 *
 * NOTE: softmax kernels that sum in SIMD lanes with a scalar tail (tfjs-wasm's) round differently for
 * different row lengths, so a token decoded against a cache of t keys came out up to 2.5e-5 away from
 * the same token in a full recompute over 85 keys (stories260K). With both lengths padded to a multiple
 * of 16 by masked columns, which add exact zeros, the two agree bit for bit.
 */
export const keyBlock = 16;

/**
 * {@link Backend.attention} from transposes, two batched products, an additive mask and a softmax:
 * grouped-query attention without repeating keys and values (query head `h = kvHead·G + g`, so the `G`
 * query heads of one key/value head fold into the rows of one product).
 */
export function compositeAttention(
  b: Backend,
  queries: Tensor,
  keys: Tensor,
  values: Tensor,
  options: AttentionOptions,
): Tensor {
  const [batch, length, heads, headDim] = queries.shape as [number, number, number, number];
  const kvHeads = keys.shape[2]!;
  const groups = heads / kvHeads;
  const keyLength = options.keyLength ?? keys.shape[1]!;
  const padded = Math.ceil(keyLength / keyBlock) * keyBlock;
  return b.tidy(() => {
    const headsFirst = (x: Tensor) => {
      const used = keyLength < x.shape[1]! ? b.slice(x, [0, 0, 0, 0], [-1, keyLength, -1, -1]) : x;
      let t = b.transpose(used, [0, 2, 1, 3]); // [B, kvH, S, D]
      if (padded > keyLength) t = b.concat([t, b.fill([batch, kvHeads, padded - keyLength, headDim], 0)], 2);
      return t;
    };
    const allKeys = headsFirst(keys);
    const allValues = headsFirst(values);
    const grouped = b.reshape(b.mul(b.transpose(queries, [0, 2, 1, 3]), options.scale), [
      batch,
      kvHeads,
      groups * length,
      headDim,
    ]);
    let scores = b.matmul(grouped, allKeys, { transposeB: true }); // [B, kvH, G·T, S]
    const cap = options.softCap;
    if (cap !== undefined) scores = b.mul(b.tanh(b.div(scores, cap)), cap);
    const window = options.window;
    const windowed = window !== undefined && options.queryOffset + length - window >= 0;
    if (padded !== keyLength || options.queryOffset < keyLength - 1 || windowed) {
      scores = b.add(
        b.reshape(scores, [batch, kvHeads, groups, length, padded]),
        attentionMask(b, length, padded, keyLength, options.queryOffset, window),
      );
      scores = b.reshape(scores, [batch, kvHeads, groups * length, padded]);
    }
    const mixed = b.matmul(b.softmax(scores), allValues); // [B, kvH, G·T, D]
    return b.transpose(b.reshape(mixed, [batch, heads, length, headDim]), [0, 2, 1, 3]);
  });
}

/**
 * {@link Backend.pagedAttention} by its definition: for each span, its pages gathered in table order
 * into `[1, pages·pageSize, kvH, D]` (a copy of its history) and {@link Backend.attention} over them;
 * the spans' outputs joined along the rows. The reference the fused paged kernels are checked against,
 * and what a backend without one runs.
 */
export function compositePagedAttention(
  b: Backend,
  queries: Tensor,
  keyPool: Tensor,
  valuePool: Tensor,
  spans: readonly PagedAttentionSpan[],
  options: PagedAttentionOptions,
): Tensor {
  const [, , heads, headDim] = queries.shape as [number, number, number, number];
  const [, pageSize, kvHeads] = keyPool.shape as [number, number, number, number];
  return b.tidy(() => {
    let start = 0;
    const outputs = spans.map((span) => {
      const pages = Math.ceil(span.keyLength / pageSize);
      const table = b.fromArray(Int32Array.from(span.pages.slice(0, pages)), [pages], 'int32');
      const history = (pool: Tensor) =>
        b.reshape(b.gather(pool, table), [1, pages * pageSize, kvHeads, headDim]);
      const spanQueries =
        spans.length === 1 ? queries : b.slice(queries, [0, start, 0, 0], [1, span.rows, heads, headDim]);
      start += span.rows;
      return b.attention(spanQueries, history(keyPool), history(valuePool), {
        ...options,
        queryOffset: span.queryOffset,
        keyLength: span.keyLength,
      });
    });
    return outputs.length === 1 ? outputs[0]! : b.concat(outputs, 1);
  });
}

/**
 * Additive mask `[T, S]`: 0 where key `j ≤ min(offset + i, keyLength − 1)` (and, with a window,
 * `j > offset + i − window`), −∞ elsewhere.
 */
function attentionMask(
  b: Backend,
  length: number,
  columns: number,
  keyLength: number,
  offset: number,
  window?: number,
): Tensor {
  const mask = new Float32Array(length * columns);
  for (let i = 0; i < length; i++) {
    const last = Math.min(offset + i, keyLength - 1);
    mask.fill(Number.NEGATIVE_INFINITY, i * columns + last + 1, (i + 1) * columns);
    if (window !== undefined) {
      const first = Math.max(0, offset + i - window + 1);
      mask.fill(Number.NEGATIVE_INFINITY, i * columns, i * columns + Math.min(first, last + 1));
    }
  }
  return b.fromArray(mask, [length, columns]);
}

/**
 * {@link Backend.addLowRank} by its definition, in two products for any number of segments:
 * `base + ((x·aRowsᵀ) ⊙ S)·bRows`, where `S: [M, W]` holds for each row its segment's scale on its
 * adapter's `rank` columns and 0 elsewhere (the concatenated LoRAs with a row mask of Bae et al. §3.3).
 * The products add exact zeros for the other adapters' columns, so a row's value does not depend on the
 * other rows. The reference the fused kernels are checked against, and what a backend without one (or a
 * gradient) runs.
 */
export function compositeAddLowRank(
  b: Backend,
  base: Tensor,
  x: Tensor,
  aRows: Tensor,
  bRows: Tensor,
  segments: readonly LowRankSegment[],
): Tensor {
  const rows = base.shape[0]!;
  const width = aRows.shape[0]!;
  const selector = new Float32Array(rows * width);
  let row = 0;
  for (const { rows: count, start, rank, scale } of segments) {
    for (let r = row; r < row + count; r++) {
      selector.fill(scale, r * width + start, r * width + start + rank);
    }
    row += count;
  }
  return b.tidy(() => {
    const shrunk = b.mul(b.matmul(x, aRows, { transposeB: true }), b.fromArray(selector, [rows, width]));
    return b.add(base, b.matmul(shrunk, bRows));
  });
}

/** {@link Backend.gatedActivation} as two ops: `activation(gate) · up`. */
export function compositeGatedActivation(
  b: Backend,
  gate: Tensor,
  up: Tensor,
  activation: GateActivation,
): Tensor {
  return b.tidy(() => b.mul(activation === 'silu' ? b.silu(gate) : b.geluTanh(gate), up));
}

/**
 * {@link Backend.layerNorm} from elementary ops: centre, scale by `1/√(mean of squares + eps)`, then
 * `· weight + bias`.
 */
export function compositeLayerNorm(b: Backend, x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  return b.tidy(() => {
    const centred = b.sub(x, b.mean(x, -1, true));
    const inverseStd = b.rsqrt(b.add(b.mean(b.square(centred), -1, true), eps));
    return b.add(b.mul(b.mul(centred, inverseStd), weight), bias);
  });
}

/**
 * Coefficients of the Chebyshev-fitted `erfc(z) ≈ t·exp(−z² + P(t))`, `t = 1/(1 + z/2)`, `z ≥ 0`, whose
 * *relative* error is below 1.2e-7 for every z (Press et al., Numerical Recipes, `erfcc`). `P`'s
 * coefficients, constant term first.
 */
export const erfcCoefficients: readonly number[] = [
  -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
  -0.82215223, 0.17087277,
];

/**
 * {@link Backend.gelu} from elementary ops: `x·Φ(x) = max(x, 0) − ½|x|·erfc(|x|/√2)`, with `erfc` from
 * {@link erfcCoefficients}.
 *
 * NOTE: this form, rather than `½x(1 + erf(x/√2))`, keeps the error relative for negative x, where
 * GELU tends to 0 and `1 + erf` would cancel: the fit's relative error in erfc carries over to the result.
 */
export function compositeGelu(b: Backend, x: Tensor): Tensor {
  return b.tidy(() => {
    const magnitude = b.maximum(x, b.neg(x));
    const z = b.mul(magnitude, Math.SQRT1_2);
    const t = b.div(b.fill(x.shape, 1), b.add(b.mul(z, 0.5), 1));
    let polynomial: Tensor = b.fill(x.shape, erfcCoefficients[erfcCoefficients.length - 1]!);
    for (let i = erfcCoefficients.length - 2; i >= 0; i--) {
      polynomial = b.add(b.mul(polynomial, t), erfcCoefficients[i]!);
    }
    const erfc = b.mul(t, b.exp(b.sub(polynomial, b.square(z))));
    return b.sub(b.maximum(x, 0), b.mul(b.mul(magnitude, 0.5), erfc));
  });
}
