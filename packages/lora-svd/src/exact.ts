/**
 * Exact (dense, float64) singular value decomposition in plain TypeScript.
 *
 * Algorithm (Golub–Kahan–Reinsch with an R-SVD front end, as in LAPACK's `dgesvd` path for tall matrices):
 * 1. Orient the problem so that it is tall (`m ≥ n`); a wide matrix is decomposed through its transpose.
 * 2. When `m > n`, a Householder QR reduces the `m × n` matrix to its `n × n` triangle `R`.
 * 3. Householder bidiagonalisation `R = Q_L · B · Q_Rᵀ`.
 * 4. Implicit-shift QR on the bidiagonal `B` (Golub–Kahan steps, the LINPACK `dsvdc` / JAMA formulation
 *    with the convergence test `|e_k| ≤ ε(|d_k| + |d_{k+1}|)`), accumulating its rotations.
 * 5. Only the requested leading singular vectors are transformed back through the reflectors.
 *
 * NOTE: unlike an eigendecomposition of the Gram matrix `AᵀA`, this never squares the condition number:
 * every singular value is accurate to about `ε·σ₁` absolutely, small ones included, which the
 * Eckart–Young error of a truncation depends on.
 *
 * @module
 */
import { InvalidMatrixError, SvdConvergenceError } from './errors.js';
import { applyReflectors, dot, householderQr, makeReflector, type ReflectorSet } from './householder.js';
import { assertMatrix, type Matrix } from './matrix.js';

/** A thin SVD `A ≈ U·diag(S)·Vᵀ` with its leading `S.length` singular triplets. */
export interface Svd {
  /** Left singular vectors, `[rows, k]`, orthonormal columns. */
  U: Matrix<Float64Array>;
  /** Singular values, descending, non-negative, length `k`. */
  S: Float64Array;
  /** Right singular vectors, `[cols, k]`, orthonormal columns. */
  V: Matrix<Float64Array>;
}

/** Result of {@link exactSvd}: the leading triplets and the whole spectrum. */
export interface ExactSvd extends Svd {
  /** All `min(rows, cols)` singular values, descending. */
  spectrum: Float64Array;
}

/**
 * The exact SVD of `matrix` in float64: all `min(rows, cols)` singular values and the leading
 * `vectorCount` (default: all of them) left and right singular vectors.
 *
 * Cost for `m × n` with `m ≥ n`: about `2mn² + 14n³` flops plus `4mn·k` for `k` vectors, on one core;
 * 2048 × 5632 with 256 vectors took ≈ 77 s on the development machine (`bench/svd.ts`). For large matrices
 * and small ranks use the randomized path of {@link truncatedSvd}.
 *
 * @throws {@link InvalidMatrixError} for a malformed matrix; {@link SvdConvergenceError} if the QR
 * iteration exceeds its budget (not seen on finite inputs).
 * @example
 * ```ts
 * const { U, S, V, spectrum } = exactSvd(createMatrix(3, 2, new Float64Array([3, 0, 0, 2, 0, 0])));
 * // S = [3, 2]; U: [3, 2]; V: [2, 2]
 * ```
 */
