/**
 * `@rrt/train`: training of rrt decoders through their own forward pass. Uptraining of a converted model
 * (every weight: shared block, LoRA, norms; embeddings optionally frozen) with AdamW, warmup and cosine
 * decay and global-norm clipping; forward-KL distillation from the original model; the paper's
 * early-exit losses; pretraining of a randomly initialised model; a seeded split of a text corpus by
 * documents; resumable, atomically written checkpoints.
 *
 * @example
 * ```ts
 * import { TextDataset, splitDocuments, train } from '@rrt/train';
 * const dataset = TextDataset.create({ documents: splitDocuments(text), encode, bosId: 1 });
 * await train(backend, { modelDir: 'relaxed', outDir: 'uptrained', dataset, steps: 200 });
 * ```
 *
 * @packageDocumentation
 */
export { type BpeOptions, learnBpeVocab } from './bpe.js';
export {
  type DataSplit,
  splitDocuments,
  TextDataset,
  type TextDatasetOptions,
  type TokenBatch,
} from './data.js';
export {
  ResumeError,
  TeacherMismatchError,
  TrainError,
  TrainingDataError,
  TrainOptionError,
  UnsupportedModelError,
} from './errors.js';
export { type RandomInitOptions, writeRandomModel } from './init.js';
export {
  crossEntropy,
  defaultLossWeights,
  forwardKL,
  type LossInputs,
  type LossWeights,
  targetIndices,
  trainingLoss,
} from './losses.js';
export { AdamW, type AdamWOptions, type Moments } from './optimizer.js';
export { TrainRandom } from './random.js';
export { learningRateAt, type ScheduleOptions } from './schedule.js';
export { type Parameter, type ParameterLayout, TrainableModel } from './trainable.js';
export {
  heldOutLoss,
  lossAndGradients,
  STATE_FILE,
  type StepOptions,
  type TrainOptions,
  type TrainProgress,
  type TrainResult,
  train,
  trainingStep,
} from './trainer.js';
