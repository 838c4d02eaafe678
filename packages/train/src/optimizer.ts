/**
 * AdamW (decoupled weight decay, bias-corrected moments) over a model's parameters, with global-norm
 * gradient clipping.
 *
 * @module
 */
import type { Backend, Tensor, Variable } from '@rrt/tensor';
import type { Parameter } from './trainable.js';

/** Hyperparameters of {@link AdamW}. */
export interface AdamWOptions {
  /** β₁, the first moment's decay; default 0.9. */
  beta1?: number;
  /** β₂, the second moment's decay; default 0.95. */
  beta2?: number;
  /** ε added to the second moment's square root; default 1e-8. */
  epsilon?: number;
  /** Decoupled weight decay, applied to matrices and LoRA factors (not norms, biases, embeddings); default 0. */
  weightDecay?: number;
  /** Clip the gradients' global L2 norm to this; `Infinity` turns clipping off. Default 1. */
  maxGradNorm?: number;
}

/** The optimizer's moments of one parameter. */
export interface Moments {
  /** First moment (mean of gradients). */
  m: Variable;
  /** Second moment (mean of squared gradients). */
  v: Variable;
}

/** AdamW over a fixed list of parameters. Its moments are variables that a checkpoint saves and restores. */
export class AdamW {
  /** Moments, one per parameter, in the order given. */
  readonly moments: readonly Moments[];
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly epsilon: number;
  private readonly weightDecay: number;
  private readonly maxGradNorm: number;

  constructor(
    private readonly backend: Backend,
    readonly parameters: readonly Parameter[],
    options: AdamWOptions = {},
  ) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.95;
    this.epsilon = options.epsilon ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    this.maxGradNorm = options.maxGradNorm ?? 1;
    this.moments = parameters.map(({ variable, name }) => {
      const zeros = backend.fill(variable.shape, 0);
      const moments = { m: backend.variable(zeros, `${name}/m`), v: backend.variable(zeros, `${name}/v`) };
      backend.dispose(zeros);
      return moments;
    });
  }

  /**
   * Applies one update with the gradients of {@link AdamW.parameters} (same order) at learning rate `lr`;
   * `step` is the 1-based count of updates including this one (for bias correction). The gradients are
   * not disposed. Returns the gradients' global norm before clipping, a scalar tensor the caller owns.
   */
  step(grads: readonly Tensor[], lr: number, step: number): Tensor {
    const { backend, beta1, beta2, epsilon } = this;
    const norm = backend.tidy(() => backend.sqrt(sumOfSquares(backend, grads)));
    backend.tidy(() => {
      // min(1, maxNorm / norm) without a read-back: maxNorm / max(norm, maxNorm).
      const clip = Number.isFinite(this.maxGradNorm)
        ? backend.div(backend.fill([], this.maxGradNorm), backend.maximum(norm, this.maxGradNorm))
        : undefined;
      const correction1 = 1 - beta1 ** step;
      const correction2 = 1 - beta2 ** step;
      this.parameters.forEach((parameter, index) => {
        const { m, v } = this.moments[index]!;
        const grad = clip ? backend.mul(grads[index]!, clip) : grads[index]!;
        const nextM = backend.add(backend.mul(m, beta1), backend.mul(grad, 1 - beta1));
        const nextV = backend.add(backend.mul(v, beta2), backend.mul(backend.square(grad), 1 - beta2));
        const update = backend.div(
          backend.div(nextM, correction1),
          backend.add(backend.sqrt(backend.div(nextV, correction2)), epsilon),
        );
        const decays = parameter.kind === 'matrix' || parameter.kind === 'lora';
        const decayed =
          decays && this.weightDecay > 0
            ? backend.mul(parameter.variable, 1 - lr * this.weightDecay)
            : parameter.variable;
        backend.assign(parameter.variable, backend.sub(decayed, backend.mul(update, lr)));
        backend.assign(m, nextM);
        backend.assign(v, nextV);
      });
    });
    return norm;
  }

  /** Frees the moments. */
  dispose(): void {
    for (const { m, v } of this.moments) this.backend.dispose([m, v]);
  }
}

/** Σ over tensors of Σ x², as a scalar tensor. */
function sumOfSquares(backend: Backend, tensors: readonly Tensor[]): Tensor {
  return tensors
    .map((tensor) => backend.sum(backend.square(tensor)))
    .reduce((total, part) => backend.add(total, part));
}
