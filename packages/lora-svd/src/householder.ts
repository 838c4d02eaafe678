/**
 * Householder reflectors on "vector sets": `count` vectors of length `len` stored one after another in a
 * Float64Array (vector `i` at offset `i · len`). A column-major `m × n` matrix is the vector set of its
 * `n` columns, so every inner loop here runs over contiguous memory.
 *
 * A reflector is `H = I − τ·v·vᵀ` with `v = (1, tail)`; it is stored LAPACK-style: the tail in place of
 * the entries it zeroed, `τ` in a separate array, the leading 1 implicit.
 *
 * @internal
 * @module
 */

/** Reflectors applied to a target vector in one pass over memory (a cache block). */
const REFLECTOR_BLOCK = 32;

/**
 * Turns `x[off .. off+len)` into a Householder reflector that maps it to `(β, 0, …, 0)`: on return
 * `x[off] = β` and `x[off+1 .. off+len)` holds the reflector's tail. Returns `τ` (0 when the tail of
 * `x` is already zero: then `H = I` and `β = x[off]`).
 */
export function makeReflector(x: Float64Array, off: number, len: number): number {
  let tailSquares = 0;
  for (let i = off + 1; i < off + len; i++) {
    const v = x[i]!;
    tailSquares += v * v;
  }
  if (tailSquares === 0) return 0;
  const alpha = x[off]!;
  const norm = Math.sqrt(alpha * alpha + tailSquares);
  // NOTE: β takes the sign opposite to α so that α − β never cancels (LAPACK dlarfg).
  const beta = alpha >= 0 ? -norm : norm;
  const scale = 1 / (alpha - beta);
  for (let i = off + 1; i < off + len; i++) x[i]! *= scale;
  x[off] = beta;
  return (beta - alpha) / beta;
}

/**
 * Applies the reflector whose tail starts at `refl[rOff]` and whose leading 1 sits at coordinate `c0` to
 * the target vector at `x[xOff ..]`, over coordinates `c0 .. len`.
 */
export function applyReflector(
  refl: Float64Array,
  rOff: number,
  tau: number,
  c0: number,
  len: number,
  x: Float64Array,
  xOff: number,
): void {
  if (tau === 0) return;
  const head = xOff + c0;
  const tail = len - c0 - 1;
  const s = tau * (x[head]! + dot(refl, rOff, x, head + 1, tail));
  if (s === 0) return;
  x[head]! -= s;
  for (let i = 0; i < tail; i++) x[head + 1 + i]! -= s * refl[rOff + i]!;
}

/**
 * `Σ a[aOff+i]·b[bOff+i]` for `i < len`.
 *
 * NOTE: four partial sums break the loop-carried dependency of one accumulator on the add latency; this
 * roughly doubles the speed of every reflector application.
 */
export function dot(a: Float64Array, aOff: number, b: Float64Array, bOff: number, len: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < len; i += 4) {
    s0 += a[aOff + i]! * b[bOff + i]!;
    s1 += a[aOff + i + 1]! * b[bOff + i + 1]!;
    s2 += a[aOff + i + 2]! * b[bOff + i + 2]!;
    s3 += a[aOff + i + 3]! * b[bOff + i + 3]!;
  }
  for (; i < len; i++) s0 += a[aOff + i]! * b[bOff + i]!;
  return s0 + s1 + (s2 + s3);
}

/** Where a set of reflectors lives: reflector `k` acts on coordinates `k + shift ..` of length-`len` vectors. */
export interface ReflectorSet {
  /** Storage: the tail of reflector `k` starts at `data[k · stride + k + shift + 1]`. */
  readonly data: Float64Array;
  /** Distance between consecutive reflectors in `data`. */
  readonly stride: number;
  /** Length of the vectors they act on. */
  readonly len: number;
  /** Offset of the first acted-on coordinate from the reflector's index. */
  readonly shift: number;
  /** `τ` per reflector. */
  readonly tau: Float64Array;
}

/**
 * Applies reflectors `first .. end−1` of `set` to each of the vectors `targets[t · len ..]` for
 * `t ∈ [targetFirst, targetEnd)`: in increasing order (`Hₑ₋₁ ⋯ H_first · x`, i.e. `Qᵀx`) when `forward`,
 * in decreasing order (`H_first ⋯ Hₑ₋₁ · x`, i.e. `Qx`) otherwise.
 *
 * NOTE: reflectors are taken in blocks of {@link REFLECTOR_BLOCK}, and each target vector gets a whole
 * block while it is in cache: the reflectors (up to 90 MB for a 5632 × 2048 QR) then stream through
 * memory once per block instead of once per target. Inside a block, groups of four reflectors are applied
 * at once in compact WY form (`H_k⋯H_{k+3} = I − V·T·Vᵀ`, LAPACK `dlarft`): one pass computes the four
 * dot products and one pass the update, which halves the loads per flop and about doubles the speed.
 */
