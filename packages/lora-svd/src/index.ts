/**
 * `@rrt/lora-svd`: truncated singular value decompositions for LoRA initialisation. It knows nothing of
 * models: give it a residual matrix `R = W_orig − W_shared` (`[out, in]`, row-major) and it returns the
 * best rank-r factors.
 *
 * - {@link truncatedSvd}: rank by count or by retained energy; exact (float64, Golub–Kahan–Reinsch) or
 *   randomized (Halko–Martinsson–Tropp, the big products on a tensor `Backend`).
 * - {@link loraFactors}: `B`, `A` with `(α/r)·B·A ≈ R`, exact at full rank for every `α`.
 * - {@link exactSvd}, {@link randomizedSvd}: the two engines, and a small {@link Matrix} toolkit.
 *
 * @example
 * ```ts
 * import { createBackend } from '@rrt/backend-tfjs';
 * import { loraFactors } from '@rrt/lora-svd';
 * const { backend } = await createBackend('wasm');
 * const { B, A, scale } = await loraFactors({ rows: 2048, cols: 5632, data: residual }, { rank: 64, backend });
 * ```
 *
 * @packageDocumentation
 */
export { InvalidMatrixError, InvalidSvdOptionError, LoraSvdError, SvdConvergenceError } from './errors.js';
export { type ExactSvd, exactSvd, type Svd } from './exact.js';
export { type LoraFactorOptions, type LoraFactors, loraFactors } from './lora.js';
export {
  assertMatrix,
  createMatrix,
  frobeniusNorm,
  identityMatrix,
  type Matrix,
  type MatrixData,
  type MultiplyOptions,
  multiplyMatrices,
  sumOfSquares,
  toFloat64,
  transposeMatrix,
} from './matrix.js';
export {
  DEFAULT_OVERSAMPLING,
  DEFAULT_POWER_ITERATIONS,
  DEFAULT_SEED,
  type RandomizedSvd,
  type RandomizedSvdOptions,
  randomizedSvd,
} from './randomized.js';
export { SeededRandom } from './random.js';
export {
  ENERGY_TOLERANCE,
  EXACT_MAX_DIMENSION,
  rankForEnergy,
  type SvdMethod,
  type TruncatedSvd,
  type TruncatedSvdOptions,
  truncatedSvd,
} from './truncated.js';
