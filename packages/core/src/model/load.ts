import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '@rrt/tensor';
import { ConfigError } from '../errors.js';
import { openCheckpoint } from '../safetensors/index.js';
import { type ModelConfig, resolveConfig } from './config.js';
import { Decoder, type DecoderOptions, type LoRAMode } from './decoder.js';
import { type LoadWeightsOptions, loadWeights } from './weights.js';

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** Called with each `config.json` key that was not understood. */
  onIgnoredKey?: (key: string) => void;
  /** Called with each checkpoint tensor the config does not use (see {@link LoadWeightsOptions}). */
  onUnusedTensor?: (name: string) => void;
  /** How the decoder applies the loops' LoRAs to rows at different loops (see {@link DecoderOptions}). */
  loraMode?: LoRAMode;
}

/** Reads and resolves `<dir>/config.json`. */
export async function readConfig(dir: string, onIgnoredKey?: (key: string) => void): Promise<ModelConfig> {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      file,
      '(file)',
      `a readable file (${(error as NodeJS.ErrnoException).code ?? error})`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(file, '(root)', `valid JSON (${(error as Error).message})`);
  }
  const { config, ignoredKeys } = resolveConfig(raw, file);
  for (const key of ignoredKeys) onIgnoredKey?.(key);
  return config;
}

/**
 * Loads a model directory in the canonical Hugging Face layout (`config.json`, `model.safetensors` or a
 * sharded index) onto `backend`. Free it with {@link Decoder.dispose}.
 *
 * @example
 * ```ts
 * const { backend } = await createBackend('auto');
 * const decoder = await loadModel('models/stories260K', backend);
 * ```
 */
export async function loadModel(
  dir: string,
  backend: Backend,
  options: LoadModelOptions = {},
): Promise<Decoder> {
  const config = await readConfig(dir, options.onIgnoredKey);
  const checkpoint = await openCheckpoint(dir);
  try {
    const weights = await loadWeights(backend, checkpoint, config, {
      onUnusedTensor: options.onUnusedTensor,
    });
    return new Decoder(backend, config, weights, options.loraMode ? { loraMode: options.loraMode } : {});
  } finally {
    await checkpoint.close();
  }
}