export function exactSvd(matrix: Matrix, vectorCount?: number): ExactSvd {
  assertMatrix(matrix);
  const { rows, cols } = matrix;
  const n = Math.min(rows, cols);
  const m = Math.max(rows, cols);
  const count = Math.max(0, Math.min(n, vectorCount ?? n));
  if (n === 0) {
    return {
      U: { rows, cols: 0, data: new Float64Array(0) },
      S: new Float64Array(0),
      V: { rows: cols, cols: 0, data: new Float64Array(0) },
      spectrum: new Float64Array(0),
    };
  }
  const wide = rows < cols;
  // Column-major storage of the tall orientation X (m × n): X = Aᵀ for a wide A, whose column-major
  // layout is exactly A's row-major data; X = A for a tall A, which needs a transposed copy.
  let scale = 0;
  const src = matrix.data;
  for (let i = 0; i < src.length; i++) {
    const v = Math.abs(src[i]!);
    if (v > scale) scale = v;
    else if (!(v <= scale)) throw new InvalidMatrixError(`exactSvd: entry ${i} of the matrix is ${src[i]}`);
  }
  if (!Number.isFinite(scale)) throw new InvalidMatrixError('exactSvd: the matrix has an infinite entry');
  // NOTE: scaling to max |a_ij| = 1 keeps every square and product far from overflow and underflow.
  const inv = scale > 0 ? 1 / scale : 1;
  const x = new Float64Array(m * n);
  if (wide) {
    for (let i = 0; i < src.length; i++) x[i] = src[i]! * inv;
  } else {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) x[j * rows + i] = src[i * cols + j]! * inv;
    }
  }
  const tall = svdTallColumnMajor(x, m, n, count);
  for (let i = 0; i < n; i++) tall.s[i]! *= scale;
  // The tall problem's left vectors have length m, its right vectors length n.
  const left = wide ? tall.v : tall.u;
  const right = wide ? tall.u : tall.v;
  return {
    U: vectorSetToMatrix(left, rows, count),
    S: tall.s.slice(0, count),
    V: vectorSetToMatrix(right, cols, count),
    spectrum: tall.s,
  };
}

/** `count` vectors of length `len` (one after another) → the `[len, count]` matrix with them as columns. */
export function vectorSetToMatrix(vectors: Float64Array, len: number, count: number): Matrix<Float64Array> {
  const out = new Float64Array(len * count);
  for (let j = 0; j < count; j++) {
    const o = j * len;
    for (let i = 0; i < len; i++) out[i * count + j] = vectors[o + i]!;
  }
  return { rows: len, cols: count, data: out };
}

/** Singular values and leading vectors of a tall problem, vectors stored one after another. */
export interface TallSvd {
  /** All `n` singular values, descending. */
  s: Float64Array;
  /** `count` left singular vectors of length `m`. */
  u: Float64Array;
  /** `count` right singular vectors of length `n`. */
  v: Float64Array;
}

/**
 * SVD of the `m × n` matrix (`m ≥ n ≥ 1`) stored column-major in `a`, which is overwritten. Returns all
 * singular values and the leading `count` singular vectors.
 *
 * @internal
 */
export function svdTallColumnMajor(a: Float64Array, m: number, n: number, count: number): TallSvd {
  // 1. R-SVD front end: A = Q·R, then work on the n × n triangle.
  let qrTau: Float64Array | null = null;
  let r = a;
  if (m > n) {
    qrTau = householderQr(a, m, n);
    r = new Float64Array(n * n);
    for (let j = 0; j < n; j++) {
      for (let i = 0; i <= j; i++) r[j * n + i] = a[j * m + i]!;
    }
  }
  // 2. Bidiagonalise R = Q_L · B · Q_Rᵀ.
  const bidiagonal = bidiagonalize(r, n);
  const { d, e } = bidiagonal;
  // 3. QR iteration on B, accumulating rotations into Ub, Vb (stored transposed: row j = column j).
  const wantVectors = count > 0;
  const ub = wantVectors ? identityVectors(n) : null;
  const vb = wantVectors ? identityVectors(n) : null;
  bidiagonalSvd(d, e, n, ub, vb);
  const u = new Float64Array(count * m);
  const v = new Float64Array(count * n);
  if (!wantVectors) return { s: d, u, v };
  // 4. Back-transform the leading vectors: V = Q_R·Vb, U = Q·[Q_L·Ub; 0].
  v.set(vb!.subarray(0, count * n));
  const rightSet: ReflectorSet = {
    data: bidiagonal.rightReflectors,
    stride: n,
    len: n,
    shift: 1,
    tau: bidiagonal.tauRight,
  };
  applyReflectors(rightSet, 0, n, false, v, 0, count);
  const leftSet: ReflectorSet = { data: r, stride: n, len: n, shift: 0, tau: bidiagonal.tauLeft };
  const uSmall = ub!.subarray(0, count * n);
  applyReflectors(leftSet, 0, n, false, uSmall, 0, count);
  if (qrTau === null) {
    u.set(uSmall);
  } else {
    for (let j = 0; j < count; j++) u.set(uSmall.subarray(j * n, (j + 1) * n), j * m);
    const qrSet: ReflectorSet = { data: a, stride: m, len: m, shift: 0, tau: qrTau };
    applyReflectors(qrSet, 0, n, false, u, 0, count);
  }
  return { s: d, u, v };
}

