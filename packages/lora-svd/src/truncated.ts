/**
 * `truncatedSvd`: the best rank-r approximation of a matrix, with the rank given or chosen by retained
 * energy, computed exactly or by randomized range finding.
 *
 * @module
 */
import type { Backend } from '@rrt/tensor';
import { InvalidSvdOptionError } from './errors.js';
import { exactSvd, type Svd } from './exact.js';
import { assertMatrix, type Matrix, sumOfSquares } from './matrix.js';
import { BackendMatrixOperator, HostMatrixOperator, type MatrixOperator } from './operator.js';
import {
  DEFAULT_OVERSAMPLING,
  DEFAULT_POWER_ITERATIONS,
  DEFAULT_SEED,
  randomizedSvdOf,
} from './randomized.js';

/** How a truncated SVD was computed. */
export type SvdMethod = 'exact' | 'randomized';

/**
 * `'auto'` picks `'exact'` when `min(rows, cols) ≤` this: below it the exact SVD costs milliseconds to a
 * second and is the reference.
 */
export const EXACT_MAX_DIMENSION = 256;

/** Smallest rank tried first when `'randomized'` searches for the rank that reaches an energy fraction. */
const ENERGY_SEARCH_START_RANK = 32;

/**
 * Relative slack of the energy rule: a rank whose retained energy is within this fraction of the target
 * counts as reaching it, so that `energy: 1` stops at the last singular value that is not rounding noise.
 */
export const ENERGY_TOLERANCE = 1e-12;

/** Options of {@link truncatedSvd}. */
export interface TruncatedSvdOptions {
  /**
   * Rank to keep (an integer ≥ 0). Clamped to `min(rows, cols)` (reported by `rankClamped`). With `energy`
   * it is the upper bound of the chosen rank. Default: `min(rows, cols)` when `energy` is not given either.
   */
  rank?: number;
  /**
   * Keep the smallest rank whose singular values retain at least this fraction of `Σσᵢ² = ‖A‖²_F`,
   * in (0, 1]. A zero matrix gets rank 0.
   */
  energy?: number;
  /**
   * `'exact'`, `'randomized'`, or `'auto'` (default): exact when `min(rows, cols) ≤`
   * {@link EXACT_MAX_DIMENSION}, or when a fixed rank is close to full (`2·(rank + oversampling) >
   * min(rows, cols)`: a sketch that wide is no cheaper than the exact SVD); randomized otherwise. With
   * `energy`, the randomized search falls back to exact once its sketch would pass that width.
   */
  method?: 'auto' | SvdMethod;
  /** Randomized: extra sketch columns beyond the rank; default 10. */
  oversampling?: number;
  /** Randomized: power iterations; default {@link DEFAULT_POWER_ITERATIONS}. */
  powerIterations?: number;
  /** Randomized: seed of the Gaussian test matrix; default 0. */
  seed?: number;
  /** Randomized: runs the products with the matrix on this backend (float32); default on the host. */
  backend?: Backend;
}

/** Result of {@link truncatedSvd}: `U·diag(S)·Vᵀ` is the rank-`rank` approximation. */
export interface TruncatedSvd extends Svd {
  /** The rank kept: `S.length`, the columns of `U` and `V`. */
  rank: number;
  /** How it was computed. */
  method: SvdMethod;
  /** The rank that was asked for, when one was. */
  requestedRank?: number;
  /** Whether the requested rank exceeded `min(rows, cols)` and was lowered to it (the caller may warn). */
  rankClamped: boolean;
  /** `‖A‖²_F = Σ all σᵢ²`. */
  totalEnergy: number;
  /**
   * `‖A − U·diag(S)·Vᵀ‖²_F`: the sum of the dropped `σᵢ²` (exact), or `‖A‖²_F − Σ kept σ̃ᵢ²`
   * (randomized, which is exact for its projection; float32 products leave it accurate to about 1e-6
   * of `‖A‖²_F`).
   */
  discardedEnergy: number;
  /** All `min(rows, cols)` singular values, descending; exact method only. */
  spectrum?: Float64Array;
}

