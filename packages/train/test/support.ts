/**
 * Helpers of this package's tests: a tiny original model and its relaxed conversion on disk, the float64
 * reference of the training loss, and small datasets.
 *
 * @module
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  exitDepths,
  layerSchedule,
  linearModules,
  loraTensorName,
  moduleTensorName,
  type ModelConfig,
} from '@rrt/core';
import { convertToRecursive } from '@rrt/convert';
import { afterAll, beforeAll } from 'vitest';
import { referenceLogits, type ReferenceConfig, type ReferenceWeights } from '../../core/test/reference.js';
import { randomConfigs, writeRandomModel } from '../../core/test/random-model.js';
import { TextDataset, type TrainOptions } from '../src/index.js';

/** A fresh temporary directory. */
export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `rrt-train-${prefix}-`));
}

/**
 * Core's 3-layer random GQA Llama (biases everywhere, untied head, linear RoPE scaling) and its relaxed
 * 1×3 conversion (average init, LoRA rank 4 on every module).
 */
export async function writeTinyModels(dir: string, seed = 5): Promise<TinyModels> {
  const originalDir = join(dir, 'original');
  const relaxedDir = join(dir, 'relaxed');
  const { reference } = await writeRandomModel(originalDir, 'llama-gqa', seed);
  await convertToRecursive(originalDir, relaxedDir, { loops: 3, init: 'average', ranks: 4 });
  return { originalDir, relaxedDir, reference };
}

/** The directories {@link writeTinyModels} writes, and the original's float64 reference config. */
export interface TinyModels {
  originalDir: string;
  relaxedDir: string;
  reference: ReferenceConfig;
}

/**
 * A temporary directory holding the tiny models for the tests of one file: written before them (vitest
 * `beforeAll`), removed after. Read its fields inside the tests.
 */
export function tinyModelsFixture(prefix: string): { workDir: string; dirs: TinyModels } {
  const fixture = {} as { workDir: string; dirs: TinyModels };
  beforeAll(async () => {
    fixture.workDir = await tempDir(prefix);
    fixture.dirs = await writeTinyModels(fixture.workDir);
  });
  afterAll(async () => {
    if (fixture.workDir) await rm(fixture.workDir, { recursive: true, force: true });
  });
  return fixture;
}

/** The vocabulary size of the tiny models. */
export const tinyVocab = randomConfigs['llama-gqa']!.reference.vocabSize;

/** A synthetic corpus over the tiny vocabulary: documents of "words" that the ids encode one to one. */
export function tinyDataset(seed = 0, documents = 40): TextDataset {
  const texts = Array.from({ length: documents }, (_, d) =>
    Array.from({ length: 30 + ((d * 7) % 20) }, (_, i) =>
      String(3 + ((d * 13 + i * i * 5 + i) % (tinyVocab - 3))),
    ).join(' '),
  );
  return TextDataset.create({
    documents: texts,
    encode: (text) => text.split(' ').map(Number),
    bosId: 1,
    heldOutFraction: 0.2,
    seed,
  });
}

/**
 * The run that the resume tests interrupt: the relaxed tiny model distilled from its original with
 * early exit, 6 steps, a checkpoint every 2.
 */
export function resumableRun(
  dirs: { originalDir: string; relaxedDir: string },
  outDir: string,
): TrainOptions {
  return {
    modelDir: dirs.relaxedDir,
    teacherDir: dirs.originalDir,
    earlyExit: true,
    outDir,
    dataset: tinyDataset(),
    steps: 6,
    batchSize: 3,
    sequenceLength: 12,
    learningRate: 3e-3,
    warmupSteps: 2,
    checkpointEvery: 2,
    evalWindows: 4,
    seed: 9,
  };
}

/** Float64 values of a model's parameters in checkpoint (Hugging Face) layout, keyed by tensor name. */
export type Float64Parameters = Map<string, Float64Array>;

/**
 * The unrolled weights of a (relaxed) recursive model, float64, for the first `depth` effective layers:
 * effective layer ℓ runs its stored layer's weights plus `scale · B·A` of its loop's LoRA.
 */