function identityVectors(n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let i = 0; i < n; i++) x[i * n + i] = 1;
  return x;
}

/** Output of {@link bidiagonalize}. */
interface Bidiagonal {
  /** Diagonal of B. */
  d: Float64Array;
  /** Superdiagonal of B (`e[k] = B[k][k+1]`), with `e[n−1] = 0`. */
  e: Float64Array;
  /** τ of the left reflectors, whose tails stay in the matrix below its diagonal. */
  tauLeft: Float64Array;
  /** τ of the right reflectors. */
  tauRight: Float64Array;
  /** Right reflector k acts on coordinates k+1.. ; its tail starts at `k·n + k + 2`. */
  rightReflectors: Float64Array;
}

/**
 * Householder bidiagonalisation of the `n × n` matrix stored column-major in `a` (overwritten; the left
 * reflectors' tails are left below its diagonal).
 *
 * NOTE: each step makes two passes over the trailing columns instead of the textbook four. Pass A applies
 * the previous step's right update (`A ← A − τ·w·vᵀ`) and computes this step's left-reflector dot product;
 * row k after the left update follows from those dot products alone, so the right reflector is made
 * before pass B, which applies the left update and accumulates `w = A·v` for the next step.
 */
function bidiagonalize(a: Float64Array, n: number): Bidiagonal {
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  const tauLeft = new Float64Array(n);
  const tauRight = new Float64Array(n);
  const rightReflectors = new Float64Array(n * n);
  const row = new Float64Array(n);
  const leftScale = new Float64Array(n);
  let w = new Float64Array(n);
  let wNext = new Float64Array(n);
  // The pending right update of the previous step: a[i, j] −= (τ·v_j)·w[i] for rows i ≥ k.
  let pendingTau = 0;
  let pendingOff = 0;
  for (let k = 0; k < n; k++) {
    const col = k * n;
    if (pendingTau !== 0) {
      const s = pendingTau * rightReflectors[pendingOff + k]!;
      for (let i = k; i < n; i++) a[col + i]! -= s * w[i]!;
    }
    const tl = makeReflector(a, col + k, n - k);
    tauLeft[k] = tl;
    d[k] = a[col + k]!;
    if (k === n - 1) break;
    const uOff = col + k + 1;
    const tail = n - k - 1;
    // Pass A: pending right update, then uᵀx for the left reflector; row k of the result follows.
    for (let j = k + 1; j < n; j++) {
      const c = j * n;
      const sr = pendingTau === 0 ? 0 : pendingTau * rightReflectors[pendingOff + j]!;
      let acc0 = 0;
      let acc1 = 0;
      if (sr !== 0) {
        a[c + k]! -= sr * w[k]!;
        let i = 0;
        for (; i + 1 < tail; i += 2) {
          const x0 = a[c + k + 1 + i]! - sr * w[k + 1 + i]!;
          const x1 = a[c + k + 2 + i]! - sr * w[k + 2 + i]!;
          a[c + k + 1 + i] = x0;
          a[c + k + 2 + i] = x1;
          acc0 += a[uOff + i]! * x0;
          acc1 += a[uOff + i + 1]! * x1;
        }
        if (i < tail) {
          const x0 = a[c + k + 1 + i]! - sr * w[k + 1 + i]!;
          a[c + k + 1 + i] = x0;
          acc0 += a[uOff + i]! * x0;
        }
      } else if (tl !== 0) {
        acc0 = dot(a, uOff, a, c + k + 1, tail);
      }
      const sl = tl * (a[c + k]! + acc0 + acc1);
      leftScale[j] = sl;
      row[j - k - 1] = a[c + k]! - sl;
    }
    // Right reflector from row k, entries k+1..n−1.
    let tr = 0;
    const rOff = k * n + k + 1;
    if (tail > 1) tr = makeReflector(row, 0, tail);
    e[k] = row[0]!;
    tauRight[k] = tr;
    rightReflectors[rOff] = 1;
    for (let t = 1; t < tail; t++) rightReflectors[rOff + t] = row[t]!;
    // Pass B: the left update, and w = A[k+1:, k+1:]·v for the next step's right update.
    if (tr !== 0) wNext.fill(0, k + 1, n);
    for (let j = k + 1; j < n; j++) {
      const c = j * n;
      const sl = leftScale[j]!;
      const vj = tr === 0 ? 0 : rightReflectors[rOff + j - k - 1]!;
      a[c + k]! -= sl;
      if (sl !== 0 && vj !== 0) {
        for (let i = 0; i < tail; i++) {
          const x = a[c + k + 1 + i]! - sl * a[uOff + i]!;
          a[c + k + 1 + i] = x;
          wNext[k + 1 + i]! += vj * x;
        }
      } else if (sl !== 0) {
        for (let i = 0; i < tail; i++) a[c + k + 1 + i]! -= sl * a[uOff + i]!;
      } else if (vj !== 0) {
        for (let i = 0; i < tail; i++) wNext[k + 1 + i]! += vj * a[c + k + 1 + i]!;
      }
    }
    pendingTau = tr;
    pendingOff = k * n;
    const swap = w;
    w = wNext;
    wNext = swap;
  }
  return { d, e, tauLeft, tauRight, rightReflectors };
}

