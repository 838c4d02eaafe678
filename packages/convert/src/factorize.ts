/**
 * The one place that calls `@rrt/lora-svd`: a residual in, LoRA factors out, with the scaling folded in
 * so that `W_shared + (α/r)·B·A` equals the target at full rank.
 *
 * @module
 */
import { loraFactors } from '@rrt/lora-svd';
import type { Backend } from '@rrt/tensor';

/** How the truncated SVDs are computed (passed to `@rrt/lora-svd`). */
export interface SvdOptions {
  /** Tensor backend for the randomized SVD of large matrices; without one everything runs in JavaScript. */
  backend?: Backend;
  /** `auto` (default): exact for small matrices, randomized for large ones. */
  method?: 'auto' | 'exact' | 'randomized';
  /** Extra random directions of the randomized SVD. */
  oversampling?: number;
  /** Power iterations of the randomized SVD. */
  powerIterations?: number;
}

/** LoRA factors of one residual: `B: [rows, rank]`, `A: [rank, cols]`, row-major float32. */
export interface Factors {
  b: Float32Array;
  a: Float32Array;
  /** Whether the residual was exactly zero and the factors are the standard LoRA init (B = 0, A random). */
  zeroResidual: boolean;
}

/**
 * Factors `residual: [rows, cols]` into a rank-`rank` LoRA with scaling `alpha / rank`: the truncated SVD
 * `U_r Σ_r V_rᵀ`, stored as `B = U_r Σ_r · (rank / alpha)` and `A = V_rᵀ`. A zero residual gets the
 * standard LoRA initialisation of `@rrt/lora-svd` (B = 0, A random), so the product is still 0.
 */
export async function factorResidual(
  residual: Float64Array,
  rows: number,
  cols: number,
  rank: number,
  alpha: number,
  seed: number,
  options: SvdOptions,
): Promise<Factors> {
  const result = await loraFactors(
    { rows, cols, data: residual },
    {
      rank,
      alpha,
      seed,
      ...(options.backend ? { backend: options.backend } : {}),
      ...(options.method ? { method: options.method } : {}),
      ...(options.oversampling !== undefined ? { oversampling: options.oversampling } : {}),
      ...(options.powerIterations !== undefined ? { powerIterations: options.powerIterations } : {}),
    },
  );
  return { b: result.B, a: result.A, zeroResidual: result.zeroResidual };
}
