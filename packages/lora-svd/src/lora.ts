/**
 * LoRA factors from the truncated SVD of a residual `R = W_orig − W_shared` (`[out, in]`).
 *
 * @module
 */
import { InvalidSvdOptionError } from './errors.js';
import { assertMatrix, type Matrix } from './matrix.js';
import { DEFAULT_SEED } from './randomized.js';
import { SeededRandom } from './random.js';
import {
  type SvdMethod,
  type TruncatedSvdOptions,
  truncatedSvd,
  validateTruncatedSvdOptions,
} from './truncated.js';

/** Options of {@link loraFactors}: those of {@link truncatedSvd} plus the LoRA scaling numerator. */
export interface LoraFactorOptions extends TruncatedSvdOptions {
  /**
   * LoRA `α`: the adapter applies `(α / r)·B·A`. Any positive value; the factors absorb `r / α`, so the
   * product is the same for every `α`. Default: the chosen rank (scale 1).
   */
  alpha?: number;
}

/** Result of {@link loraFactors}. */
export interface LoraFactors {
  /** `[out, rank]`, row-major: `(r / α)·U_r·Σ_r`, or zeros for a zero residual. */
  B: Float32Array;
  /** `[rank, in]`, row-major: `V_rᵀ` (orthonormal rows), or the standard LoRA random init for a zero residual. */
  A: Float32Array;
  /** `out` (rows of the residual). */
  outFeatures: number;
  /** `in` (columns of the residual). */
  inFeatures: number;
  /** The rank `r` of the factors (0: empty factors, no correction). */
  rank: number;
  /** The `α` used (the default resolved). */
  alpha: number;
  /** `α / r`, the factor the adapter multiplies `B·A` by (0 when `rank` is 0). */
  scale: number;
  /** The kept singular values `σ₁ ≥ … ≥ σ_r`. */
  singularValues: Float64Array;
  /** How the SVD was computed. */
  method: SvdMethod;
  /** The rank asked for, when one was. */
  requestedRank?: number;
  /** Whether the requested rank exceeded `min(out, in)` and was lowered (the caller may warn). */
  rankClamped: boolean;
  /** `‖R‖²_F`. */
  totalEnergy: number;
  /** `‖R − scale·B·A‖²_F` as computed by the SVD (float32 rounding of the factors not included). */
  discardedEnergy: number;
  /** Whether the residual was exactly zero and the factors are the standard LoRA initialisation. */
  zeroResidual: boolean;
}

/**
 * LoRA factors `B` (`[out, r]`) and `A` (`[r, in]`) with `(α/r)·B·A` the best rank-r approximation of
 * `residual` (`R = W_orig − W_shared`, `[out, in]`), so that `W_shared + (α/r)·B·A = W_orig` at full rank
 * whatever `α` is.
 *
 * NOTE: the scaling goes entirely into `B = (r/α)·U_r·Σ_r`, and `A = V_rᵀ` keeps orthonormal rows, as in
 * the Relaxed Recursive Transformers paper's `B = U_r Σ_r, A = V_rᵀ` with the adapter's `α/r` undone.
 * Public implementations store `U_r Σ_r` unscaled and then apply `α/r` (2 by default), doubling the
 * correction.
 *
 * A residual that is exactly zero (all σ = 0, e.g. the loop that owns the shared weights) gets the standard
 * LoRA initialisation for the requested rank: `B = 0` and `A` uniform in `[−1/√in, 1/√in)` (PyTorch's
 * `kaiming_uniform_(a=√5)` bound used by LoRA), drawn from `seed`; the correction is then exactly 0 and
 * training can move away from it. Rank 0 gives empty factors.
 *
 * @throws {@link InvalidMatrixError}, {@link InvalidSvdOptionError} as {@link truncatedSvd}; also for
 * `alpha` not a positive finite number.
 * @example
 * ```ts
 * const residual = { rows: out, cols: inF, data: wOrigMinusWShared }; // Float32Array [out, in]
 * const { B, A, scale } = await loraFactors(residual, { rank: 64, alpha: 128, backend });
 * // W_shared + scale · B·A ≈ W_orig
 * ```
 */
export async function loraFactors(residual: Matrix, options: LoraFactorOptions = {}): Promise<LoraFactors> {
  assertMatrix(residual, 'loraFactors: residual');
  const { alpha } = options;
  if (alpha !== undefined && !(Number.isFinite(alpha) && alpha > 0)) {
    throw new InvalidSvdOptionError(`loraFactors: alpha must be a positive finite number, got ${alpha}`);
  }
  // Before the zero-residual shortcut, which uses none of the SVD options but must not accept bad ones.
  validateTruncatedSvdOptions(options, 'loraFactors');
  const { rows: out, cols: inF } = residual;
  if (isZero(residual.data)) return zeroResidualFactors(residual, options);
  const svd = await truncatedSvd(residual, options);
  const r = svd.rank;
  const resolvedAlpha = alpha ?? r;
  const B = new Float32Array(out * r);
  const A = new Float32Array(r * inF);
  if (r > 0) {
    const inverseScale = r / resolvedAlpha;
    const u = svd.U.data;
    for (let i = 0; i < out; i++) {
      for (let j = 0; j < r; j++) B[i * r + j] = u[i * r + j]! * svd.S[j]! * inverseScale;
    }
    const v = svd.V.data;
    for (let i = 0; i < inF; i++) {
      for (let j = 0; j < r; j++) A[j * inF + i] = v[i * r + j]!;
    }
  }
  return {
    B,
    A,
    outFeatures: out,
    inFeatures: inF,
    rank: r,
    alpha: resolvedAlpha,
    scale: r > 0 ? resolvedAlpha / r : 0,
    singularValues: svd.S,
    method: svd.method,
    ...(svd.requestedRank === undefined ? {} : { requestedRank: svd.requestedRank }),
    rankClamped: svd.rankClamped,
    totalEnergy: svd.totalEnergy,
    discardedEnergy: svd.discardedEnergy,
    zeroResidual: false,
  };
}

function isZero(data: ArrayLike<number>): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

function zeroResidualFactors(residual: Matrix, options: LoraFactorOptions): LoraFactors {
  const { rows: out, cols: inF } = residual;
  const minDim = Math.min(out, inF);
  const { rank } = options;
  // With only an energy target there is nothing to retain: rank 0. Otherwise the requested rank.
  const r = rank === undefined ? (options.energy === undefined ? minDim : 0) : Math.min(rank, minDim);
  const alpha = options.alpha ?? r;
  const A = new Float32Array(r * inF);
  const rng = new SeededRandom(options.seed ?? DEFAULT_SEED);
  const bound = 1 / Math.sqrt(inF);
  for (let i = 0; i < A.length; i++) A[i] = (2 * rng.uniform() - 1) * bound;
  return {
    B: new Float32Array(out * r),
    A,
    outFeatures: out,
    inFeatures: inF,
    rank: r,
    alpha,
    scale: r > 0 ? alpha / r : 0,
    singularValues: new Float64Array(r),
    method: 'exact',
    ...(rank === undefined ? {} : { requestedRank: rank }),
    rankClamped: rank !== undefined && rank > minDim,
    totalEnergy: 0,
    discardedEnergy: 0,
    zeroResidual: true,
  };
}