export function applyReflectors(
  set: ReflectorSet,
  first: number,
  end: number,
  forward: boolean,
  targets: Float64Array,
  targetFirst: number,
  targetEnd: number,
): void {
  if (targetFirst >= targetEnd) return;
  const { data, stride, len, shift, tau } = set;
  const blocks: number[] = [];
  for (let b0 = first; b0 < end; b0 += REFLECTOR_BLOCK) blocks.push(b0);
  if (!forward) blocks.reverse();
  const tMatrices = new Float64Array((REFLECTOR_BLOCK / 4) * 16);
  for (const b0 of blocks) {
    const b1 = Math.min(end, b0 + REFLECTOR_BLOCK);
    // Groups of four whose heads fit inside the vectors; the rest (the highest indices) one by one.
    let groups = 0;
    while (b0 + 4 * groups + 4 <= b1 && b0 + 4 * groups + 3 + shift < len) groups++;
    for (let g = 0; g < groups; g++) groupTriangle(set, b0 + 4 * g, tMatrices, 16 * g);
    const singlesFrom = b0 + 4 * groups;
    for (let t = targetFirst; t < targetEnd; t++) {
      const xOff = t * len;
      if (forward) {
        for (let g = 0; g < groups; g++) applyGroup(set, b0 + 4 * g, tMatrices, 16 * g, true, targets, xOff);
        for (let k = singlesFrom; k < b1; k++) {
          const c0 = k + shift;
          applyReflector(data, k * stride + c0 + 1, tau[k]!, c0, len, targets, xOff);
        }
      } else {
        for (let k = b1 - 1; k >= singlesFrom; k--) {
          const c0 = k + shift;
          applyReflector(data, k * stride + c0 + 1, tau[k]!, c0, len, targets, xOff);
        }
        for (let g = groups - 1; g >= 0; g--)
          applyGroup(set, b0 + 4 * g, tMatrices, 16 * g, false, targets, xOff);
      }
    }
  }
}

/**
 * The 4 × 4 upper triangular `T` (row-major, at `out[o..o+16)`) with `H_k·H_{k+1}·H_{k+2}·H_{k+3} =
 * I − V·T·Vᵀ`, where `V`'s columns are the four reflector vectors (LAPACK `dlarft`, forward, columnwise).
 */
function groupTriangle(set: ReflectorSet, k: number, out: Float64Array, o: number): void {
  const { data, stride, len, shift, tau } = set;
  const c = k + shift;
  out.fill(0, o, o + 16);
  for (let q = 0; q < 4; q++) {
    const tq = tau[k + q]!;
    out[o + q * 4 + q] = tq;
    if (q === 0 || tq === 0) continue;
    // z_j = v_jᵀ v_q for j < q: v_q is 0 before c+q and 1 at c+q.
    const oq = (k + q) * stride;
    const z = [0, 0, 0];
    for (let j = 0; j < q; j++) {
      const oj = (k + j) * stride;
      z[j] = data[oj + c + q]! + dot(data, oj + c + q + 1, data, oq + c + q + 1, len - c - q - 1);
    }
    // T[0:q, q] = −τ_q · T[0:q, 0:q] · z
    for (let i = 0; i < q; i++) {
      let acc = 0;
      for (let j = i; j < q; j++) acc += out[o + i * 4 + j]! * z[j]!;
      out[o + i * 4 + q] = -tq * acc;
    }
  }
}

/**
 * Applies the group of reflectors `k..k+3` to the vector at `x[xOff..]`: `x − V·Tᵀ·Vᵀx`
 * (`H_{k+3}⋯H_k·x`) when `forward`, `x − V·T·Vᵀx` (`H_k⋯H_{k+3}·x`) otherwise.
 */
