/**
 * {@link train}: the training loop. Uptraining (a converted model, optionally distilled from its original)
 * and pretraining (a randomly initialised model) are the same loop.
 *
 * @module
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Decoder,
  exitDepths,
  loadModel,
  openSafetensors,
  toFloat32,
  writeSafetensors,
  float32Bytes,
  yieldToEventLoop,
} from '@rrt/core';
import type { Backend, ValueAndGrad, Variable } from '@rrt/tensor';
import type { DataSplit, TextDataset, TokenBatch } from './data.js';
import { ResumeError, TeacherMismatchError, TrainOptionError } from './errors.js';
import { crossEntropy, defaultLossWeights, type LossWeights, targetIndices, trainingLoss } from './losses.js';
import { AdamW } from './optimizer.js';
import { TrainRandom } from './random.js';
import { learningRateAt } from './schedule.js';
import { type Parameter, TrainableModel, writeJsonAtomically } from './trainable.js';

/** What {@link TrainOptions.onProgress} is told after every step. */
export interface TrainProgress {
  /** Optimizer steps done (1-based). */
  step: number;
  /** Steps of the whole run. */
  totalSteps: number;
  /** This step's training loss (the full objective). */
  loss: number;
  /** The learning rate this step used. */
  learningRate: number;
  /** The gradients' global norm before clipping. */
  gradNorm: number;
  /** Training tokens per second over the steps this process ran. */
  tokensPerSecond: number;
  /** Estimated seconds to the end of the run. */
  etaSeconds: number;
  /** Mean held-out cross-entropy (nats per token), on the steps where it was measured. */
  heldOutLoss?: number;
}

/** Options of {@link train}. */
export interface TrainOptions {
  /** The model to train (a Hugging Face directory: vanilla, recursive or relaxed). */
  modelDir: string;
  /**
   * Where the run writes: the trained model (`model.safetensors` + the source's config and tokenizer),
   * `train-state.safetensors` (resumable state), `split.json` and `train-log.json`.
   */
  outDir: string;
  /** The tokenized corpus and its split. */
  dataset: TextDataset;
  /** Optimizer steps of the whole run. */
  steps: number;
  /** Sequences per step; default 8. */
  batchSize?: number;
  /** Tokens per sequence; default 128 (at most the model's positions). */
  sequenceLength?: number;
  /** Peak learning rate; default 1e-3. */
  learningRate?: number;
  /** Linear warmup steps; default 10% of `steps`. */
  warmupSteps?: number;
  /** The cosine's floor as a fraction of the peak; default 0.1. */
  minLearningRateRatio?: number;
  /** AdamW's decoupled weight decay; default 0.01. */
  weightDecay?: number;
  /** AdamW β₁; default 0.9. */
  beta1?: number;
  /** AdamW β₂; default 0.95. */
  beta2?: number;
  /** Global gradient-norm clip; default 1. */
  maxGradNorm?: number;
  /** Leave the embedding (and a tied head) untrained; default false. */
  freezeEmbeddings?: boolean;
  /** Distil from this model (the original, for an uptrained conversion): forward KL to its logits. */
  teacherDir?: string;
  /** Train every loop's exit (the paper's early-exit training); default false. */
  earlyExit?: boolean;
  /** Coefficients of the loss terms; default {@link defaultLossWeights}. */
  lossWeights?: LossWeights;
  /** Seed of the batch sampling; default 0. */
  seed?: number;
  /** Write the resumable state every this many steps (and at the end); default `max(1, steps / 10)`. */
  checkpointEvery?: number;
  /** Measure held-out loss every this many steps (and at the start and end); default: start and end only. */
  evalEvery?: number;
  /** Held-out windows (of `sequenceLength`) that evaluation uses; default 32. */
  evalWindows?: number;
  /** Continue from `outDir/train-state.safetensors` when it exists; default false. */
  resume?: boolean;
  /** dtype of the written `model.safetensors`; default F32. */
  saveDtype?: 'F32' | 'F16';
  /** Called after every step. */
  onProgress?: (progress: TrainProgress) => void;
  /** Stops the run before its next step, without writing (as a kill would). */
  signal?: AbortSignal;
}

/** Result of {@link train}. */
export interface TrainResult {
  /** Training loss of every step from the first (also the steps of an earlier, resumed-from process). */
  losses: number[];
  /** Held-out cross-entropy measurements: `[step, loss]`, step 0 before training. */
  heldOutLosses: [number, number][];
  /** Steps completed. */
  stepsDone: number;
  /** Whether the run stopped early on {@link TrainOptions.signal}. */
  interrupted: boolean;
  /** The step it resumed from (0 for a fresh run). */
  resumedFrom: number;
  /** Tokens trained on by this process, and its wall time in seconds (training steps only). */
  tokens: number;
  seconds: number;
}