/** `√(a² + b²)` without undue overflow or underflow. */
function hypot(a: number, b: number): number {
  const x = Math.abs(a);
  const y = Math.abs(b);
  if (x > y) {
    const t = y / x;
    return x * Math.sqrt(1 + t * t);
  }
  if (y === 0) return 0;
  const t = x / y;
  return y * Math.sqrt(1 + t * t);
}

/** Rows a and b of a vector set ← the plane rotation `[c s; −s c]` applied to them. */
function rotate(x: Float64Array, len: number, a: number, b: number, c: number, s: number): void {
  const oa = a * len;
  const ob = b * len;
  for (let i = 0; i < len; i++) {
    const xa = x[oa + i]!;
    const xb = x[ob + i]!;
    x[oa + i] = c * xa + s * xb;
    x[ob + i] = c * xb - s * xa;
  }
}

/**
 * Applies the rotations `j = first .. end−1`, in that order, each to rows j and j+1 of a vector set
 * (`[c s; −s c]` with `c = cs[j]`, `s = sn[j]`).
 *
 * NOTE: the rotations of one QR sweep only touch neighbouring rows, so four of them are applied per pass
 * over a row (a "wave"): every element is loaded and stored once per four rotations instead of twice per
 * rotation (LAPACK likewise defers a sweep's rotations and applies them with `dlasr`).
 */
