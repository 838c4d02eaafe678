// AssemblyScript source of the wasm SIMD kernels (attention, its gradient and its paged form, SwiGLU, the multi-adapter low-rank update) (compiled by ../scripts/build-kernels.mjs into
// ../src/attention-wasm.ts). It runs on tfjs-wasm's own heap: the module imports tfjs's WebAssembly
// memory, so queries, keys, values and the output are read and written where tfjs keeps them. It must
// hold no static data (a data segment would be written into tfjs's heap at instantiation): no strings,
// no arrays, no library math with tables — hence its own exp.

/**
 * e^x of four float32 lanes with x ≤ 0: 2^k · e^r, k = round(x·log₂e), r = x − k·ln 2 (two-part ln 2),
 * |r| ≤ ln2/2, degree-6 Taylor polynomial (relative error < 1.3e-7); x below −87 gives ≈ 0 (2^−126·e^r).
 */
// @ts-expect-error: decorator
@inline
function exp4(xIn: v128): v128 {
  const x = f32x4.max(xIn, f32x4.splat(-87.0));
  const k = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  const r = f32x4.sub(f32x4.sub(x, f32x4.mul(k, f32x4.splat(0.693359375))), f32x4.mul(k, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.0 / 720.0);
  p = f32x4.add(f32x4.splat(1.0 / 120.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0 / 24.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0 / 6.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(0.5), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0), f32x4.mul(r, p));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(k), i32x4.splat(127)), 23);
  return f32x4.mul(p, scale);
}

/** The first `count` (1–3) lanes of `x`, zeros elsewhere. */
// @ts-expect-error: decorator
@inline
function masked(x: v128, count: i32): v128 {
  const lanes = i32x4(0, 1, 2, 3);
  return v128.and(x, i32x4.lt_s(lanes, i32x4.splat(count)));
}

/** `cap·tanh(x/cap)` of one score, by `tanh|z| = (1 − e^(−2|z|)) / (1 + e^(−2|z|))` (exp4 takes x ≤ 0). */
// @ts-expect-error: decorator
@inline
function softCapped(x: f32, cap: f32): f32 {
  const z = x / cap;
  const e = f32x4.extract_lane(exp4(f32x4.splat(<f32>-2.0 * Mathf.abs(z))), 0);
  const magnitude = (<f32>1.0 - e) / (<f32>1.0 + e);
  return cap * (z < 0 ? -magnitude : magnitude);
}

/**
 * One query row of one head: softmax(scale·q·kⱼ, capped) · vⱼ over `visible` keys, into `outRow`. Key
 * (and value) `j` is at `kBase + j·rowBytes` when `offsets` is 0 (a contiguous buffer), else at
 * `kBase + offsets[j]` (u32 byte offsets: a paged pool). `scratch` holds `visible` f32 scores (rounded up
 * to a multiple of 4); `headBytes` is a multiple of 16. The one body of {@link attention} and
 * {@link pagedAttention}, so that a row gets the same bits through either.
 */
// @ts-expect-error: decorator
@inline
function attendRow(
  qRow: usize,
  outRow: usize,
  kBase: usize,
  vBase: usize,
  offsets: usize,
  rowBytes: usize,
  visible: i32,
  headBytes: usize,
  scratch: usize,
  scale: f32,
  softCap: f32,
): void {
  // Scores and their maximum.
  let max: f32 = -Infinity;
  for (let j = 0; j < visible; j++) {
    const kRow = kBase + (offsets == 0 ? <usize>j * rowBytes : <usize>load<u32>(offsets + (<usize>j << 2)));
    let sum = f32x4.splat(0);
    for (let i: usize = 0; i < headBytes; i += 16) {
      sum = f32x4.add(sum, f32x4.mul(v128.load(qRow + i), v128.load(kRow + i)));
    }
    let score =
      (f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + (f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3))) *
      scale;
    if (softCap > 0) score = softCapped(score, softCap);
    store<f32>(scratch + (<usize>j << 2), score);
    if (score > max) max = score;
  }
  // Softmax weights, four at a time (lanes past `visible` are computed and ignored).
  const maxes = f32x4.splat(max);
  let totals = f32x4.splat(0);
  for (let j = 0; j < visible; j += 4) {
    const at = scratch + (<usize>j << 2);
    const weights = exp4(f32x4.sub(v128.load(at), maxes));
    v128.store(at, weights);
    totals = f32x4.add(totals, j + 4 <= visible ? weights : masked(weights, visible - j));
  }
  const total: f64 =
    <f64>f32x4.extract_lane(totals, 0) +
    <f64>f32x4.extract_lane(totals, 1) +
    (<f64>f32x4.extract_lane(totals, 2) + <f64>f32x4.extract_lane(totals, 3));
  // The weighted sum of values, four dimensions at a time with the sum in a register (a sum kept in
  // memory would chain every key through a store and a load).
  const inverse = f32x4.splat(<f32>(1.0 / total));
  for (let i: usize = 0; i < headBytes; i += 16) {
    let sum = f32x4.splat(0);
    for (let j = 0; j < visible; j++) {
      const vRow = vBase + (offsets == 0 ? <usize>j * rowBytes : <usize>load<u32>(offsets + (<usize>j << 2)));
      sum = f32x4.add(sum, f32x4.mul(v128.load32_splat(scratch + (<usize>j << 2)), v128.load(vRow + i)));
    }
    v128.store(outRow + i, f32x4.mul(sum, inverse));
  }
}