/** Name of the resumable state file in a run's output directory. */
export const STATE_FILE = 'train-state.safetensors';

/**
 * Trains a model on a dataset, writing the trained model and a resumable state to `outDir`.
 * Everything is seeded: the same options on a deterministic backend give the same losses, and a run
 * killed and resumed (`resume: true`) gives the losses of an uninterrupted one.
 *
 * @example
 * ```ts
 * const dataset = TextDataset.create({ documents, encode: (t) => tokenizer.encode(t, { addBos: false }), bosId: 1 });
 * const result = await train(backend, { modelDir: 'relaxed', outDir: 'uptrained', dataset, steps: 200, teacherDir: 'original' });
 * ```
 */
export async function train(backend: Backend, options: TrainOptions): Promise<TrainResult> {
  const settings = resolveSettings(options);
  const model = await TrainableModel.load(options.modelDir, backend);
  let teacher: Decoder | undefined;
  let optimizer: AdamW | undefined;
  try {
    if (settings.sequenceLength > model.config.maxPositionEmbeddings) {
      throw new TrainOptionError(
        'sequenceLength',
        `at most max_position_embeddings ${model.config.maxPositionEmbeddings}`,
        settings.sequenceLength,
      );
    }
    if (options.teacherDir) {
      teacher = await loadModel(options.teacherDir, backend);
      if (teacher.config.vocabSize !== model.config.vocabSize) {
        throw new TeacherMismatchError(
          options.teacherDir,
          `vocabulary of ${teacher.config.vocabSize} ids, the student has ${model.config.vocabSize}`,
        );
      }
    }
    const trained = model.parameters.filter((p) => !(settings.freezeEmbeddings && p.kind === 'embedding'));
    optimizer = new AdamW(backend, trained, settings);
    const statePath = join(options.outDir, STATE_FILE);
    const fingerprint = JSON.stringify({ ...settings, split: splitSummary(options.dataset.split) });
    let random = new TrainRandom(settings.seed);
    let losses: number[] = [];
    let heldOutLosses: [number, number][] = [];
    let startStep = 0;
    if (options.resume && existsSync(statePath)) {
      const state = await readState(statePath, fingerprint, model, optimizer);
      random = TrainRandom.fromState(state.randomState);
      losses = state.losses;
      heldOutLosses = state.heldOutLosses;
      startStep = state.step;
    }
    await mkdir(options.outDir, { recursive: true });
    await writeJsonAtomically(join(options.outDir, 'split.json'), options.dataset.split);
    const evalBatches = options.dataset.heldOutBatches(
      settings.batchSize,
      settings.sequenceLength,
      settings.evalWindows,
    );
    const evaluate = async (step: number) => {
      const loss = await heldOutLoss(backend, model, evalBatches);
      heldOutLosses = [...heldOutLosses.filter(([s]) => s !== step), [step, loss]];
      return loss;
    };
    if (startStep === 0 && heldOutLosses.length === 0) await evaluate(0);

    const tokensPerStep = settings.batchSize * settings.sequenceLength;
    const started = performance.now();
    let interrupted = false;
    let step = startStep;
    while (step < settings.steps) {
      await yieldToEventLoop(); // lets a Ctrl-C handler run between steps
      if (options.signal?.aborted) {
        interrupted = true;
        break;
      }
      const batch = options.dataset.sampleBatch(random, settings.batchSize, settings.sequenceLength);
      const lr = learningRateAt(step + 1, { ...settings, totalSteps: settings.steps });
      const { loss, gradNorm } = await trainingStep(backend, model, optimizer, batch, lr, step + 1, {
        teacher,
        earlyExit: settings.earlyExit,
        lossWeights: settings.lossWeights,
      });
      step++;
      losses.push(loss);
      const last = step === settings.steps;
      let measured: number | undefined;
      if (last || (settings.evalEvery > 0 && step % settings.evalEvery === 0))
        measured = await evaluate(step);
      if (last || step % settings.checkpointEvery === 0) {
        await writeState(statePath, fingerprint, model, optimizer, {
          step,
          randomState: random.state,
          losses,
          heldOutLosses,
        });
        await model.save(options.outDir, { dtype: settings.saveDtype });
        await writeJsonAtomically(join(options.outDir, 'train-log.json'), {
          settings: JSON.parse(fingerprint),
          step,
          losses,
          heldOutLosses,
        });
      }
      const seconds = (performance.now() - started) / 1000;
      const done = step - startStep;
      options.onProgress?.({
        step,
        totalSteps: settings.steps,
        loss,
        learningRate: lr,
        gradNorm,
        tokensPerSecond: (done * tokensPerStep) / seconds,
        etaSeconds: (seconds / done) * (settings.steps - step),
        ...(measured === undefined ? {} : { heldOutLoss: measured }),
      });
    }
    return {
      losses,
      heldOutLosses,
      stepsDone: step,
      interrupted,
      resumedFrom: startStep,
      tokens: (step - startStep) * tokensPerStep,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    optimizer?.dispose();
    teacher?.dispose();
    model.dispose();
  }
}

/** What one step needs besides the batch. */
export interface StepOptions {
  teacher?: Decoder;
  earlyExit: boolean;
  lossWeights: LossWeights;
}

/**
 * One optimizer step on a batch: the loss and its gradients through {@link Decoder.forward}, then AdamW.
 * Returns the loss and the gradient norm; leaves no tensor behind.
 */
export async function trainingStep(
  backend: Backend,
  model: TrainableModel,
  optimizer: AdamW,
  batch: TokenBatch,
  learningRate: number,
  step: number,
  options: StepOptions,
): Promise<{ loss: number; gradNorm: number }> {
  const { value, grads } = lossAndGradients(backend, model, optimizer.parameters, batch, options);
  const gradNorm = optimizer.step(grads, learningRate, step);
  backend.dispose(grads);
  const [loss, norm] = await Promise.all([backend.read(value), backend.read(gradNorm)]);
  backend.dispose([value, gradNorm]);
  return { loss: loss[0]!, gradNorm: norm[0]! };
}

/**
 * The training loss of a batch and its gradients with respect to `parameters` (same order), through
 * the model's own {@link Decoder.forward} (with `loopOutputs` for early exit). The caller owns (and
 * disposes) the returned tensors; nothing else is left behind.
 */
export function lossAndGradients(
  backend: Backend,
  model: TrainableModel,
  parameters: readonly Parameter[],
  batch: TokenBatch,
  options: StepOptions,
): ValueAndGrad {
  const ids = backend.fromArray(batch.inputs, [batch.batch, batch.length], 'int32');
  const targetIndex = targetIndices(backend, batch.targets, model.config.vocabSize);
  // Constants of the loss, computed outside the gradient: the teacher's logits and, for early exit, the
  // student's own full-depth logits (the "detached" final loop that earlier loops are distilled from).
  // NOTE: the Backend has no stop-gradient op, so detaching costs one extra forward pass.
  const teacherLogits = options.teacher?.forward(ids).logits;
  const earlierExits = exitDepths(model.config.recursion, model.config.numHiddenLayers).length > 1;
  const detachedFinalLogits =
    options.earlyExit && earlierExits ? model.withHead((decoder) => decoder.forward(ids).logits) : undefined;
  try {
    return backend.valueAndGrad(
      () =>
        model.withHead((decoder) => {
          const output = decoder.forward(ids, { loopOutputs: options.earlyExit });
          const loopLogits = options.earlyExit ? output.loops.map((loop) => loop.logits) : [output.logits];
          return trainingLoss(
            backend,
            { loopLogits, targetIndex, teacherLogits, detachedFinalLogits },
            options.lossWeights,
          );
        }),
      parameters.map((p) => p.variable),
    );
  } finally {
    const constants = [ids, targetIndex, teacherLogits, detachedFinalLogits].filter((t) => t !== undefined);
    backend.dispose(constants);
  }
}

/** Mean next-token cross-entropy (nats per token) of the full-depth model over fixed batches. */
export async function heldOutLoss(
  backend: Backend,
  model: TrainableModel,
  batches: readonly TokenBatch[],
): Promise<number> {
  let total = 0;
  let count = 0;
  for (const batch of batches) {
    const loss = backend.tidy(() => {
      const ids = backend.fromArray(batch.inputs, [batch.batch, batch.length], 'int32');
      const targetIndex = targetIndices(backend, batch.targets, model.config.vocabSize);
      return model.withHead((decoder) => crossEntropy(backend, decoder.forward(ids).logits, targetIndex));
    });
    const value = (await backend.read(loss))[0]!;
    backend.dispose(loss);
    total += value * batch.inputs.length;
    count += batch.inputs.length;
  }
  return total / count;
}

function resolveSettings(options: TrainOptions) {
  const positiveInt = (name: string, value: number) => {
    if (!Number.isInteger(value) || value <= 0) throw new TrainOptionError(name, 'a positive integer', value);
    return value;
  };
  const nonNegative = (name: string, value: number) => {
    if (!(Number.isFinite(value) && value >= 0))
      throw new TrainOptionError(name, 'a finite number ≥ 0', value);
    return value;
  };
  const steps = positiveInt('steps', options.steps);
  const learningRate = options.learningRate ?? 1e-3;
  if (!(Number.isFinite(learningRate) && learningRate > 0)) {
    throw new TrainOptionError('learningRate', 'a finite number > 0', learningRate);
  }
  const warmupSteps = options.warmupSteps ?? Math.max(1, Math.round(steps / 10));
  if (!Number.isInteger(warmupSteps) || warmupSteps < 1)
    throw new TrainOptionError('warmupSteps', 'an integer ≥ 1', warmupSteps);
  const maxGradNorm = options.maxGradNorm ?? 1;
  if (!(maxGradNorm > 0))
    throw new TrainOptionError('maxGradNorm', 'a number > 0 (Infinity: no clipping)', maxGradNorm);
  return {
    steps,
    batchSize: positiveInt('batchSize', options.batchSize ?? 8),
    sequenceLength: positiveInt('sequenceLength', options.sequenceLength ?? 128),
    learningRate,
    warmupSteps,
    minLearningRateRatio: nonNegative('minLearningRateRatio', options.minLearningRateRatio ?? 0.1),
    weightDecay: nonNegative('weightDecay', options.weightDecay ?? 0.01),
    beta1: nonNegative('beta1', options.beta1 ?? 0.9),
    beta2: nonNegative('beta2', options.beta2 ?? 0.95),
    maxGradNorm,
    freezeEmbeddings: options.freezeEmbeddings ?? false,
    distilled: options.teacherDir !== undefined,
    earlyExit: options.earlyExit ?? false,
    lossWeights: options.lossWeights ?? defaultLossWeights,
    seed: options.seed ?? 0,
    checkpointEvery: positiveInt(
      'checkpointEvery',
      options.checkpointEvery ?? Math.max(1, Math.round(steps / 10)),
    ),
    evalEvery: options.evalEvery === undefined ? 0 : positiveInt('evalEvery', options.evalEvery),
    evalWindows: positiveInt('evalWindows', options.evalWindows ?? 32),
    saveDtype: options.saveDtype ?? 'F32',
  };
}

function splitSummary(split: DataSplit) {
  return { ...split, heldOutDocuments: split.heldOutDocuments.length };
}

interface SavedState {
  step: number;
  randomState: number;
  losses: number[];
  heldOutLosses: [number, number][];
}

/**
 * Writes the resumable state: every trained parameter in its in-memory layout (so that restoring it is
 * exact), both AdamW moments, and in the metadata the step, the sampler's random state (the data
 * position), the loss history and the run's settings. One safetensors file, written atomically.
 */
async function writeState(
  path: string,
  fingerprint: string,
  model: TrainableModel,
  optimizer: AdamW,
  state: SavedState,
): Promise<void> {
  const tensors = [];
  const entry = async (name: string, tensor: Variable) => ({
    name,
    dtype: 'F32' as const,
    shape: [...tensor.shape],
    bytes: float32Bytes((await model.backend.read(tensor)) as Float32Array),
  });
  for (const parameter of model.parameters)
    tensors.push(await entry(`param/${parameter.name}`, parameter.variable));
  for (const [index, parameter] of optimizer.parameters.entries()) {
    const { m, v } = optimizer.moments[index]!;
    tensors.push(await entry(`adam_m/${parameter.name}`, m), await entry(`adam_v/${parameter.name}`, v));
  }
  await writeSafetensors(path, tensors, {
    format: 'rrt-train-state',
    settings: fingerprint,
    state: JSON.stringify(state),
  });
}

async function readState(
  path: string,
  fingerprint: string,
  model: TrainableModel,
  optimizer: AdamW,
): Promise<SavedState> {
  const file = await openSafetensors(path);
  try {
    if (file.metadata.format !== 'rrt-train-state' || file.metadata.state === undefined) {
      throw new ResumeError(path, 'is not a training state written by @rrt/train');
    }
    if (file.metadata.settings !== fingerprint) {
      throw new ResumeError(
        path,
        `was written by a run with other settings (saved ${file.metadata.settings}, now ${fingerprint})`,
      );
    }
    const restore = async (name: string, target: Variable) => {
      const info = file.entries.get(name);
      if (!info) throw new ResumeError(path, `tensor "${name}" is missing`);
      if (info.shape.join(',') !== target.shape.join(',')) {
        throw new ResumeError(path, `tensor "${name}" has shape [${info.shape}], expected [${target.shape}]`);
      }
      const value = model.backend.fromArray(toFloat32(await file.readTensor(name)), target.shape);
      model.backend.assign(target, value);
      model.backend.dispose(value);
    };
    for (const parameter of model.parameters) await restore(`param/${parameter.name}`, parameter.variable);
    for (const [index, parameter] of optimizer.parameters.entries()) {
      const { m, v } = optimizer.moments[index]!;
      await restore(`adam_m/${parameter.name}`, m);
      await restore(`adam_v/${parameter.name}`, v);
    }
    return JSON.parse(file.metadata.state) as SavedState;
  } finally {
    await file.close();
  }
}
