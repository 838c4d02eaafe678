/**
 * GPT-NeoX / Pythia for tests: random small checkpoints written with the real Hugging Face tensor names
 * (`gpt_neox.layers.N.attention.query_key_value.weight`, …), and an independent float64 forward over
 * those names, written from Hugging Face's `modeling_gpt_neox.py` without sharing anything with
 * `src/model` (the fused QKV is read in its interleaved layout here, never split by the code under test).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { reference } from '@rrt/tensor/testing';
import { writeSafetensors } from '../src/safetensors/index.js';
import { normalStream } from './random-model.js';

/** What the NeoX reference reads of a config (HF `GPTNeoXConfig` meanings). */
export interface NeoxReferenceConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  /** `rotary_pct`: the share of each head that RoPE rotates. */
  rotaryPct: number;
  rotaryEmbBase: number;
  layerNormEps: number;
  useParallelResidual: boolean;
}

/** Every distinguishing feature on: parallel residual, rotary_pct < 1, biases everywhere, untied head. */
export const neoxParallel: NeoxReferenceConfig = {
  vocabSize: 61,
  hiddenSize: 64,
  intermediateSize: 96,
  numHiddenLayers: 3,
  numAttentionHeads: 4,
  rotaryPct: 0.25, // head 16: rotary_ndims 4, as Pythia's share
  rotaryEmbBase: 10000,
  layerNormEps: 1e-5,
  useParallelResidual: true,
};

/** The sequential-residual variant (`use_parallel_residual: false`), a larger rotary share. */
export const neoxSequential: NeoxReferenceConfig = {
  ...neoxParallel,
  vocabSize: 53,
  numHiddenLayers: 2,
  rotaryPct: 0.5,
  rotaryEmbBase: 500,
  useParallelResidual: false,
};

/** The HF `config.json` of a reference config. */
export function neoxHfConfig(config: NeoxReferenceConfig): Record<string, unknown> {
  return {
    architectures: ['GPTNeoXForCausalLM'],
    model_type: 'gpt_neox',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    rotary_pct: config.rotaryPct,
    rotary_emb_base: config.rotaryEmbBase,
    layer_norm_eps: config.layerNormEps,
    use_parallel_residual: config.useParallelResidual,
    hidden_act: 'gelu',
    max_position_embeddings: 64,
    tie_word_embeddings: false,
    attention_dropout: 0,
    hidden_dropout: 0,
    bos_token_id: 0,
    eos_token_id: 0,
  };
}

/** Every tensor of a NeoX checkpoint of this config, HF names, with shapes. */
export function neoxTensorShapes(config: NeoxReferenceConfig): Map<string, number[]> {
  const d = config.hiddenSize;
  const ffn = config.intermediateSize;
  const shapes = new Map<string, number[]>([['gpt_neox.embed_in.weight', [config.vocabSize, d]]]);
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const p = `gpt_neox.layers.${layer}`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      shapes.set(`${p}.${norm}.weight`, [d]);
      shapes.set(`${p}.${norm}.bias`, [d]);
    }
    shapes.set(`${p}.attention.query_key_value.weight`, [3 * d, d]);
    shapes.set(`${p}.attention.query_key_value.bias`, [3 * d]);
    shapes.set(`${p}.attention.dense.weight`, [d, d]);
    shapes.set(`${p}.attention.dense.bias`, [d]);
    shapes.set(`${p}.mlp.dense_h_to_4h.weight`, [ffn, d]);
    shapes.set(`${p}.mlp.dense_h_to_4h.bias`, [ffn]);
    shapes.set(`${p}.mlp.dense_4h_to_h.weight`, [d, ffn]);
    shapes.set(`${p}.mlp.dense_4h_to_h.bias`, [d]);
  }
  shapes.set('gpt_neox.final_layer_norm.weight', [d]);
  shapes.set('gpt_neox.final_layer_norm.bias', [d]);
  shapes.set('embed_out.weight', [config.vocabSize, d]);
  return shapes;
}

/**
 * Writes a random NeoX model directory (config.json + model.safetensors, F32) and returns its weights
 * in float64 (exactly the values written), keyed by HF name. LayerNorm weights sit around 1, their biases
 * around 0 (σ 0.1); linear weights are scaled by 1/√fan-in, biases have σ ½.
 */