function applyGroup(
  set: ReflectorSet,
  k: number,
  tMatrices: Float64Array,
  o: number,
  forward: boolean,
  x: Float64Array,
  xOff: number,
): void {
  const { data, stride, len, shift } = set;
  const c = k + shift;
  const o0 = k * stride;
  const o1 = o0 + stride;
  const o2 = o1 + stride;
  const o3 = o2 + stride;
  // Heads: v_q is 0 before c+q, 1 at c+q, stored after.
  const h10 = data[o0 + c + 1]!;
  const h20 = data[o0 + c + 2]!;
  const h30 = data[o0 + c + 3]!;
  const h21 = data[o1 + c + 2]!;
  const h31 = data[o1 + c + 3]!;
  const h32 = data[o2 + c + 3]!;
  const hx = xOff + c;
  const x0 = x[hx]!;
  const x1 = x[hx + 1]!;
  const x2 = x[hx + 2]!;
  const x3 = x[hx + 3]!;
  let w0 = x0 + h10 * x1 + h20 * x2 + h30 * x3;
  let w1 = x1 + h21 * x2 + h31 * x3;
  let w2 = x2 + h32 * x3;
  let w3 = x3;
  const from = c + 4;
  for (let i = from; i < len; i++) {
    const xi = x[xOff + i]!;
    w0 += data[o0 + i]! * xi;
    w1 += data[o1 + i]! * xi;
    w2 += data[o2 + i]! * xi;
    w3 += data[o3 + i]! * xi;
  }
  const t = tMatrices;
  let y0: number;
  let y1: number;
  let y2: number;
  let y3: number;
  if (forward) {
    // y = Tᵀ w (T upper triangular, row-major)
    y0 = t[o]! * w0;
    y1 = t[o + 1]! * w0 + t[o + 5]! * w1;
    y2 = t[o + 2]! * w0 + t[o + 6]! * w1 + t[o + 10]! * w2;
    y3 = t[o + 3]! * w0 + t[o + 7]! * w1 + t[o + 11]! * w2 + t[o + 15]! * w3;
  } else {
    y0 = t[o]! * w0 + t[o + 1]! * w1 + t[o + 2]! * w2 + t[o + 3]! * w3;
    y1 = t[o + 5]! * w1 + t[o + 6]! * w2 + t[o + 7]! * w3;
    y2 = t[o + 10]! * w2 + t[o + 11]! * w3;
    y3 = t[o + 15]! * w3;
  }
  if (y0 === 0 && y1 === 0 && y2 === 0 && y3 === 0) return;
  x[hx] = x0 - y0;
  x[hx + 1] = x1 - (h10 * y0 + y1);
  x[hx + 2] = x2 - (h20 * y0 + h21 * y1 + y2);
  x[hx + 3] = x3 - (h30 * y0 + h31 * y1 + h32 * y2 + y3);
  for (let i = from; i < len; i++) {
    x[xOff + i]! -= y0 * data[o0 + i]! + y1 * data[o1 + i]! + y2 * data[o2 + i]! + y3 * data[o3 + i]!;
  }
}

/**
 * Householder QR of the `m × n` matrix stored column-major in `a` (overwritten): on return `R` is in the
 * upper triangle and the reflector tails below the diagonal. Returns `τ` (length `min(m, n)`).
 * Panels of {@link REFLECTOR_BLOCK} columns are factored first, then applied to the trailing columns in
 * one blocked pass.
 */
export function householderQr(a: Float64Array, m: number, n: number): Float64Array {
  const steps = Math.min(m, n);
  const tau = new Float64Array(steps);
  const set: ReflectorSet = { data: a, stride: m, len: m, shift: 0, tau };
  for (let p0 = 0; p0 < steps; p0 += REFLECTOR_BLOCK) {
    const p1 = Math.min(steps, p0 + REFLECTOR_BLOCK);
    for (let k = p0; k < p1; k++) {
      tau[k] = makeReflector(a, k * m + k, m - k);
      // Update the rest of the panel now; the trailing columns get the whole panel below.
      for (let j = k + 1; j < p1; j++) applyReflector(a, k * m + k + 1, tau[k]!, k, m, a, j * m);
    }
    applyReflectors(set, p0, p1, true, a, p1, n);
  }
  return tau;
}

/**
 * The first `count` columns of `Q` from {@link householderQr}'s output, as a vector set (`count` vectors
 * of length `m`): an orthonormal basis whose first `min(m, n)` vectors span the range of the factored
 * matrix's leading columns.
 */
export function thinQ(a: Float64Array, m: number, tau: Float64Array, count: number): Float64Array {
  const q = new Float64Array(count * m);
  for (let j = 0; j < count; j++) q[j * m + j] = 1;
  const set: ReflectorSet = { data: a, stride: m, len: m, shift: 0, tau };
  const steps = tau.length;
  // NOTE: e_j is zero at coordinates ≥ b0 when j < b0, and reflectors ≥ b0 touch only those, so a block
  // of reflectors starting at b0 leaves targets j < b0 alone.
  for (let b1 = steps; b1 > 0; b1 -= REFLECTOR_BLOCK) {
    const b0 = Math.max(0, b1 - REFLECTOR_BLOCK);
    applyReflectors(set, b0, b1, false, q, Math.min(b0, count), count);
  }
  return q;
}

/**
 * Orthonormalises a vector set in float64 (Householder QR, then the thin `Q`): returns `count` orthonormal
 * vectors of length `len` spanning the input's span (completed to `count` vectors when it is rank
 * deficient). Requires `count ≤ len`.
 */
export function orthonormalize(vectors: Float64Array, len: number, count: number): Float64Array {
  const work = Float64Array.from(vectors.subarray(0, len * count));
  const tau = householderQr(work, len, count);
  return thinQ(work, len, tau, count);
}
