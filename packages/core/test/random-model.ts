/**
 * Random small models written as real Hugging Face directories (config.json + model.safetensors), for
 * tests that load them through the normal path and compare against the float64 reference.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { seededRandom } from '../src/generate/sampling.js';
import { writeSafetensors } from '../src/safetensors/index.js';
import { type ReferenceConfig, type ReferenceWeights, referenceTensorShapes } from './reference.js';

/** A seeded standard-normal stream (Box–Muller over core's seeded uniform stream). */
export function normalStream(seed: number): () => number {
  const uniform = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** The three families the issue asks for, small enough for float64 reference loops. */
export const randomConfigs: Record<string, { reference: ReferenceConfig; hf: Record<string, unknown> }> = {
  'llama-gqa': {
    reference: {
      family: 'llama',
      vocabSize: 61,
      hiddenSize: 48,
      intermediateSize: 80,
      numHiddenLayers: 3,
      numAttentionHeads: 6,
      numKeyValueHeads: 2,
      headDim: 8,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScalingFactor: 2,
      tieWordEmbeddings: false,
      // Llama's attention_bias biases all four attention projections; mlp_bias the three MLP ones.
      biases: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    },
    hf: {
      model_type: 'llama',
      rope_scaling: { type: 'linear', factor: 2 },
      tie_word_embeddings: false,
      attention_bias: true,
      mlp_bias: true,
    },
  },
  // Llama 3.x: llama3 RoPE scaling (head dim 8, θ 10000, original context 64: wavelengths 6.3, 63 and
  // 628+ land in the kept, blended and divided bands), GQA, tied embeddings.
  'llama3-tied': {
    reference: {
      family: 'llama',
      vocabSize: 59,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 8,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScalingFactor: 1,
      llama3Rope: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 },
      tieWordEmbeddings: true,
      biases: [],
    },
    hf: {
      model_type: 'llama',
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
      tie_word_embeddings: true,
    },
  },
  'qwen2-bias': {
    reference: {
      family: 'llama',
      vocabSize: 53,
      hiddenSize: 32,
      intermediateSize: 72,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 8,
      rmsNormEps: 1e-6,
      ropeTheta: 1000000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: true,
      biases: ['q_proj', 'k_proj', 'v_proj'],
    },
    hf: { model_type: 'qwen2', tie_word_embeddings: true },
  },
  // Qwen3: per-head q/k RMSNorm before RoPE, head_dim 12 independent of hidden / heads (32 / 4 = 8), no
  // biases, an untied head.
  'qwen3-qknorm': {
    reference: {
      family: 'llama',
      vocabSize: 57,
      hiddenSize: 32,
      intermediateSize: 56,
      numHiddenLayers: 3,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 12,
      rmsNormEps: 1e-6,
      ropeTheta: 1000000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: false,
      biases: [],
      qkNorm: true,
    },
    hf: { model_type: 'qwen3', head_dim: 12, tie_word_embeddings: false, attention_bias: false },
  },
  // Mistral's sliding window on every layer: 3 keys, so 9 tokens cross its edge many times.
  'mistral-window': {
    reference: {
      family: 'llama',
      vocabSize: 47,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 8,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: false,
      biases: [],
      windows: [3, 3],
    },
    hf: { model_type: 'mistral', sliding_window: 3, tie_word_embeddings: false },
  },
  // Qwen2 with use_sliding_window: layers from max_window_layers = 1 on slide (window 5), layer 0 is full.
  'qwen2-window': {
    reference: {
      family: 'llama',
      vocabSize: 53,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 3,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 8,
      rmsNormEps: 1e-6,
      ropeTheta: 1000000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: true,
      biases: ['q_proj', 'k_proj', 'v_proj'],
      windows: [undefined, 5, 5],
    },
    hf: {
      model_type: 'qwen2',
      tie_word_embeddings: true,
      use_sliding_window: true,
      sliding_window: 5,
      max_window_layers: 1,
    },
  },
  'gemma-mqa': {
    reference: {
      family: 'gemma',
      vocabSize: 67,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 1,
      headDim: 12,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: true,
      biases: [],
    },
    hf: { model_type: 'gemma', head_dim: 12, hidden_act: 'gelu_pytorch_tanh' },
  },
  // Gemma 2: alternating local (window 4) and global layers, attention-logit and final-logit soft-caps small
  // enough to bite (scores reach ±3, logits ±10), four norms per layer, query_pre_attn_scalar 20 ≠ head_dim.
  'gemma2-softcap': {
    reference: {
      family: 'gemma',
      vocabSize: 61,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 4,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 12,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScalingFactor: 1,
      tieWordEmbeddings: true,
      biases: [],
      sandwichNorms: true,
      queryPreAttnScalar: 20,
      attnLogitSoftcapping: 1.5,
      finalLogitSoftcapping: 4,
      windows: [4, undefined, 4, undefined],
    },
    hf: {
      model_type: 'gemma2',
      head_dim: 12,
      hidden_activation: 'gelu_pytorch_tanh',
      query_pre_attn_scalar: 20,
      attn_logit_softcapping: 1.5,
      final_logit_softcapping: 4,
      sliding_window: 4,
    },
  },
  // Gemma 3 text: q/k norms (1 + w), local layers (window 3, RoPE base 10000, unscaled) and every third a
  // global one (rope_theta 1e6 with linear scaling ×4), four norms per layer, no soft-caps.
  'gemma3-local': {
    reference: {
      family: 'gemma',
      vocabSize: 59,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 3,
      numAttentionHeads: 4,
      numKeyValueHeads: 1,
      headDim: 8,
      rmsNormEps: 1e-6,
      ropeTheta: 1000000,
      ropeScalingFactor: 4,
      tieWordEmbeddings: true,
      biases: [],
      qkNorm: true,
      sandwichNorms: true,
      queryPreAttnScalar: 12,
      windows: [3, 3, undefined],
      localRopeTheta: 10000,
    },
    hf: {
      model_type: 'gemma3_text',
      head_dim: 8,
      hidden_activation: 'gelu_pytorch_tanh',
      query_pre_attn_scalar: 12,
      sliding_window: 3,
      sliding_window_pattern: 3,
      rope_local_base_freq: 10000,
      rope_scaling: { rope_type: 'linear', factor: 4 },
    },
  },
};

