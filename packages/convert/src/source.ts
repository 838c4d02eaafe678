/**
 * The source side of a conversion: reading and checking `config.json`, opening the checkpoint, reading
 * tensors with errors that name them, and noticing when the source changes under us.
 *
 * @module
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Checkpoint,
  ConfigError,
  configLinearModules,
  type LayerNormName,
  layerNorms,
  linearShapes,
  type ModelConfig,
  moduleTensorName,
  neoxCheckpointView,
  normTensorName,
  openCheckpoint,
  type RawTensor,
  resolveConfig,
  SafetensorsError,
  recursiveModelTypePrefix,
  supportedModelTypes,
  toFloat32,
} from '@rrt/core';
import { formatShape, sameShape } from '@rrt/tensor';
import { SourceChangedError, SourceCheckpointError, UnsupportedArchitectureError } from './errors.js';
import { bytesAs, type FloatDType, isFloatDType } from './numeric.js';
import type { TensorStream } from './output.js';

/** Size, modification time and inode of a file when the conversion started. */
interface FileIdentity {
  size: number;
  mtimeMs: number;
  ino: number;
}

/** An open source model directory. Close it with {@link SourceModel.close}. */
export interface SourceModel {
  dir: string;
  configFile: string;
  /** `config.json` as parsed, to be copied with changes into the output. */
  rawConfig: Record<string, unknown>;
  config: ModelConfig;
  checkpoint: Checkpoint;
  /** Reads a tensor, checking its shape and float dtype; errors name the tensor. */
  read(name: string, shape?: readonly number[]): Promise<RawTensor>;
  /** Reads a tensor as the bytes of `dtype` (untouched when stored so already). */
  readAs(name: string, dtype: FloatDType, shape?: readonly number[]): Promise<Uint8Array>;
  /** Reads a tensor and decodes it to float32. */
  readValues(name: string, shape?: readonly number[]): Promise<Float32Array>;
  /** Checks that a tensor exists with this shape and a float dtype, without reading it. */
  check(name: string, shape: readonly number[]): FloatDType;
  /** Throws {@link SourceChangedError} when a source file vanished or changed since it was opened. */
  assertUnchanged(): Promise<void>;
  close(): Promise<void>;
}

/** What {@link openSource} expects of the source's `recursion` section. */
export type RecursionExpectation = 'vanilla' | 'recursive';

/**
 * Opens a model directory for conversion: parses `config.json`, checks that its `model_type` is one the
 * decoder runs and whether it has a `recursion` section as `expect`s, opens the checkpoint, and records
 * the identity of every file so that {@link SourceModel.assertUnchanged} can tell if it changed.
 */
export async function openSource(dir: string, expect: RecursionExpectation): Promise<SourceModel> {
  const configFile = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(configFile, 'utf8');
  } catch (cause) {
    throw new SourceCheckpointError(
      configFile,
      undefined,
      `cannot read (${(cause as NodeJS.ErrnoException).code ?? cause})`,
      {
        cause,
      },
    );
  }
  let rawConfig: Record<string, unknown>;
  try {
    rawConfig = JSON.parse(text);
  } catch (cause) {
    throw new SourceCheckpointError(
      configFile,
      undefined,
      `is not valid JSON (${(cause as Error).message})`,
      { cause },
    );
  }
  if (typeof rawConfig !== 'object' || rawConfig === null || Array.isArray(rawConfig)) {
    throw new SourceCheckpointError(configFile, undefined, 'expected a JSON object');
  }
  const writtenType = rawConfig.model_type;
  const isRecursiveType = typeof writtenType === 'string' && writtenType.startsWith(recursiveModelTypePrefix);
  const modelType = isRecursiveType ? writtenType.slice(recursiveModelTypePrefix.length) : writtenType;
  if (typeof modelType !== 'string' || !supportedModelTypes.includes(modelType)) {
    throw new UnsupportedArchitectureError(
      configFile,
      `model_type ${JSON.stringify(modelType)} is not supported; expected one of ${supportedModelTypes.join(', ')}`,
    );
  }
  if (expect === 'vanilla' && (rawConfig.recursion !== undefined || isRecursiveType)) {
    throw new UnsupportedArchitectureError(
      configFile,
      'is already a recursive model (it has a "recursion" section); convert the original, or export it with --unroll first',
    );
  }
  if (expect === 'recursive' && rawConfig.recursion === undefined) {
    throw new UnsupportedArchitectureError(
      configFile,
      'has no "recursion" section: it is not a recursive model',
    );
  }
  let config: ModelConfig;
  try {
    config = resolveConfig(rawConfig, configFile).config;
  } catch (cause) {
    if (cause instanceof ConfigError) {
      throw new SourceCheckpointError(configFile, undefined, cause.message, { cause });
    }
    throw cause;
  }
  let checkpoint: Checkpoint;
  try {
    checkpoint = await openCheckpoint(dir);
    // GPT-NeoX's own names read as the canonical ones, its fused QKV as q, k and v (see core's neox.ts).
    if (config.family === 'gpt_neox') checkpoint = neoxCheckpointView(checkpoint, config);
  } catch (cause) {
    throw new SourceCheckpointError(
      dir,
      undefined,
      `cannot open the checkpoint: ${(cause as Error).message}`,
      { cause },
    );
  }
  const files = [configFile, ...checkpoint.shards.map((shard) => shard.path)];
  if (checkpoint.indexFile) files.push(checkpoint.indexFile);
  const identities = new Map<string, FileIdentity>();
  try {
    for (const file of files) {
      try {
        identities.set(file, await identify(file));
      } catch (cause) {
        // It was there a moment ago (the config read, the checkpoint opened): it changed under us.
        throw new SourceChangedError(file, 'vanished', { cause });
      }
    }
  } catch (error) {
    await checkpoint.close();
    throw error;
  }

  const assertUnchanged = async () => {
    for (const [file, before] of identities) {
      let now: FileIdentity;
      try {
        now = await identify(file);
      } catch (cause) {
        throw new SourceChangedError(file, 'vanished', { cause });
      }
      if (now.size !== before.size || now.mtimeMs !== before.mtimeMs || now.ino !== before.ino) {
        throw new SourceChangedError(file, 'was modified or replaced');
      }
    }
  };

  const check = (name: string, shape: readonly number[]): FloatDType => {
    const info = checkpoint.entries.get(name);
    if (!info) throw new SourceCheckpointError(dir, name, 'is missing: the config needs it');
    if (!sameShape(info.shape, shape)) {
      throw new SourceCheckpointError(
        info.file,
        name,
        `has shape ${formatShape(info.shape)}, expected ${formatShape(shape)} from config.json`,
      );
    }
    if (!isFloatDType(info.dtype)) {
      throw new SourceCheckpointError(info.file, name, `has dtype ${info.dtype}, expected F32, F16 or BF16`);
    }
    return info.dtype;
  };

  const read = async (name: string, shape?: readonly number[]): Promise<RawTensor> => {
    if (shape) check(name, shape);
    try {
      return await checkpoint.readTensor(name);
    } catch (cause) {
      // A read that fails because the file went away is a changed source, not a corrupt one.
      await assertUnchanged();
      if (cause instanceof SafetensorsError)
        throw new SourceCheckpointError(cause.file, name, cause.message, { cause });
      throw cause;
    }
  };

  return {
    dir,
    configFile,
    rawConfig,
    config,
    checkpoint,
    read,
    readAs: async (name, dtype, shape) => bytesAs(await read(name, shape), dtype),
    readValues: async (name, shape) => toFloat32(await read(name, shape)),
    check,
    assertUnchanged,
    close: () => checkpoint.close(),
  };
}