/**
 * Causal grouped-query attention, `q: [B, T, H, D]`, `k`, `v: [B, S, kvH, D]` (float32, byte addresses)
 * → `out: [B, T, H, D]`; `scratch` holds `keyLength` f32 scores (rounded up to a multiple of 4). `D`
 * must be a multiple of 4. Each output row is computed alone, in a fixed order. `window` > 0 keeps only
 * the keys `j > queryOffset + t − window`; `softCap` > 0 caps the scaled scores (`cap·tanh(s/cap)`).
 */
export function attention(
  q: usize,
  k: usize,
  v: usize,
  out: usize,
  scratch: usize,
  batch: i32,
  length: i32,
  heads: i32,
  kvHeads: i32,
  headDim: i32,
  slots: i32,
  scale: f32,
  queryOffset: i32,
  keyLength: i32,
  window: i32,
  softCap: f32,
): void {
  const rowBytes = <usize>(kvHeads * headDim) << 2;
  const headBytes = <usize>headDim << 2;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      let end = queryOffset + t + 1;
      if (end > keyLength) end = keyLength;
      let first = window > 0 ? queryOffset + t + 1 - window : 0;
      if (first < 0) first = 0;
      // Keys first … end − 1; their scores are kept from scratch[0].
      const visible = end - first;
      for (let h = 0; h < heads; h++) {
        const kvh = (h * kvHeads) / heads;
        const qRow = q + ((<usize>((b * length + t) * heads + h) * headBytes));
        const kBase = k + <usize>b * <usize>slots * rowBytes + <usize>kvh * headBytes + <usize>first * rowBytes;
        const vBase = v + <usize>b * <usize>slots * rowBytes + <usize>kvh * headBytes + <usize>first * rowBytes;
        attendRow(qRow, out + (qRow - q), kBase, vBase, 0, rowBytes, visible, headBytes, scratch, scale, softCap);
      }
    }
  }
}

/** σ(x) of four lanes, stable for either sign: e = e^(−|x|), σ = x ≥ 0 ? 1/(1+e) : e/(1+e). */
// @ts-ignore: decorator
@inline
function sigmoid4(x: v128): v128 {
  const e = exp4(f32x4.neg(f32x4.abs(x)));
  const denominator = f32x4.add(f32x4.splat(1.0), e);
  const positive = f32x4.ge(x, f32x4.splat(0));
  return f32x4.div(v128.bitselect(f32x4.splat(1.0), e, positive), denominator);
}

/** SwiGLU: `out = gate · σ(gate) · up` over `count` float32 values (byte addresses). */
export function siluGate(gate: usize, up: usize, out: usize, count: i32): void {
  const whole = <usize>(count & ~3) << 2;
  for (let i: usize = 0; i < whole; i += 16) {
    const g = v128.load(gate + i);
    v128.store(out + i, f32x4.mul(f32x4.mul(g, sigmoid4(g)), v128.load(up + i)));
  }
  for (let i = whole; i < (<usize>count << 2); i += 4) {
    const g = f32x4.splat(load<f32>(gate + i));
    const y = f32x4.mul(f32x4.mul(g, sigmoid4(g)), f32x4.splat(load<f32>(up + i)));
    store<f32>(out + i, f32x4.extract_lane(y, 0));
  }
}

/**
 * The gradient of {@link attention} for all three inputs, recomputing each query row's softmax weights
 * `P`: `dV_j += P_j·dO`, `dS_j = P_j·(dO·V_j − dO·O)·scale`, `dQ = Σ_j dS_j·K_j`, `dK_j += dS_j·Q`.
 * `o` is the forward output and `dO` its gradient, both `[B, T, H, D]`; `dK` and `dV` must be zero on
 * entry. `scratch` holds `keyLength` f32 (rounded up to a multiple of 4).
 */