export function unrolledWeights(
  config: ModelConfig,
  params: Float64Parameters,
  depth: number,
): ReferenceWeights {
  const out: ReferenceWeights = new Map();
  const get = (name: string) => {
    const value = params.get(name);
    if (!value) throw new Error(`missing ${name}`);
    return value;
  };
  out.set('model.embed_tokens.weight', get('model.embed_tokens.weight'));
  out.set('model.norm.weight', get('model.norm.weight'));
  if (params.has('lm_head.weight')) out.set('lm_head.weight', get('lm_head.weight'));
  const recursion = config.recursion;
  for (const layer of layerSchedule(recursion, config.numHiddenLayers).slice(0, depth)) {
    const stored = `model.layers.${layer.blockLayer}`;
    const target = `model.layers.${layer.depth}`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      out.set(`${target}.${norm}.weight`, get(`${stored}.${norm}.weight`));
    }
    for (const module of linearModules) {
      const source = moduleTensorName(layer.blockLayer, module);
      const name = moduleTensorName(layer.depth, module);
      const weight = Float64Array.from(get(`${source}.weight`));
      const loraPrefix =
        recursion && layer.shared ? loraTensorName(layer.loopIndex, layer.blockLayer, module) : '';
      if (loraPrefix && params.has(`${loraPrefix}.lora_A.weight`)) {
        const a = get(`${loraPrefix}.lora_A.weight`); // [r, in]
        const b = get(`${loraPrefix}.lora_B.weight`); // [out, r]
        const rank = recursion!.loraRanks[module];
        const inFeatures = a.length / rank;
        const outFeatures = b.length / rank;
        const scale = recursion!.loraAlpha / rank;
        for (let o = 0; o < outFeatures; o++) {
          for (let i = 0; i < inFeatures; i++) {
            let sum = 0;
            for (let k = 0; k < rank; k++) sum += b[o * rank + k]! * a[k * inFeatures + i]!;
            weight[o * inFeatures + i]! += scale * sum;
          }
        }
      }
      out.set(`${name}.weight`, weight);
      if (params.has(`${source}.bias`)) out.set(`${name}.bias`, get(`${source}.bias`));
    }
  }
  return out;
}

/** log-softmax of one row, float64. */
function logSoftmax(row: readonly number[]): number[] {
  const max = Math.max(...row);
  const logSum = Math.log(row.reduce((sum, value) => sum + Math.exp(value - max), 0)) + max;
  return row.map((value) => value - logSum);
}

/** What the float64 training loss needs besides the parameters. */
export interface ReferenceLossInputs {
  config: ModelConfig;
  reference: ReferenceConfig;
  /** Sequences of input ids and their targets. */
  inputs: number[][];
  targets: number[][];
  /** Constant teacher logits `[sequence][position][vocab]`, when distilling. */
  teacher?: number[][][];
  /** Constant detached final-loop logits, for early exit. */
  detached?: number[][][];
  earlyExit: boolean;
  weights: { distillation: number; earlierLoops: number };
}

/**
 * The training loss of `trainingLoss` written out in float64 over the reference decoder: the mean over
 * positions of CE(final) + w_d·KL(teacher ‖ final) + w_e·Σ_earlier (CE + KL(detached ‖ loop)).
 */
export function referenceTrainingLoss(params: Float64Parameters, inputs: ReferenceLossInputs): number {
  const { config } = inputs;
  const depths = inputs.earlyExit
    ? exitDepths(config.recursion, config.numHiddenLayers)
    : [config.numHiddenLayers - 1];
  const perLoop = depths.map((depth) => {
    const weights = unrolledWeights(config, params, depth + 1);
    const reference = { ...inputs.reference, numHiddenLayers: depth + 1 };
    return inputs.inputs.map((ids) => referenceLogits(reference, weights, ids).map(logSoftmax));
  });
  const positions = inputs.inputs.length * inputs.inputs[0]!.length;
  const crossEntropy = (logProbabilities: number[][][]) => {
    let sum = 0;
    for (const [s, row] of inputs.targets.entries()) {
      for (const [t, target] of row.entries()) sum -= logProbabilities[s]![t]![target]!;
    }
    return sum / positions;
  };
  const kl = (teacher: number[][][], student: number[][][]) => {
    let sum = 0;
    for (const [s, sequence] of teacher.entries()) {
      for (const [t, logits] of sequence.entries()) {
        for (const [v, lp] of logSoftmax(logits).entries()) sum += Math.exp(lp) * (lp - student[s]![t]![v]!);
      }
    }
    return sum / positions;
  };
  const final = perLoop[perLoop.length - 1]!;
  let loss = crossEntropy(final);
  if (inputs.teacher) loss += inputs.weights.distillation * kl(inputs.teacher, final);
  for (const loop of perLoop.slice(0, -1)) {
    let term = crossEntropy(loop);
    if (inputs.detached) term += kl(inputs.detached, loop);
    loss += inputs.weights.earlierLoops * term;
  }
  return loss;
}
