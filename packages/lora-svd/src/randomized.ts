/**
 * Randomized truncated SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1).
 *
 * For `A` (`m × n`), target rank `r`, oversampling `p` and `q` power iterations, with `ℓ = r + p`:
 * 1. `Y = A·Ω` for a Gaussian `Ω` (`n × ℓ`), `Q = orth(Y)`.
 * 2. `q` times: `Q' = orth(Aᵀ·Q)`, `Q = orth(A·Q')` — re-orthonormalised at every half step, so that the
 *    power iterations do not collapse the basis onto the leading singular vector in float32.
 * 3. `B = Qᵀ·A` (`ℓ × n`), its exact SVD `B = Ũ·Σ·Vᵀ`, and `U = Q·Ũ`; keep the leading `r` triplets.
 *
 * The products with `A` (the only `O(mnℓ)` work) run on a tensor backend when one is given, `A` uploaded
 * once; the orthonormalisations (Householder QR, `O((m + n)ℓ²)`) and the small SVD run in float64 on the
 * host.
 *
 * NOTE: `U_r·Σ_r·V_rᵀ = P·A` for the orthogonal projector `P` onto `span(U_r)`, so the captured energy is
 * exactly `Σσ̃ᵢ²` and the squared Frobenius error exactly `‖A‖²_F − Σσ̃ᵢ²`; the returned `S` never
 * overestimates the true singular values.
 *
 * @module
 */
import type { Backend } from '@rrt/tensor';
import { exactSvd, type Svd, vectorSetToMatrix } from './exact.js';
import { orthonormalize } from './householder.js';
import { assertMatrix, type Matrix } from './matrix.js';
import { BackendMatrixOperator, HostMatrixOperator, type MatrixOperator } from './operator.js';
import { SeededRandom } from './random.js';

/** Oversampling `p` used when none is given. */
export const DEFAULT_OVERSAMPLING = 10;
/**
 * Power iterations `q` used when none is given. NOTE: q = 2 left 1.9 % excess error at rank 256 on a
 * 2048×5632 matrix with σᵢ ∝ i^-0.5 (bench/svd.ts); q = 4 brings it to 0.5 % for 1.5× the time.
 */
export const DEFAULT_POWER_ITERATIONS = 4;
/** Seed used when none is given. */
export const DEFAULT_SEED = 0;

/** Options of {@link randomizedSvd}. */
export interface RandomizedSvdOptions {
  /** Extra sketch columns beyond the rank (`p`); default {@link DEFAULT_OVERSAMPLING}. */
  oversampling?: number;
  /** Power iterations (`q`); default {@link DEFAULT_POWER_ITERATIONS}. */
  powerIterations?: number;
  /** Seed of the Gaussian test matrix; default {@link DEFAULT_SEED}. Equal seeds give equal results. */
  seed?: number;
  /** Runs the products with `A` on this backend (float32); without one they run on the host in float64. */
  backend?: Backend;
}

/** Result of {@link randomizedSvd}. */
export interface RandomizedSvd extends Svd {
  /** Sketch width `ℓ = min(rank + oversampling, rows, cols)` that was used. */
  sketchSize: number;
}

/**
 * The leading `rank` singular triplets of `matrix`, approximately, by randomized range finding.
 * `rank` must not exceed `min(rows, cols)` (see {@link truncatedSvd} for clamping and rank selection).
 *
 * @example
 * ```ts
 * const { backend } = await createBackend('wasm'); // from @rrt/backend-tfjs
 * const { U, S, V } = await randomizedSvd(residual, 64, { backend, seed: 1 });
 * ```
 */
export async function randomizedSvd(
  matrix: Matrix,
  rank: number,
  options: RandomizedSvdOptions = {},
): Promise<RandomizedSvd> {
  assertMatrix(matrix);
  const operator: MatrixOperator = options.backend
    ? new BackendMatrixOperator(options.backend, matrix)
    : new HostMatrixOperator(matrix);
  try {
    return await randomizedSvdOf(operator, rank, options);
  } finally {
    operator.dispose();
  }
}

/** {@link randomizedSvd} on an operator. @internal */
export async function randomizedSvdOf(
  operator: MatrixOperator,
  rank: number,
  options: RandomizedSvdOptions,
): Promise<RandomizedSvd> {
  const { rows: m, cols: n } = operator;
  const minDim = Math.min(m, n);
  const r = Math.min(rank, minDim);
  const l = Math.min(r + (options.oversampling ?? DEFAULT_OVERSAMPLING), minDim);
  const q = options.powerIterations ?? DEFAULT_POWER_ITERATIONS;
  if (r === 0) {
    return {
      U: { rows: m, cols: 0, data: new Float64Array(0) },
      S: new Float64Array(0),
      V: { rows: n, cols: 0, data: new Float64Array(0) },
      sketchSize: 0,
    };
  }
  const rng = new SeededRandom(options.seed ?? DEFAULT_SEED);
  const omega = rng.fillGaussian(new Float64Array(l * n)); // Ωᵀ: ℓ vectors of length n
  // Yᵀ = Ωᵀ·Aᵀ; the basis Q is kept as ℓ vectors of length m.
  let basis = orthonormalize(await operator.timesTransposed(omega, l), m, l);
  for (let i = 0; i < q; i++) {
    const rowBasis = orthonormalize(await operator.leftTimes(basis, l), n, l); // orth(Aᵀ·Q)
    basis = orthonormalize(await operator.timesTransposed(rowBasis, l), m, l); // orth(A·Q')
  }
  // B = Qᵀ·A, ℓ × n row-major: exactly the ℓ vectors that leftTimes returns.
  const b = await operator.leftTimes(basis, l);
  const small = exactSvd({ rows: l, cols: n, data: b }, r);
  // U = Q·Ũ: column j of U is Σ_i Ũ[i][j]·q_i.
  const uVectors = new Float64Array(r * m);
  const ut = small.U.data; // [ℓ, r]
  for (let j = 0; j < r; j++) {
    const o = j * m;
    for (let i = 0; i < l; i++) {
      const c = ut[i * r + j]!;
      if (c === 0) continue;
      const qo = i * m;
      for (let a = 0; a < m; a++) uVectors[o + a]! += c * basis[qo + a]!;
    }
  }
  return { U: vectorSetToMatrix(uVectors, m, r), S: small.S, V: small.V, sketchSize: l };
}
