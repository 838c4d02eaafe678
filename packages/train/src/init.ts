/**
 * Random initialisation of a model from its `config.json`, for pretraining from scratch.
 *
 * @module
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  linearModules,
  linearShapes,
  moduleTensorName,
  resolveConfig,
  writeSafetensors,
  encodeAs,
} from '@rrt/core';
import { TrainOptionError } from './errors.js';
import { TrainRandom } from './random.js';

/** Options of {@link writeRandomModel}. */
export interface RandomInitOptions {
  /** Seed of the weights; default 0. */
  seed?: number;
  /** Standard deviation of embeddings and linear weights; default 0.02 (GPT-2, Llama). */
  std?: number;
}

/**
 * Writes a Hugging Face model directory (`config.json` + `model.safetensors`, float32) with random
 * weights for `rawConfig` (a `config.json` object of a plain, non-recursive model): embeddings and
 * linear weights from N(0, std²), the residual projections (`o_proj`, `down_proj`) scaled by
 * 1/√(2·layers) as in GPT-2, biases 0, RMSNorm gains 1 (0 for Gemma's `1 + w`). Seeded: the same config
 * and seed give the same bytes. Tokenizer files are the caller's to add.
 */
export async function writeRandomModel(
  dir: string,
  rawConfig: Record<string, unknown>,
  options: RandomInitOptions = {},
): Promise<void> {
  const { config } = resolveConfig(rawConfig, join(dir, 'config.json'));
  if (config.recursion) {
    throw new TrainOptionError(
      'config.recursion',
      'absent: initialise a plain model, then convert it',
      'a recursion block',
    );
  }
  const random = new TrainRandom(options.seed ?? 0);
  const std = options.std ?? 0.02;
  const residualStd = std / Math.sqrt(2 * config.numHiddenLayers);
  const normal = (shape: number[], scale: number) => {
    const values = new Float32Array(shape.reduce((n, d) => n * d, 1));
    for (let i = 0; i < values.length; i++) values[i] = random.normal() * scale;
    return values;
  };
  const constant = (size: number, value: number) => new Float32Array(size).fill(value);
  const normValue = config.normAddOne ? 0 : 1;
  const tensors: { name: string; shape: number[]; values: Float32Array }[] = [];
  const add = (name: string, shape: number[], values: Float32Array) => tensors.push({ name, shape, values });
  const d = config.hiddenSize;
  add('model.embed_tokens.weight', [config.vocabSize, d], normal([config.vocabSize, d], std));
  const shapes = linearShapes(config);
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const module of linearModules) {
      const shape = shapes[module];
      const scale = module === 'o_proj' || module === 'down_proj' ? residualStd : std;
      add(`${moduleTensorName(layer, module)}.weight`, shape, normal(shape, scale));
      if (config.biasedModules.includes(module))
        add(`${moduleTensorName(layer, module)}.bias`, [shape[0]], constant(shape[0], 0));
    }
    add(`model.layers.${layer}.input_layernorm.weight`, [d], constant(d, normValue));
    add(`model.layers.${layer}.post_attention_layernorm.weight`, [d], constant(d, normValue));
  }
  add('model.norm.weight', [d], constant(d, normValue));
  if (!config.tieWordEmbeddings)
    add('lm_head.weight', [config.vocabSize, d], normal([config.vocabSize, d], std));

  await mkdir(dir, { recursive: true });
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    tensors.map(({ name, shape, values }) => ({
      name,
      dtype: 'F32' as const,
      shape,
      bytes: encodeAs(values, 'F32'),
    })),
    { format: 'pt' },
  );
  const temp = join(dir, `config.json.tmp-${process.pid}`);
  await writeFile(temp, `${JSON.stringify(rawConfig, null, 2)}\n`);
  await rename(temp, join(dir, 'config.json'));
}
