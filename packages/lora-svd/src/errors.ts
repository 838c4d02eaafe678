/**
 * Typed errors of `@rrt/lora-svd`. Every error is an {@link LoraSvdError}, so a caller can catch the
 * package's failures as a group and tell them apart by class.
 *
 * @module
 */

/** Base class of every error thrown by `@rrt/lora-svd`. */
export class LoraSvdError extends Error {
  override name = 'LoraSvdError';
}

/**
 * A matrix argument is malformed: non-integer or negative dimensions, a data array whose length is not
 * `rows × cols`, or a non-finite entry.
 *
 * @example
 * ```ts
 * try { createMatrix(2, 3, new Float32Array(5)); } catch (e) { if (e instanceof InvalidMatrixError) ... }
 * ```
 */
export class InvalidMatrixError extends LoraSvdError {
  override name = 'InvalidMatrixError';
}

/** An option has a value outside its documented range (for example `energy` not in (0, 1]). */
export class InvalidSvdOptionError extends LoraSvdError {
  override name = 'InvalidSvdOptionError';
}

/**
 * The implicit-shift QR iteration on the bidiagonal matrix did not converge within its iteration budget.
 * This does not happen on finite inputs in practice; it is reported rather than looping forever.
 */
export class SvdConvergenceError extends LoraSvdError {
  override name = 'SvdConvergenceError';
}