async function identify(file: string): Promise<FileIdentity> {
  const info = await stat(file);
  return { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino };
}

/**
 * The two norms every decoder layer has (RMSNorms, or LayerNorms with a bias), in file order (see
 * `layerNorms` for a config's full list).
 */
export const normNames = ['input_layernorm', 'post_attention_layernorm'] as const;
/** A layer norm's Hugging Face name. */
export type NormName = LayerNormName;

/**
 * Every tensor a decoder made of the source layers `layers` reads, with its shape from the config:
 * embeddings, final norm, head (when untied, or present anyway), and each layer's norms, linear weights
 * and the biases of `config.biasedModules`. LoRA tensors are not included.
 */
export function decoderTensorShapes(
  source: SourceModel,
  layers: readonly number[],
): Map<string, readonly number[]> {
  const { config } = source;
  const shapes = linearShapes(config);
  const hidden = [config.hiddenSize];
  const tensors = new Map<string, readonly number[]>([
    ['model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]],
    ['model.norm.weight', hidden],
  ]);
  const normBiases = config.normType === 'layer';
  if (normBiases) tensors.set('model.norm.bias', hidden);
  if (!config.tieWordEmbeddings || source.checkpoint.has('lm_head.weight')) {
    tensors.set('lm_head.weight', [config.vocabSize, config.hiddenSize]);
  }
  for (const layer of layers) {
    for (const { norm, width } of layerNorms(config)) {
      const weightName = normTensorName(layer, norm);
      tensors.set(weightName, [width]);
      // A LayerNorm's bias sits next to its weight.
      if (normBiases) tensors.set(weightName.replace(/weight$/, 'bias'), [width]);
    }
    for (const module of configLinearModules(config)) {
      tensors.set(`${moduleTensorName(layer, module)}.weight`, shapes[module]);
      if (config.biasedModules.includes(module)) {
        tensors.set(`${moduleTensorName(layer, module)}.bias`, [shapes[module][0]]);
      }
    }
  }
  return tensors;
}

/**
 * Checks every tensor of {@link decoderTensorShapes} (present, shape from the config, float dtype) before
 * anything is written, and returns the dtype of the first layer's `q_proj` (the default output dtype).
 */
export function checkDecoderTensors(source: SourceModel, layers: readonly number[]): FloatDType {
  for (const [name, shape] of decoderTensorShapes(source, layers)) source.check(name, shape);
  return source.check(`${moduleTensorName(layers[0]!, 'q_proj')}.weight`, linearShapes(source.config).q_proj);
}

/** Adds to `stream` the source tensor `from`, written as `to` in `dtype` (re-encoded only when it differs). */
export function addCopy(
  stream: TensorStream,
  source: SourceModel,
  from: string,
  to: string,
  shape: readonly number[],
  dtype: FloatDType,
): void {
  stream.add(
    [{ name: to, dtype, shape }],
    async () => new Map([[to, await source.readAs(from, dtype, shape)]]),
  );
}
