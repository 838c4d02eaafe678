/**
 * `@rrt/convert/testing`: synthetic checkpoints for tests and benchmarks. {@link writeSyntheticCheckpoint}
 * writes a random model of any Llama / Mistral / Qwen2 / Qwen3 / Gemma 1–3 shape in the Hugging Face layout, streaming one
 * tensor at a time (a TinyLlama-sized one never sits in memory), reproducibly from a seed.
 *
 * @example
 * ```ts
 * import { tinyLlamaSpec, writeSyntheticCheckpoint } from '@rrt/convert/testing';
 * await writeSyntheticCheckpoint('/tmp/tinyllama-synthetic', tinyLlamaSpec);
 * ```
 *
 * @packageDocumentation
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type LinearModule, resolveConfig, type TensorToWrite, writeShardedCheckpoint } from '@rrt/core';
import { sizeOf } from '@rrt/tensor';
import { encodeValues, type FloatDType, torchDtypeNames } from '../numeric.js';

/** The shape and storage of a synthetic model. */
export interface SyntheticModelSpec {
  /** `model_type` of `config.json`. */
  modelType: 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma' | 'gemma2' | 'gemma3_text';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** Per-head dimension; default `hiddenSize / numAttentionHeads`. */
  headDim?: number;
  tieWordEmbeddings: boolean;
  /**
   * `attention_bias: true` in `config.json`: the Llama family (llama, mistral, gemma) then biases q, k, v
   * and o. Qwen2 biases q, k and v whatever this says, as `@rrt/core` reads its config.
   */
  attentionBias?: boolean;
  /** `mlp_bias: true` in `config.json`: gate, up and down biases. */
  mlpBias?: boolean;
  /** Storage dtype of every tensor. */
  dtype: FloatDType;
  seed: number;
  /**
   * How much of each layer is its own: every layer's tensor is `√(1 − s)·base + √s·own` with `base` the
   * same for all layers, so 1 (default) gives independent layers and smaller values layers that
   * resemble each other, as trained models' do.
   */
  layerSpecificity?: number;
  /**
   * Norm weights vary by layer (default true). False gives every layer the same norm weights, for tests
   * that must not depend on how norms are shared.
   */
  perLayerNorms?: boolean;
  /**
   * Biases vary by layer (default true). False gives every layer the same biases, for tests of models
   * whose tied layers must agree exactly (a conversion shares biases; LoRA corrects weights only).
   */
  perLayerBiases?: boolean;
  /** Extra `config.json` keys (override the generated ones). */
  extraConfig?: Record<string, unknown>;
  /** Most tensor bytes per safetensors shard; default: one file. */
  maxShardBytes?: number;
}

/**
 * A TinyLlama-1.1B-shaped model: 22 layers, hidden 2048, FFN 5632, 32 query / 4 KV heads, vocab 32000,
 * untied head, bf16 (about 2.2 GB on disk).
 */
export const tinyLlamaSpec: SyntheticModelSpec = {
  modelType: 'llama',
  vocabSize: 32000,
  hiddenSize: 2048,
  intermediateSize: 5632,
  numHiddenLayers: 22,
  numAttentionHeads: 32,
  numKeyValueHeads: 4,
  tieWordEmbeddings: false,
  dtype: 'BF16',
  seed: 1,
  layerSpecificity: 1,
};

/** The tensors a spec's checkpoint holds, in file order, with shapes. */
export function syntheticTensorShapes(spec: SyntheticModelSpec): [string, number[]][] {
  const headDim = spec.headDim ?? spec.hiddenSize / spec.numAttentionHeads;
  const q = spec.numAttentionHeads * headDim;
  const kv = spec.numKeyValueHeads * headDim;
  const h = spec.hiddenSize;
  const f = spec.intermediateSize;
  // The biases the model loader expects: decided by @rrt/core from the config, not guessed here.
  const resolved = resolveConfig(syntheticConfig(spec), 'config.json').config;
  const biased = new Set(resolved.biasedModules);
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [spec.vocabSize, h]]];
  for (let layer = 0; layer < spec.numHiddenLayers; layer++) {
    const p = `model.layers.${layer}`;
    /** Weights, then the biases of the modules that have one. */
    const linears = (block: string, modules: [LinearModule, number[]][]) => {
      for (const [module, shape] of modules) shapes.push([`${p}.${block}.${module}.weight`, shape]);
      for (const [module, shape] of modules) {
        if (biased.has(module)) shapes.push([`${p}.${block}.${module}.bias`, [shape[0]!]]);
      }
    };
    shapes.push([`${p}.input_layernorm.weight`, [h]]);
    linears('self_attn', [
      ['q_proj', [q, h]],
      ['k_proj', [kv, h]],
      ['v_proj', [kv, h]],
    ]);
    if (resolved.qkNorm) {
      shapes.push([`${p}.self_attn.q_norm.weight`, [headDim]]);
      shapes.push([`${p}.self_attn.k_norm.weight`, [headDim]]);
    }
    linears('self_attn', [['o_proj', [h, q]]]);
    shapes.push([`${p}.post_attention_layernorm.weight`, [h]]);
    if (resolved.sandwichNorms) shapes.push([`${p}.pre_feedforward_layernorm.weight`, [h]]);
    linears('mlp', [
      ['gate_proj', [f, h]],
      ['up_proj', [f, h]],
      ['down_proj', [h, f]],
    ]);
    if (resolved.sandwichNorms) shapes.push([`${p}.post_feedforward_layernorm.weight`, [h]]);
  }
  shapes.push(['model.norm.weight', [h]]);
  if (!spec.tieWordEmbeddings) shapes.push(['lm_head.weight', [spec.vocabSize, h]]);
  return shapes;
}