export async function writeRandomNeoxModel(
  dir: string,
  config: NeoxReferenceConfig,
  seed: number,
): Promise<Map<string, Float64Array>> {
  const normal = normalStream(seed);
  const weights = new Map<string, Float64Array>();
  const tensors = [];
  for (const [name, shape] of neoxTensorShapes(config)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    const isNorm = name.includes('layernorm') || name.includes('layer_norm');
    for (let i = 0; i < size; i++) {
      if (isNorm) values[i] = (name.endsWith('weight') ? 1 : 0) + 0.1 * normal();
      else if (name.includes('embed_in')) values[i] = normal();
      else values[i] = normal() / Math.sqrt(shape.length === 1 ? 4 : shape[1]!);
    }
    weights.set(name, Float64Array.from(values));
    tensors.push({ name, dtype: 'F32' as const, shape, bytes: new Uint8Array(values.buffer) });
  }
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(neoxHfConfig(config), null, 2));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return weights;
}

/** Logits `[tokens.length][vocab]` of a NeoX model, teacher-forced, full recompute, float64. */
export function neoxReferenceLogits(
  config: NeoxReferenceConfig,
  weights: Map<string, Float64Array>,
  tokens: readonly number[],
): number[][] {
  const d = config.hiddenSize;
  const get = (name: string): Float64Array => {
    const value = weights.get(name);
    if (!value) throw new Error(`neox reference: missing ${name}`);
    return value;
  };
  const layerNorm = (x: Float64Array, prefix: string): Float64Array => {
    const mean = x.reduce((s, v) => s + v, 0) / x.length;
    const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
    const inverse = 1 / Math.sqrt(variance + config.layerNormEps);
    const w = get(`${prefix}.weight`);
    const b = get(`${prefix}.bias`);
    return x.map((v, i) => (v - mean) * inverse * w[i]! + b[i]!);
  };
  const dense = (x: Float64Array, prefix: string): Float64Array => {
    const w = get(`${prefix}.weight`);
    const b = get(`${prefix}.bias`);
    const out = new Float64Array(b.length);
    for (let o = 0; o < out.length; o++) {
      let sum = b[o]!;
      for (let i = 0; i < x.length; i++) sum += w[o * x.length + i]! * x[i]!;
      out[o] = sum;
    }
    return out;
  };
  const heads = config.numAttentionHeads;
  const headSize = d / heads;
  const rotaryNdims = Math.floor(headSize * config.rotaryPct);
  // HF GPTNeoXRotaryEmbedding: inv_freq over the rotated dims only; rotate_half within them.
  const rotate = (x: Float64Array, position: number): Float64Array => {
    const out = Float64Array.from(x);
    const half = rotaryNdims / 2;
    for (let i = 0; i < half; i++) {
      const angle = position / config.rotaryEmbBase ** ((2 * i) / rotaryNdims);
      const a = x[i]!;
      const b = x[i + half]!;
      out[i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
    return out;
  };
  const attention = (xs: Float64Array[], prefix: string): Float64Array[] => {
    // qkv.view(..., heads, 3·head_size): per head, its q, k and v rows follow each other.
    const qkv = xs.map((x) => dense(x, `${prefix}.attention.query_key_value`));
    const part = (row: Float64Array, head: number, which: number) =>
      row.subarray((head * 3 + which) * headSize, (head * 3 + which + 1) * headSize);
    return xs.map((_, t) => {
      const merged = new Float64Array(d);
      for (let h = 0; h < heads; h++) {
        const q = rotate(part(qkv[t]!, h, 0), t);
        const scores: number[] = [];
        for (let s = 0; s <= t; s++) {
          const k = rotate(part(qkv[s]!, h, 1), s);
          let dot = 0;
          for (let i = 0; i < headSize; i++) dot += q[i]! * k[i]!;
          scores.push(dot / Math.sqrt(headSize));
        }
        const top = Math.max(...scores);
        const exps = scores.map((score) => Math.exp(score - top));
        const total = exps.reduce((sum, e) => sum + e, 0);
        for (let s = 0; s <= t; s++) {
          const v = part(qkv[s]!, h, 2);
          for (let i = 0; i < headSize; i++) merged[h * headSize + i]! += (exps[s]! / total) * v[i]!;
        }
      }
      return dense(merged, `${prefix}.attention.dense`);
    });
  };
  const mlp = (x: Float64Array, prefix: string): Float64Array =>
    dense(dense(x, `${prefix}.mlp.dense_h_to_4h`).map(reference.geluScalar), `${prefix}.mlp.dense_4h_to_h`);

  const embed = get('gpt_neox.embed_in.weight');
  let hidden = tokens.map((token) => embed.slice(token * d, (token + 1) * d));
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const p = `gpt_neox.layers.${layer}`;
    const attended = attention(
      hidden.map((h) => layerNorm(h, `${p}.input_layernorm`)),
      p,
    );
    hidden = hidden.map((h, t) => {
      if (config.useParallelResidual) {
        const m = mlp(layerNorm(h, `${p}.post_attention_layernorm`), p);
        return h.map((v, i) => m[i]! + attended[t]![i]! + v);
      }
      const afterAttention = h.map((v, i) => v + attended[t]![i]!);
      const m = mlp(layerNorm(afterAttention, `${p}.post_attention_layernorm`), p);
      return afterAttention.map((v, i) => v + m[i]!);
    });
  }
  const head = get('embed_out.weight');
  return hidden.map((h) => {
    const x = layerNorm(h, 'gpt_neox.final_layer_norm');
    return Array.from({ length: config.vocabSize }, (_, o) => {
      let sum = 0;
      for (let i = 0; i < d; i++) sum += head[o * d + i]! * x[i]!;
      return sum;
    });
  });
}

/**
 * A relaxed recursive NeoX written by hand in rrt's own (canonical-name) layout: K = 2 stored layers
 * looped L = 3 times (cycle), a LoRA of rank 3 on q, k, v, o, up and down of every (loop, layer), each
 * with a `lora_B.bias`; and the same model unrolled in float64 under NeoX's names (q, k, v merged and
 * fused per head here, by hand) for {@link neoxReferenceLogits}: effective layer ℓ is stored layer ℓ mod K
 * plus `(α/r)·(B·A)` on each weight and `(α/r)·b_B` on each bias of loop ⌊ℓ/K⌋.
 */
export async function writeRelaxedNeoxModel(dir: string, seed: number) {
  const blockSize = 2;
  const loops = 3;
  const rank = 3;
  const alpha = 5;
  const config: NeoxReferenceConfig = {
    ...neoxParallel,
    vocabSize: 41,
    hiddenSize: 32,
    intermediateSize: 40,
    numHiddenLayers: blockSize * loops,
    numAttentionHeads: 2,
    rotaryPct: 0.25,
  };
  const d = config.hiddenSize;
  const ffn = config.intermediateSize;
  const headSize = d / config.numAttentionHeads;
  const normal = normalStream(seed);
  const stored = new Map<string, { shape: number[]; values: Float32Array }>();
  const random = (shape: number[], scale: number, offset = 0) => ({
    shape,
    values: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + scale * normal()),
  });
  const shapes: Record<string, [string, number, number]> = {
    q_proj: ['self_attn', d, d],
    k_proj: ['self_attn', d, d],
    v_proj: ['self_attn', d, d],
    o_proj: ['self_attn', d, d],
    up_proj: ['mlp', ffn, d],
    down_proj: ['mlp', d, ffn],
  };
  stored.set('model.embed_tokens.weight', random([config.vocabSize, d], 1));
  stored.set('model.norm.weight', random([d], 0.1, 1));
  stored.set('model.norm.bias', random([d], 0.1));
  stored.set('lm_head.weight', random([config.vocabSize, d], 1 / Math.sqrt(d)));
  for (let layer = 0; layer < blockSize; layer++) {
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      stored.set(`model.layers.${layer}.${norm}.weight`, random([d], 0.1, 1));
      stored.set(`model.layers.${layer}.${norm}.bias`, random([d], 0.1));
    }
    for (const [module, [group, out, inFeatures]] of Object.entries(shapes)) {
      stored.set(
        `model.layers.${layer}.${group}.${module}.weight`,
        random([out, inFeatures], 1 / Math.sqrt(inFeatures)),
      );
      stored.set(`model.layers.${layer}.${group}.${module}.bias`, random([out], 0.5));
    }
  }
  const unrolled = new Map<string, Float64Array>([
    ['gpt_neox.embed_in.weight', Float64Array.from(stored.get('model.embed_tokens.weight')!.values)],
    ['gpt_neox.final_layer_norm.weight', Float64Array.from(stored.get('model.norm.weight')!.values)],
    ['gpt_neox.final_layer_norm.bias', Float64Array.from(stored.get('model.norm.bias')!.values)],
    ['embed_out.weight', Float64Array.from(stored.get('lm_head.weight')!.values)],
  ]);
  for (let depth = 0; depth < config.numHiddenLayers; depth++) {
    const blockLayer = depth % blockSize;
    const loop = Math.floor(depth / blockSize);
    const p = `gpt_neox.layers.${depth}`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      for (const part of ['weight', 'bias']) {
        unrolled.set(
          `${p}.${norm}.${part}`,
          Float64Array.from(stored.get(`model.layers.${blockLayer}.${norm}.${part}`)!.values),
        );
      }
    }
    const merged: Record<string, { weight: Float64Array; bias: Float64Array }> = {};
    for (const [module, [group, out, inFeatures]] of Object.entries(shapes)) {
      const name = `model.layers.${blockLayer}.${group}.${module}`;
      const a = random([rank, inFeatures], 0.3);
      const b = random([out, rank], 0.3);
      const bias = random([out], 0.3);
      const prefix = `model.loras.${loop}.${name}`;
      stored.set(`${prefix}.lora_A.weight`, a);
      stored.set(`${prefix}.lora_B.weight`, b);
      stored.set(`${prefix}.lora_B.bias`, bias);
      const weight = Float64Array.from(stored.get(`${name}.weight`)!.values);
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inFeatures; i++) {
          let product = 0;
          for (let r = 0; r < rank; r++) product += b.values[o * rank + r]! * a.values[r * inFeatures + i]!;
          weight[o * inFeatures + i]! += (alpha / rank) * product;
        }
      }
      const mergedBias = Float64Array.from(
        stored.get(`${name}.bias`)!.values,
        (v, o) => v + (alpha / rank) * bias.values[o]!,
      );
      merged[module] = { weight, bias: mergedBias };
    }
    // query_key_value rows [heads, 3, headSize]: q, k, v of head 0, then head 1.
    const fusedWeight = new Float64Array(3 * d * d);
    const fusedBias = new Float64Array(3 * d);
    for (let h = 0; h < config.numAttentionHeads; h++) {
      (['q_proj', 'k_proj', 'v_proj'] as const).forEach((module, part) => {
        for (let j = 0; j < headSize; j++) {
          const from = h * headSize + j;
          const to = (h * 3 + part) * headSize + j;
          fusedWeight.set(merged[module]!.weight.subarray(from * d, (from + 1) * d), to * d);
          fusedBias[to] = merged[module]!.bias[from]!;
        }
      });
    }
    unrolled.set(`${p}.attention.query_key_value.weight`, fusedWeight);
    unrolled.set(`${p}.attention.query_key_value.bias`, fusedBias);
    const neoxModules: [string, string][] = [
      ['o_proj', 'attention.dense'],
      ['up_proj', 'mlp.dense_h_to_4h'],
      ['down_proj', 'mlp.dense_4h_to_h'],
    ];
    for (const [module, neoxName] of neoxModules) {
      unrolled.set(`${p}.${neoxName}.weight`, merged[module]!.weight);
      unrolled.set(`${p}.${neoxName}.bias`, merged[module]!.bias);
    }
  }
  const loraRanks = {
    q_proj: rank,
    k_proj: rank,
    v_proj: rank,
    o_proj: rank,
    gate_proj: 0,
    up_proj: rank,
    down_proj: rank,
  };
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      ...neoxHfConfig(config),
      model_type: 'rrt_gpt_neox',
      architectures: ['RelaxedRecursiveGPTNeoXForCausalLM'],
      recursion: {
        block_size: blockSize,
        loops,
        strategy: 'cycle',
        init: 'average',
        lora_ranks: loraRanks,
        lora_alpha: alpha,
        lora_bias: true,
        base_model_type: 'gpt_neox',
        base_architectures: ['GPTNeoXForCausalLM'],
      },
    }),
  );
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    [...stored].map(([name, tensor]) => ({
      name,
      dtype: 'F32' as const,
      shape: tensor.shape,
      bytes: new Uint8Array(tensor.values.buffer),
    })),
  );
  return { config, unrolled, blockSize };
}