/**
 * The truncated SVD of `matrix` (`[rows, cols]`, row-major): `U` (`[rows, r]`), `S` (`r`), `V`
 * (`[cols, r]`) with `U·diag(S)·Vᵀ` the best rank-r approximation (Eckart–Young), exactly or to within
 * the randomized method's accuracy.
 *
 * @throws {@link InvalidMatrixError} for a malformed matrix, {@link InvalidSvdOptionError} for an option
 * out of range.
 * @example
 * ```ts
 * const { backend } = await createBackend('wasm'); // from @rrt/backend-tfjs
 * const svd = await truncatedSvd(residual, { rank: 64, backend });
 * if (svd.rankClamped) console.warn(`rank ${svd.requestedRank} clamped to ${svd.rank}`);
 * const byEnergy = await truncatedSvd(residual, { energy: 0.9, rank: 256 });
 * ```
 */
export async function truncatedSvd(matrix: Matrix, options: TruncatedSvdOptions = {}): Promise<TruncatedSvd> {
  assertMatrix(matrix);
  validateTruncatedSvdOptions(options, 'truncatedSvd');
  const minDim = Math.min(matrix.rows, matrix.cols);
  const { rank, energy } = options;
  const maxRank = rank === undefined ? minDim : Math.min(rank, minDim);
  const clamping = { requestedRank: rank, rankClamped: rank !== undefined && rank > minDim };
  const oversampling = options.oversampling ?? DEFAULT_OVERSAMPLING;
  const sketchTooWide = (r: number): boolean => 2 * (r + oversampling) > minDim;
  const method = options.method ?? 'auto';
  const useExact =
    method === 'exact' ||
    (method === 'auto' &&
      (minDim <= EXACT_MAX_DIMENSION || (energy === undefined && sketchTooWide(maxRank))));
  if (useExact) return { ...exactTruncated(matrix, maxRank, energy), ...clamping };

  const operator: MatrixOperator = options.backend
    ? new BackendMatrixOperator(options.backend, matrix)
    : new HostMatrixOperator(matrix);
  try {
    const totalEnergy = sumOfSquares(matrix.data);
    const randomizedOptions = {
      oversampling,
      powerIterations: options.powerIterations ?? DEFAULT_POWER_ITERATIONS,
      seed: options.seed ?? DEFAULT_SEED,
    };
    if (energy === undefined) {
      const svd = await randomizedSvdOf(operator, maxRank, randomizedOptions);
      return { ...randomizedResult(svd, svd.S.length, totalEnergy), ...clamping };
    }
    // Energy target: widen the sketch until its captured energy reaches the target (or the rank cap).
    let tryRank = Math.min(maxRank, ENERGY_SEARCH_START_RANK);
    for (;;) {
      const svd = await randomizedSvdOf(operator, tryRank, randomizedOptions);
      const r = rankForEnergy(svd.S, totalEnergy, energy);
      if (r !== null) return { ...randomizedResult(svd, r, totalEnergy), ...clamping };
      if (tryRank >= maxRank) return { ...randomizedResult(svd, tryRank, totalEnergy), ...clamping };
      tryRank = Math.min(maxRank, 2 * tryRank);
      if (method === 'auto' && sketchTooWide(tryRank)) {
        return { ...exactTruncated(matrix, maxRank, energy), ...clamping };
      }
    }
  } finally {
    operator.dispose();
  }
}

/**
 * The smallest `r` with `Σ_{i<r} σᵢ² ≥ energy · total` (within {@link ENERGY_TOLERANCE}), or `null` when
 * the given values do not reach it.
 *
 * @example
 * ```ts
 * rankForEnergy(new Float64Array([3, 2, 1]), 14, 0.9); // 2: (9 + 4) / 14 ≥ 0.9
 * ```
 */