export function attentionGrad(
  q: usize,
  k: usize,
  v: usize,
  o: usize,
  dO: usize,
  dQ: usize,
  dK: usize,
  dV: usize,
  scratch: usize,
  batch: i32,
  length: i32,
  heads: i32,
  kvHeads: i32,
  headDim: i32,
  slots: i32,
  scale: f32,
  queryOffset: i32,
  keyLength: i32,
): void {
  const rowBytes = <usize>(kvHeads * headDim) << 2;
  const headBytes = <usize>headDim << 2;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      let visible = queryOffset + t + 1;
      if (visible > keyLength) visible = keyLength;
      for (let h = 0; h < heads; h++) {
        const kvh = (h * kvHeads) / heads;
        const row = <usize>((b * length + t) * heads + h) * headBytes;
        const kvOffset = <usize>b * <usize>slots * rowBytes + <usize>kvh * headBytes;
        let max: f32 = -Infinity;
        for (let j = 0; j < visible; j++) {
          const kRow = k + kvOffset + <usize>j * rowBytes;
          let sum = f32x4.splat(0);
          for (let i: usize = 0; i < headBytes; i += 16) {
            sum = f32x4.add(sum, f32x4.mul(v128.load(q + row + i), v128.load(kRow + i)));
          }
          const score =
            (f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + (f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3))) *
            scale;
          store<f32>(scratch + (<usize>j << 2), score);
          if (score > max) max = score;
        }
        const maxes = f32x4.splat(max);
        let totals = f32x4.splat(0);
        for (let j = 0; j < visible; j += 4) {
          const at = scratch + (<usize>j << 2);
          const weights = exp4(f32x4.sub(v128.load(at), maxes));
          v128.store(at, weights);
          totals = f32x4.add(totals, j + 4 <= visible ? weights : masked(weights, visible - j));
        }
        const inverse = <f32>(
          1.0 /
          (<f64>f32x4.extract_lane(totals, 0) +
            <f64>f32x4.extract_lane(totals, 1) +
            (<f64>f32x4.extract_lane(totals, 2) + <f64>f32x4.extract_lane(totals, 3)))
        );
        let dotOut = f32x4.splat(0);
        for (let i: usize = 0; i < headBytes; i += 16) {
          dotOut = f32x4.add(dotOut, f32x4.mul(v128.load(dO + row + i), v128.load(o + row + i)));
        }
        const dOdotO =
          f32x4.extract_lane(dotOut, 0) + f32x4.extract_lane(dotOut, 1) + (f32x4.extract_lane(dotOut, 2) + f32x4.extract_lane(dotOut, 3));
        // dV and dK, key by key; dS_j replaces P_j in the scratch for dQ below.
        for (let j = 0; j < visible; j++) {
          const p = load<f32>(scratch + (<usize>j << 2)) * inverse;
          const at = kvOffset + <usize>j * rowBytes;
          let dotV = f32x4.splat(0);
          const pSplat = f32x4.splat(p);
          for (let i: usize = 0; i < headBytes; i += 16) {
            const gradOut = v128.load(dO + row + i);
            dotV = f32x4.add(dotV, f32x4.mul(gradOut, v128.load(v + at + i)));
            v128.store(dV + at + i, f32x4.add(v128.load(dV + at + i), f32x4.mul(pSplat, gradOut)));
          }
          const dP =
            f32x4.extract_lane(dotV, 0) + f32x4.extract_lane(dotV, 1) + (f32x4.extract_lane(dotV, 2) + f32x4.extract_lane(dotV, 3));
          const dSValue = p * (dP - dOdotO) * scale;
          store<f32>(scratch + (<usize>j << 2), dSValue);
          const dS = f32x4.splat(dSValue);
          for (let i: usize = 0; i < headBytes; i += 16) {
            v128.store(dK + at + i, f32x4.add(v128.load(dK + at + i), f32x4.mul(dS, v128.load(q + row + i))));
          }
        }
        // dQ = Σ_j dS_j·K_j, four dimensions at a time with the sum in a register.
        for (let i: usize = 0; i < headBytes; i += 16) {
          let sum = f32x4.splat(0);
          for (let j = 0; j < visible; j++) {
            const dS = v128.load32_splat(scratch + (<usize>j << 2));
            sum = f32x4.add(sum, f32x4.mul(dS, v128.load(k + kvOffset + <usize>j * rowBytes + i)));
          }
          v128.store(dQ + row + i, sum);
        }
      }
    }
  }
}

/**
 * {@link attention} for a ragged batch of spans reading paged pools `kPool`, `vPool: [pages, pageSize,
 * kvH, D]` in place: `q`, `out: [1, M, H, D]`, the spans' rows in order. `meta` (i32) holds per span a
 * header `[rows, queryOffset, keyLength, start]` (`spanCount` of them, 16 bytes each), and at i32 index
 * `start` the byte offset in a pool of each of its key positions `0 … keyLength − 1` (its page's slot).
 * The same operations in the same order as {@link attention} (`window` and `softCap` too), only the key
 * and value rows' addresses differ, so a row's result equals attention's over the gathered history bit
 * for bit.
 */