/** The `config.json` of a spec. */
export function syntheticConfig(spec: SyntheticModelSpec): Record<string, unknown> {
  const gemma = spec.modelType.startsWith('gemma');
  return {
    architectures: [
      {
        llama: 'LlamaForCausalLM',
        mistral: 'MistralForCausalLM',
        qwen2: 'Qwen2ForCausalLM',
        qwen3: 'Qwen3ForCausalLM',
        gemma: 'GemmaForCausalLM',
        gemma2: 'Gemma2ForCausalLM',
        gemma3_text: 'Gemma3ForCausalLM',
      }[spec.modelType],
    ],
    model_type: spec.modelType,
    vocab_size: spec.vocabSize,
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numHiddenLayers,
    num_attention_heads: spec.numAttentionHeads,
    num_key_value_heads: spec.numKeyValueHeads,
    ...(spec.headDim !== undefined ? { head_dim: spec.headDim } : {}),
    hidden_act: gemma ? 'gelu_pytorch_tanh' : 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: spec.tieWordEmbeddings,
    ...(spec.attentionBias ? { attention_bias: true } : {}),
    ...(spec.mlpBias ? { mlp_bias: true } : {}),
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: torchDtypeNames[spec.dtype],
    ...spec.extraConfig,
  };
}

/** What {@link writeSyntheticCheckpoint} wrote. */
export interface SyntheticCheckpoint {
  dir: string;
  config: Record<string, unknown>;
  /** Number of parameters. */
  parameters: number;
  /** Bytes of tensor data. */
  bytes: number;
}

/**
 * Writes a random model in the Hugging Face layout (`config.json`, safetensors) to `dir`, one tensor at a
 * time. Values are reproducible from `spec.seed` and the tensor's name: linear weights uniform with
 * standard deviation 1/√fan-in (activations stay O(1)), embeddings with standard deviation 1, norm
 * weights 1 ± 0.1 (± 0.1 around 0 for Gemma's `1 + w`), biases ± 0.1.
 */
export async function writeSyntheticCheckpoint(
  dir: string,
  spec: SyntheticModelSpec,
): Promise<SyntheticCheckpoint> {
  const gemma = spec.modelType.startsWith('gemma');
  const specificity = spec.layerSpecificity ?? 1;
  const perLayerNorms = spec.perLayerNorms ?? true;
  const perLayerBiases = spec.perLayerBiases ?? true;
  const tensors: TensorToWrite[] = [];
  let parameters = 0;
  for (const [name, shape] of syntheticTensorShapes(spec)) {
    const size = sizeOf(shape);
    parameters += size;
    const isNorm = name.endsWith('norm.weight');
    const isBias = name.endsWith('.bias');
    const std =
      isNorm || isBias
        ? 0.1
        : name.includes('embed') || name === 'lm_head.weight'
          ? 1
          : 1 / Math.sqrt(shape[1]!);
    const offset = isNorm && !gemma ? 1 : 0;
    // The same name with the layer number removed: the seed of the part all layers share.
    const baseName = name.replace(/^model\.layers\.\d+\./, 'model.layers.*.');
    const layerTensor = baseName !== name;
    const own = !layerTensor
      ? 1
      : (isNorm && !perLayerNorms) || (isBias && !perLayerBiases)
        ? 0
        : specificity;
    tensors.push({
      name,
      dtype: spec.dtype,
      shape,
      bytes: () => {
        const values = new Float32Array(size);
        if (own > 0) fillUniform(values, hashSeed(spec.seed, name), std * Math.sqrt(own), offset);
        if (own < 1)
          addUniform(values, hashSeed(spec.seed, baseName), std * Math.sqrt(1 - own), own > 0 ? 0 : offset);
        return encodeValues(values, spec.dtype);
      },
    });
  }
  await mkdir(dir, { recursive: true });
  const written = await writeShardedCheckpoint(dir, tensors, {
    maxShardBytes: spec.maxShardBytes ?? 5_000_000_000,
  });
  const config = syntheticConfig(spec);
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(
    join(dir, 'generation_config.json'),
    `${JSON.stringify({ bos_token_id: 1, eos_token_id: 2 })}\n`,
  );
  return { dir, config, parameters, bytes: written.totalBytes };
}

/** FNV-1a over the name, mixed with the seed. */
function hashSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Fills with `offset + uniform(−√3, √3)·std` (standard deviation `std`) from an xorshift32 stream. */
function fillUniform(values: Float32Array, seed: number, std: number, offset: number): void {
  let state = seed || 0x9e3779b9;
  const scale = (std * Math.sqrt(3) * 2) / 4294967296;
  const shift = offset - std * Math.sqrt(3);
  for (let i = 0; i < values.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    values[i] = (state >>> 0) * scale + shift;
  }
}

function addUniform(values: Float32Array, seed: number, std: number, offset: number): void {
  const extra = new Float32Array(values.length);
  fillUniform(extra, seed, std, offset);
  for (let i = 0; i < values.length; i++) values[i]! += extra[i]!;
}