export function rankForEnergy(singularValues: Float64Array, total: number, energy: number): number | null {
  const target = energy * total * (1 - ENERGY_TOLERANCE);
  if (target <= 0) return 0;
  let retained = 0;
  for (let i = 0; i < singularValues.length; i++) {
    const s = singularValues[i]!;
    retained += s * s;
    if (retained >= target) return i + 1;
  }
  return null;
}

function exactTruncated(
  matrix: Matrix,
  maxRank: number,
  energy: number | undefined,
): Omit<TruncatedSvd, 'requestedRank' | 'rankClamped'> {
  const svd = exactSvd(matrix, maxRank);
  const spectrum = svd.spectrum;
  const totalEnergy = sumOfSquares(spectrum);
  const r =
    energy === undefined
      ? maxRank
      : Math.min(maxRank, rankForEnergy(spectrum, totalEnergy, energy) ?? maxRank);
  // Sum the dropped energy from the smallest value up, so that small tails are not lost to rounding.
  let discardedEnergy = 0;
  for (let i = spectrum.length - 1; i >= r; i--) discardedEnergy += spectrum[i]! * spectrum[i]!;
  return {
    U: firstColumns(svd.U, r),
    S: svd.S.slice(0, r),
    V: firstColumns(svd.V, r),
    rank: r,
    method: 'exact',
    totalEnergy,
    discardedEnergy,
    spectrum,
  };
}

function randomizedResult(
  svd: Svd,
  r: number,
  totalEnergy: number,
): Omit<TruncatedSvd, 'requestedRank' | 'rankClamped'> {
  const S = svd.S.slice(0, r);
  return {
    U: firstColumns(svd.U, r),
    S,
    V: firstColumns(svd.V, r),
    rank: r,
    method: 'randomized',
    totalEnergy,
    discardedEnergy: Math.max(0, totalEnergy - sumOfSquares(S)),
  };
}

/** The first `r` columns of `m` (`m` itself when it has exactly `r`). */
function firstColumns(m: Matrix<Float64Array>, r: number): Matrix<Float64Array> {
  if (m.cols === r) return m;
  const out = new Float64Array(m.rows * r);
  for (let i = 0; i < m.rows; i++) out.set(m.data.subarray(i * m.cols, i * m.cols + r), i * r);
  return { rows: m.rows, cols: r, data: out };
}

/**
 * Throws {@link InvalidSvdOptionError} for an option of {@link truncatedSvd} out of range; messages start
 * with `caller`. Internal: shared with `loraFactors`, which must reject bad options before its shortcut
 * for a zero residual.
 */
export function validateTruncatedSvdOptions(options: TruncatedSvdOptions, caller: string): void {
  const { rank, energy, method, oversampling, powerIterations, seed } = options;
  if (rank !== undefined && !(Number.isInteger(rank) && rank >= 0)) {
    throw new InvalidSvdOptionError(`${caller}: rank must be an integer ≥ 0, got ${rank}`);
  }
  if (energy !== undefined && !(energy > 0 && energy <= 1)) {
    throw new InvalidSvdOptionError(`${caller}: energy must be in (0, 1], got ${energy}`);
  }
  if (method !== undefined && method !== 'auto' && method !== 'exact' && method !== 'randomized') {
    throw new InvalidSvdOptionError(
      `${caller}: method must be 'auto', 'exact' or 'randomized', got ${method}`,
    );
  }
  if (oversampling !== undefined && !(Number.isInteger(oversampling) && oversampling >= 0)) {
    throw new InvalidSvdOptionError(`${caller}: oversampling must be an integer ≥ 0, got ${oversampling}`);
  }
  if (powerIterations !== undefined && !(Number.isInteger(powerIterations) && powerIterations >= 0)) {
    throw new InvalidSvdOptionError(
      `${caller}: powerIterations must be an integer ≥ 0, got ${powerIterations}`,
    );
  }
  if (seed !== undefined && !Number.isFinite(seed)) {
    throw new InvalidSvdOptionError(`${caller}: seed must be a finite number, got ${seed}`);
  }
}