/** HF `config.json` content for a reference config. */
export function hfConfig(
  reference: ReferenceConfig,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  return {
    vocab_size: reference.vocabSize,
    hidden_size: reference.hiddenSize,
    intermediate_size: reference.intermediateSize,
    num_hidden_layers: reference.numHiddenLayers,
    num_attention_heads: reference.numAttentionHeads,
    num_key_value_heads: reference.numKeyValueHeads,
    rms_norm_eps: reference.rmsNormEps,
    rope_theta: reference.ropeTheta,
    max_position_embeddings: 64,
    bos_token_id: 1,
    eos_token_id: 2,
    ...extra,
  };
}

/**
 * Writes a random model directory and returns its weights in float64 (exactly the float32 values
 * written). Norm weights sit around 1 (or 0 for Gemma's `1 + w`), linear weights are scaled by
 * 1/√fan-in so activations stay O(1).
 */
export async function writeRandomModel(
  dir: string,
  name: keyof typeof randomConfigs,
  seed: number,
): Promise<{ reference: ReferenceConfig; weights: ReferenceWeights }> {
  const { reference, hf } = randomConfigs[name]!;
  const normal = normalStream(seed);
  const weights: ReferenceWeights = new Map();
  const tensors = [];
  for (const [tensorName, shape] of referenceTensorShapes(reference)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    const isNorm = tensorName.endsWith('norm.weight');
    const fanIn = shape[shape.length - 1]!;
    for (let i = 0; i < size; i++) {
      if (isNorm) values[i] = (reference.family === 'gemma' ? 0 : 1) + 0.1 * normal();
      else if (tensorName.includes('embed')) values[i] = normal();
      else values[i] = normal() / Math.sqrt(shape.length === 1 ? 4 : fanIn);
    }
    weights.set(tensorName, Float64Array.from(values));
    tensors.push({ name: tensorName, dtype: 'F32' as const, shape, bytes: new Uint8Array(values.buffer) });
  }
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(hfConfig(reference, hf), null, 2));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return { reference, weights };
}
