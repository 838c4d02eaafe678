/**
 * Independent float64 references for the tests of `@rrt/lora-svd`: written separately from the package's
 * algorithms (no Householder, no Golub–Kahan) so that a test compares two different computations.
 *
 * @internal
 * @module
 */

/** mulberry32 + Box–Muller: a generator unrelated to the package's own. */
export class TestRandom {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  gaussian(): number {
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  gaussianArray(n: number): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.gaussian();
    return out;
  }
}

/** A dense row-major float64 matrix for the references. */
export interface Dense {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** `op(a)·op(b)` in float64, plain triple loop. */
export function matmul(a: Dense, b: Dense, transposeA = false, transposeB = false): Dense {
  const m = transposeA ? a.cols : a.rows;
  const k = transposeA ? a.rows : a.cols;
  const kb = transposeB ? b.cols : b.rows;
  const n = transposeB ? b.rows : b.cols;
  if (k !== kb) throw new Error(`matmul: ${m}×${k} times ${kb}×${n}`);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const av = transposeA ? a.data[p * a.cols + i]! : a.data[i * a.cols + p]!;
      if (av === 0) continue;
      for (let j = 0; j < n; j++) {
        const bv = transposeB ? b.data[j * b.cols + p]! : b.data[p * b.cols + j]!;
        out[i * n + j]! += av * bv;
      }
    }
  }
  return { rows: m, cols: n, data: out };
}

/**
 * `n × k` matrix with orthonormal columns (k ≤ n): Gaussian columns orthonormalised by modified
 * Gram–Schmidt, run twice for full orthogonality.
 */
export function randomOrthonormal(n: number, k: number, rng: TestRandom): Dense {
  const cols: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    const v = rng.gaussianArray(n);
    for (let pass = 0; pass < 2; pass++) {
      for (const q of cols) {
        let d = 0;
        for (let i = 0; i < n; i++) d += q[i]! * v[i]!;
        for (let i = 0; i < n; i++) v[i]! -= d * q[i]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += v[i]! * v[i]!;
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; i++) v[i]! /= norm;
    cols.push(v);
  }
  const data = new Float64Array(n * k);
  for (let j = 0; j < k; j++) for (let i = 0; i < n; i++) data[i * k + j] = cols[j]![i]!;
  return { rows: n, cols: k, data };
}

/** `Q₁·diag(σ)·Q₂ᵀ` (`rows × cols`) with random orthonormal `Q`s: a matrix with the given singular values. */
export function matrixWithSpectrum(
  rows: number,
  cols: number,
  sigma: readonly number[],
  rng: TestRandom,
): Dense {
  const k = sigma.length;
  const q1 = randomOrthonormal(rows, k, rng);
  const q2 = randomOrthonormal(cols, k, rng);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) q1.data[i * k + j]! *= sigma[j]!;
  return matmul(q1, q2, false, true);
}

/** A `rows × cols` matrix of independent standard normals. */
export function gaussianMatrix(rows: number, cols: number, rng: TestRandom): Dense {
  return { rows, cols, data: rng.gaussianArray(rows * cols) };
}

/**
 * Eigenvalues of a symmetric matrix by the cyclic Jacobi method (rotations until the off-diagonal mass
 * is below 1e-15 of the norm), sorted descending.
 */
export function jacobiEigenvalues(sym: Dense): Float64Array {
  const n = sym.rows;
  const a = Float64Array.from(sym.data);
  let total = 0;
  for (let i = 0; i < n * n; i++) total += a[i]! * a[i]!;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += 2 * a[p * n + q]! ** 2;
    if (off <= 1e-30 * total) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const app = a[p * n + p]!;
        const aqq = a[q * n + q]!;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  const eig = new Float64Array(n);
  for (let i = 0; i < n; i++) eig[i] = a[i * n + i]!;
  return eig.sort().reverse();
}

/** Singular values via the eigenvalues of the smaller Gram matrix (`AᵀA` or `AAᵀ`), for well-conditioned tests. */
export function singularValuesByGram(a: Dense): Float64Array {
  const gram = a.rows >= a.cols ? matmul(a, a, true, false) : matmul(a, a, false, true);
  return jacobiEigenvalues(gram).map((x) => Math.sqrt(Math.max(0, x)));
}

/** `‖a − b‖_F`. */
export function frobeniusDistance(a: { data: ArrayLike<number> }, b: { data: ArrayLike<number> }): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i]! - b.data[i]!) ** 2;
  return Math.sqrt(s);
}

/** `‖a‖_F`. */
export function frobenius(a: { data: ArrayLike<number> }): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i]! ** 2;
  return Math.sqrt(s);
}

/** `U·diag(S)·Vᵀ` for `U` `[m, r]`, `V` `[n, r]`. */
export function reconstruct(u: Dense, s: ArrayLike<number>, v: Dense): Dense {
  const r = s.length;
  const us = { rows: u.rows, cols: r, data: Float64Array.from(u.data) };
  for (let i = 0; i < u.rows; i++) for (let j = 0; j < r; j++) us.data[i * r + j]! *= s[j]!;
  return matmul(us, v, false, true);
}

/** `max |QᵀQ − I|` for a matrix with (supposedly) orthonormal columns. */
export function orthonormalityError(q: Dense): number {
  const g = matmul(q, q, true, false);
  let worst = 0;
  for (let i = 0; i < g.rows; i++) {
    for (let j = 0; j < g.cols; j++)
      worst = Math.max(worst, Math.abs(g.data[i * g.cols + j]! - (i === j ? 1 : 0)));
  }
  return worst;
}

/** `√(Σ_{i ≥ r} σᵢ²)`: the Eckart–Young optimum of a rank-r approximation. */
export function tailNorm(sigma: ArrayLike<number>, r: number): number {
  let s = 0;
  for (let i = sigma.length - 1; i >= r; i--) s += sigma[i]! ** 2;
  return Math.sqrt(s);
}