export function pagedAttention(
  q: usize,
  kPool: usize,
  vPool: usize,
  out: usize,
  scratch: usize,
  meta: usize,
  spanCount: i32,
  heads: i32,
  kvHeads: i32,
  headDim: i32,
  scale: f32,
  window: i32,
  softCap: f32,
): void {
  const headBytes = <usize>headDim << 2;
  let firstRow = 0;
  for (let s = 0; s < spanCount; s++) {
    const header = meta + (<usize>s << 4);
    const rows = load<i32>(header);
    const queryOffset = load<i32>(header, 4);
    const keyLength = load<i32>(header, 8);
    const spanOffsets = meta + (<usize>load<i32>(header, 12) << 2);
    for (let t = 0; t < rows; t++) {
      let end = queryOffset + t + 1;
      if (end > keyLength) end = keyLength;
      let first = window > 0 ? queryOffset + t + 1 - window : 0;
      if (first < 0) first = 0;
      // Keys first … end − 1: their offsets, and their scores kept from scratch[0].
      const offsets = spanOffsets + (<usize>first << 2);
      const visible = end - first;
      for (let h = 0; h < heads; h++) {
        const kvh = (h * kvHeads) / heads;
        const qRow = q + <usize>((firstRow + t) * heads + h) * headBytes;
        const kBase = kPool + <usize>kvh * headBytes;
        const vBase = vPool + <usize>kvh * headBytes;
        attendRow(qRow, out + (qRow - q), kBase, vBase, offsets, 0, visible, headBytes, scratch, scale, softCap);
      }
    }
    firstRow += rows;
  }
}

/**
 * Each segment's low-rank update added to its rows (`Backend.addLowRank`): `base`, `out: [M, outer]`,
 * `x: [M, inner]`, `a: [W, inner]`, `b: [W, outer]` (float32, byte addresses). `meta` holds per segment
 * `[rows (i32), start (i32), rank (i32), scale (f32)]`, 16 bytes each. Per row, alone and in a fixed
 * order: the row of `base`, then for each adapter row `k`: `+= (scale · x·a_k) · b_k`.
 */
export function addLowRank(
  base: usize,
  x: usize,
  a: usize,
  b: usize,
  out: usize,
  meta: usize,
  segments: i32,
  inner: i32,
  outer: i32,
): void {
  const innerBytes = <usize>inner << 2;
  const outerBytes = <usize>outer << 2;
  const innerWhole = <usize>(inner & ~3) << 2;
  const outerWhole = <usize>(outer & ~3) << 2;
  let row = 0;
  for (let s = 0; s < segments; s++) {
    const header = meta + (<usize>s << 4);
    const rows = load<i32>(header);
    const start = load<i32>(header, 4);
    const rank = load<i32>(header, 8);
    const scale = load<f32>(header, 12);
    for (let r = row; r < row + rows; r++) {
      const xRow = x + <usize>r * innerBytes;
      const outRow = out + <usize>r * outerBytes;
      const baseRow = base + <usize>r * outerBytes;
      for (let j: usize = 0; j < outerWhole; j += 16) v128.store(outRow + j, v128.load(baseRow + j));
      for (let j = outerWhole; j < outerBytes; j += 4) store<f32>(outRow + j, load<f32>(baseRow + j));
      for (let k = start; k < start + rank; k++) {
        const aRow = a + <usize>k * innerBytes;
        let sum = f32x4.splat(0);
        for (let i: usize = 0; i < innerWhole; i += 16) {
          sum = f32x4.add(sum, f32x4.mul(v128.load(xRow + i), v128.load(aRow + i)));
        }
        let dot: f32 =
          f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + (f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3));
        for (let i = innerWhole; i < innerBytes; i += 4) dot += load<f32>(xRow + i) * load<f32>(aRow + i);
        const shrunk: f32 = dot * scale;
        const shrunk4 = f32x4.splat(shrunk);
        const bRow = b + <usize>k * outerBytes;
        for (let j: usize = 0; j < outerWhole; j += 16) {
          v128.store(outRow + j, f32x4.add(v128.load(outRow + j), f32x4.mul(shrunk4, v128.load(bRow + j))));
        }
        for (let j = outerWhole; j < outerBytes; j += 4) {
          store<f32>(outRow + j, load<f32>(outRow + j) + shrunk * load<f32>(bRow + j));
        }
      }
    }
    row += rows;
  }
}
