/**
 * Rotary position embedding tables: the frequencies a config asks for (plain, linear-scaled, or Llama 3's
 * frequency-dependent scaling) and their cosines and sines at every position.
 *
 * @module
 */
import type { ModelConfig } from './config.js';

/**
 * How RoPE frequencies are scaled (`rope_scaling` in `config.json`): not at all, linearly (positions divided
 * by `factor`), or as Llama 3.x does (long wavelengths divided by `factor`, short ones kept, a smooth blend
 * between).
 */
export type RopeScaling =
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      /** The context the model was pretrained at, `original_max_position_embeddings`. */
      originalMaxPositions: number;
    };

/**
 * The inverse frequency of each rotated pair, `θ^(−2i/headDim)` for `i < headDim/2`, scaled as
 * `config.ropeScaling` says (float64).
 *
 * @example
 * ```ts
 * const frequencies = ropeFrequencies(config); // Float64Array(headDim / 2)
 * ```
 */
export function ropeFrequencies(
  config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>,
): Float64Array {
  const half = config.headDim / 2;
  const frequencies = new Float64Array(half);
  const scaling = config.ropeScaling;
  for (let i = 0; i < half; i++) {
    const base = config.ropeTheta ** ((-2 * i) / config.headDim);
    if (scaling.type === 'none') frequencies[i] = base;
    else if (scaling.type === 'linear') frequencies[i] = base / scaling.factor;
    else frequencies[i] = llama3Frequency(base, scaling);
  }
  return frequencies;
}

/**
 * Llama 3's rule (Hugging Face `_compute_llama3_parameters`): wavelengths shorter than
 * `original / highFreqFactor` stay, longer than `original / lowFreqFactor` are divided by `factor`, and
 * those between blend the two linearly in `original / wavelength`.
 */
function llama3Frequency(frequency: number, scaling: Extract<RopeScaling, { type: 'llama3' }>): number {
  const wavelength = (2 * Math.PI) / frequency;
  const original = scaling.originalMaxPositions;
  if (wavelength < original / scaling.highFreqFactor) return frequency;
  if (wavelength > original / scaling.lowFreqFactor) return frequency / scaling.factor;
  const smooth =
    (original / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
  return (1 - smooth) * (frequency / scaling.factor) + smooth * frequency;
}

/**
 * RoPE cosines and sines for every position, `[maxPositions, headDim/2]`, computed in float64 and rounded
 * once.
 *
 * @example
 * ```ts
 * const { cos, sin } = ropeTables(config);
 * ```
 */
export function ropeTables(
  config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling' | 'maxPositionEmbeddings'>,
): { cos: Float32Array; sin: Float32Array } {
  const half = config.headDim / 2;
  const positions = config.maxPositionEmbeddings;
  const frequencies = ropeFrequencies(config);
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  for (let position = 0; position < positions; position++) {
    for (let i = 0; i < half; i++) {
      const angle = position * frequencies[i]!;
      cos[position * half + i] = Math.cos(angle);
      sin[position * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