function applyRotationSequence(
  x: Float64Array,
  len: number,
  first: number,
  end: number,
  cs: Float64Array,
  sn: Float64Array,
): void {
  let j = first;
  for (; j + 4 <= end; j += 4) {
    const o0 = j * len;
    const o1 = o0 + len;
    const o2 = o1 + len;
    const o3 = o2 + len;
    const o4 = o3 + len;
    const c0 = cs[j]!;
    const s0 = sn[j]!;
    const c1 = cs[j + 1]!;
    const s1 = sn[j + 1]!;
    const c2 = cs[j + 2]!;
    const s2 = sn[j + 2]!;
    const c3 = cs[j + 3]!;
    const s3 = sn[j + 3]!;
    for (let i = 0; i < len; i++) {
      const a = x[o0 + i]!;
      let b = x[o1 + i]!;
      x[o0 + i] = c0 * a + s0 * b;
      b = c0 * b - s0 * a;
      let c = x[o2 + i]!;
      x[o1 + i] = c1 * b + s1 * c;
      c = c1 * c - s1 * b;
      let d = x[o3 + i]!;
      x[o2 + i] = c2 * c + s2 * d;
      d = c2 * d - s2 * c;
      const e = x[o4 + i]!;
      x[o3 + i] = c3 * d + s3 * e;
      x[o4 + i] = c3 * e - s3 * d;
    }
  }
  for (; j < end; j++) rotate(x, len, j, j + 1, cs[j]!, sn[j]!);
}

function swapVectors(x: Float64Array, len: number, a: number, b: number): void {
  const oa = a * len;
  const ob = b * len;
  for (let i = 0; i < len; i++) {
    const t = x[oa + i]!;
    x[oa + i] = x[ob + i]!;
    x[ob + i] = t;
  }
}

/**
 * Singular values of the upper bidiagonal matrix (diagonal `s`, superdiagonal `e`, `e[n−1] = 0`), in place:
 * on return `s` holds them in descending order. The rotations are accumulated into `ut` and `vt` (vector
 * sets whose row j is column j of U and V), when given.
 *
 * Follows LINPACK `dsvdc` as in JAMA: deflation at negligible superdiagonal entries, zero-chasing at
 * negligible diagonal entries, otherwise one implicit-shift QR step with the Wilkinson shift from the
 * trailing 2 × 2.
 */
