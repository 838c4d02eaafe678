/**
 * The training losses, as backend ops (so that they differentiate): next-token cross-entropy, forward-KL
 * distillation, and their early-exit combination.
 *
 * @module
 */
import type { Backend, Tensor } from '@rrt/tensor';

/**
 * Flat indices `row · vocab + target` of each target's log-probability in the flattened `[rows·vocab]`
 * log-softmax, as an int32 tensor `[rows]` (the caller disposes it).
 */
export function targetIndices(backend: Backend, targets: Int32Array, vocabSize: number): Tensor {
  const flat = new Int32Array(targets.length);
  for (let row = 0; row < targets.length; row++) flat[row] = row * vocabSize + targets[row]!;
  return backend.fromArray(flat, [targets.length], 'int32');
}

/**
 * Mean next-token cross-entropy `−(1/n) Σ log softmax(logits)[target]` over every position.
 * `logits: [..., vocab]`; `targetIndex` from {@link targetIndices} over the same positions.
 */
export function crossEntropy(backend: Backend, logits: Tensor, targetIndex: Tensor): Tensor {
  const vocab = logits.shape[logits.shape.length - 1]!;
  const rows = logits.shape.reduce((n, d) => n * d, 1) / vocab;
  const logProbabilities = backend.reshape(backend.logSoftmax(backend.reshape(logits, [rows, vocab])), [
    rows * vocab,
    1,
  ]);
  // One gather of the targets' entries (its gradient is a scatter): no one-hot [rows, vocab] tensor.
  const picked = backend.gather(logProbabilities, targetIndex); // [rows, 1]
  return backend.neg(backend.mean(picked));
}

/**
 * Forward KL divergence `KL(teacher ‖ student) = (1/n) Σ_positions Σ_v p_t (log p_t − log p_s)`, the mean
 * over positions. `teacherLogits` should be a constant (a tensor computed outside the gradient), so only
 * the student is pulled towards it. It is exactly 0 when both logits are equal, as the log-probability
 * differences then cancel exactly.
 */
export function forwardKL(backend: Backend, studentLogits: Tensor, teacherLogits: Tensor): Tensor {
  const vocab = studentLogits.shape[studentLogits.shape.length - 1]!;
  const rows = studentLogits.shape.reduce((n, d) => n * d, 1) / vocab;
  const studentLog = backend.logSoftmax(backend.reshape(studentLogits, [rows, vocab]));
  const teacherLog = backend.logSoftmax(backend.reshape(teacherLogits, [rows, vocab]));
  const perPosition = backend.sum(
    backend.mul(backend.exp(teacherLog), backend.sub(teacherLog, studentLog)),
    -1,
  );
  return backend.mean(perPosition);
}

/** How the parts of {@link trainingLoss} are weighed. */
export interface LossWeights {
  /**
   * Weight of the distillation term `KL(teacher ‖ final loop)` added to the final loop's cross-entropy
   * (used when a teacher is given).
   */
  distillation: number;
  /**
   * Weight of every earlier loop's loss (its cross-entropy plus its KL from the detached final loop) in
   * early-exit training; the final loop has weight 1. The paper's "aggressive" coefficient is 0.1.
   */
  earlierLoops: number;
}

/** The paper's coefficients: 1 on the last loop, 0.1 on earlier loops; distillation weight 1. */
export const defaultLossWeights: LossWeights = { distillation: 1, earlierLoops: 0.1 };

/** What {@link trainingLoss} combines. */
export interface LossInputs {
  /** The student's logits after every loop, earliest first; the last is the full-depth output. */
  loopLogits: readonly Tensor[];
  /** From {@link targetIndices}. */
  targetIndex: Tensor;
  /** The teacher's logits over the same positions (a constant), when distilling. */
  teacherLogits?: Tensor;
  /**
   * The student's own full-depth logits computed outside the gradient (a constant: the "detached" final
   * loop), when there are earlier loops to train.
   */
  detachedFinalLogits?: Tensor;
}

/**
 * The scalar training loss:
 * `CE(final) + w_d·KL(teacher ‖ final) + w_e · Σ_{earlier loops l} (CE(l) + KL(sg(final) ‖ l))`,
 * where the distillation term is present with a teacher and the earlier-loop sum with more than one loop
 * logits (early-exit training), `sg` meaning the final loop's logits without gradient.
 */
export function trainingLoss(
  backend: Backend,
  inputs: LossInputs,
  weights: LossWeights = defaultLossWeights,
): Tensor {
  const { loopLogits, targetIndex } = inputs;
  const final = loopLogits[loopLogits.length - 1]!;
  let loss = crossEntropy(backend, final, targetIndex);
  if (inputs.teacherLogits) {
    loss = backend.add(
      loss,
      backend.mul(forwardKL(backend, final, inputs.teacherLogits), weights.distillation),
    );
  }
  for (const logits of loopLogits.slice(0, -1)) {
    let term = crossEntropy(backend, logits, targetIndex);
    if (inputs.detachedFinalLogits)
      term = backend.add(term, forwardKL(backend, logits, inputs.detachedFinalLogits));
    loss = backend.add(loss, backend.mul(term, weights.earlierLoops));
  }
  return loss;
}