function bidiagonalSvd(
  s: Float64Array,
  e: Float64Array,
  n: number,
  ut: Float64Array | null,
  vt: Float64Array | null,
): void {
  const eps = 2 ** -52;
  const tiny = 2 ** -966;
  const maxSteps = 75 * n + 100;
  let steps = 0;
  // The rotations of one QR sweep, applied to the vectors after the sweep.
  const vCos = new Float64Array(n);
  const vSin = new Float64Array(n);
  const uCos = new Float64Array(n);
  const uSin = new Float64Array(n);
  let p = n;
  while (p > 0) {
    // Find the active block: kase 4 when e[p−2] is negligible (s[p−1] converged); kase 1 when s[p−1] is
    // negligible; kase 2 when some s[k] inside is negligible; kase 3 for a QR step on s[k..p−1].
    let k: number;
    for (k = p - 2; k >= 0; k--) {
      if (Math.abs(e[k]!) <= tiny + eps * (Math.abs(s[k]!) + Math.abs(s[k + 1]!))) {
        e[k] = 0;
        break;
      }
    }
    let kase: number;
    if (k === p - 2) {
      kase = 4;
    } else {
      let ks: number;
      for (ks = p - 1; ks > k; ks--) {
        const t = Math.abs(e[ks]!) + (ks !== k + 1 ? Math.abs(e[ks - 1]!) : 0);
        if (Math.abs(s[ks]!) <= tiny + eps * t) {
          s[ks] = 0;
          break;
        }
      }
      if (ks === k) {
        kase = 3;
      } else if (ks === p - 1) {
        kase = 1;
      } else {
        kase = 2;
        k = ks;
      }
    }
    k++;
    if (kase === 1) {
      // Deflate the negligible s[p−1]: rotations from the right chase e[p−2] up and out.
      let f = e[p - 2]!;
      e[p - 2] = 0;
      for (let j = p - 2; j >= k; j--) {
        const t = hypot(s[j]!, f);
        const cs = s[j]! / t;
        const sn = f / t;
        s[j] = t;
        if (j !== k) {
          f = -sn * e[j - 1]!;
          e[j - 1] = cs * e[j - 1]!;
        }
        if (vt) rotate(vt, n, j, p - 1, cs, sn);
      }
    } else if (kase === 2) {
      // Split at the negligible s[k−1]: rotations from the left chase e[k−1] down and out.
      let f = e[k - 1]!;
      e[k - 1] = 0;
      for (let j = k; j < p; j++) {
        const t = hypot(s[j]!, f);
        const cs = s[j]! / t;
        const sn = f / t;
        s[j] = t;
        f = -sn * e[j]!;
        e[j] = cs * e[j]!;
        if (ut) rotate(ut, n, j, k - 1, cs, sn);
      }
    } else if (kase === 3) {
      if (++steps > maxSteps) {
        throw new SvdConvergenceError(
          `exactSvd: the bidiagonal QR iteration did not converge in ${maxSteps} steps (n = ${n})`,
        );
      }
      // Wilkinson shift from the trailing 2 × 2 of BᵀB, computed on scaled entries.
      const scale = Math.max(
        Math.abs(s[p - 1]!),
        Math.abs(s[p - 2]!),
        Math.abs(e[p - 2]!),
        Math.abs(s[k]!),
        Math.abs(e[k]!),
      );
      const sp = s[p - 1]! / scale;
      const spm1 = s[p - 2]! / scale;
      const epm1 = e[p - 2]! / scale;
      const sk = s[k]! / scale;
      const ek = e[k]! / scale;
      const b = ((spm1 + sp) * (spm1 - sp) + epm1 * epm1) / 2;
      const c = sp * epm1 * (sp * epm1);
      let shift = 0;
      if (b !== 0 || c !== 0) {
        shift = Math.sqrt(b * b + c);
        if (b < 0) shift = -shift;
        shift = c / (b + shift);
      }
      let f = (sk + sp) * (sk - sp) + shift;
      let g = sk * ek;
      // Chase the bulge down the block.
      for (let j = k; j < p - 1; j++) {
        let t = hypot(f, g);
        let cs = t === 0 ? 1 : f / t;
        let sn = t === 0 ? 0 : g / t;
        if (j !== k) e[j - 1] = t;
        f = cs * s[j]! + sn * e[j]!;
        e[j] = cs * e[j]! - sn * s[j]!;
        g = sn * s[j + 1]!;
        s[j + 1] = cs * s[j + 1]!;
        vCos[j] = cs;
        vSin[j] = sn;
        t = hypot(f, g);
        cs = t === 0 ? 1 : f / t;
        sn = t === 0 ? 0 : g / t;
        s[j] = t;
        f = cs * e[j]! + sn * s[j + 1]!;
        s[j + 1] = -sn * e[j]! + cs * s[j + 1]!;
        g = sn * e[j + 1]!;
        e[j + 1] = cs * e[j + 1]!;
        uCos[j] = cs;
        uSin[j] = sn;
      }
      e[p - 2] = f;
      if (vt) applyRotationSequence(vt, n, k, p - 1, vCos, vSin);
      if (ut) applyRotationSequence(ut, n, k, p - 1, uCos, uSin);
    } else {
      // Convergence of s[k]: make it non-negative, then move it down to its place in descending order.
      if (s[k]! <= 0) {
        s[k] = s[k]! < 0 ? -s[k]! : 0;
        if (vt) {
          const o = k * n;
          for (let i = 0; i < n; i++) vt[o + i] = -vt[o + i]!;
        }
      }
      while (k < n - 1 && s[k]! < s[k + 1]!) {
        const t = s[k]!;
        s[k] = s[k + 1]!;
        s[k + 1] = t;
        if (vt) swapVectors(vt, n, k, k + 1);
        if (ut) swapVectors(ut, n, k, k + 1);
        k++;
      }
      p--;
    }
  }
}
