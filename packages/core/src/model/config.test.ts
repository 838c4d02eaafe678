import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.js';
import { resolveConfig } from './config.js';

const base = {
  model_type: 'llama',
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
};

describe('resolveConfig', () => {
  it('biases follow the family: Qwen2 q/k/v, Llama attention_bias q/k/v/o, mlp_bias gate/up/down', () => {
    const modules = (extra: Record<string, unknown>) =>
      resolveConfig({ ...base, ...extra }, 'c.json').config.biasedModules;
    expect(modules({})).toEqual([]);
    expect(modules({ model_type: 'qwen2' })).toEqual(['q_proj', 'k_proj', 'v_proj']);
    expect(modules({ attention_bias: true })).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj']);
    expect(modules({ mlp_bias: true })).toEqual(['gate_proj', 'up_proj', 'down_proj']);
  });

  it('sliding windows per layer as Hugging Face defines them; max positions are never capped', () => {
    const resolved = (extra: Record<string, unknown>) =>
      resolveConfig({ ...base, ...extra }, 'c.json').config;
    const windows = (extra: Record<string, unknown>) => resolved(extra).layerWindows;
    expect(resolved({ model_type: 'mistral', sliding_window: 128 }).maxPositionEmbeddings).toBe(512);
    expect(windows({ model_type: 'mistral', sliding_window: 128 })).toEqual([128, 128]);
    expect(windows({ model_type: 'mistral', sliding_window: null })).toEqual([undefined, undefined]);
    expect(windows({ model_type: 'mistral' })).toEqual([4096, 4096]); // MistralConfig's default
    expect(windows({ model_type: 'llama', sliding_window: 128 })).toEqual([undefined, undefined]);
    // Qwen2/3: only with use_sliding_window, and only layers with index ≥ max_window_layers.
    expect(windows({ model_type: 'qwen2', sliding_window: 128 })).toEqual([undefined, undefined]);
    expect(windows({ model_type: 'qwen2', sliding_window: 128, use_sliding_window: true })).toEqual([
      undefined,
      undefined,
    ]);
    const qwen = { sliding_window: 128, use_sliding_window: true, max_window_layers: 1 };
    expect(windows({ model_type: 'qwen2', ...qwen })).toEqual([undefined, 128]);
    expect(windows({ model_type: 'qwen3', ...qwen, max_window_layers: 0 })).toEqual([128, 128]);
    // A layer_types list wins over every family rule.
    const listed = { sliding_window: 16, layer_types: ['full_attention', 'sliding_attention'] };
    expect(windows({ model_type: 'mistral', ...listed })).toEqual([undefined, 16]);
    expect(() => resolveConfig({ ...base, layer_types: ['full_attention'] }, 'c.json')).toThrow(
      /layer_types/,
    );
    expect(() => resolveConfig({ ...base, model_type: 'mistral', sliding_window: -1 }, 'c.json')).toThrow(
      /c\.json.*sliding_window/,
    );
  });

  it('Gemma 2 and 3: local/global patterns, soft-caps, query scale and RoPE bases, with HF defaults', () => {
    const six = { ...base, num_hidden_layers: 6, head_dim: 8 };
    const gemma2 = resolveConfig({ ...six, model_type: 'gemma2' }, 'c.json').config;
    expect(gemma2.layerWindows).toEqual([4096, undefined, 4096, undefined, 4096, undefined]);
    expect(gemma2).toMatchObject({
      attentionSoftCap: 50,
      finalSoftCap: 30,
      sandwichNorms: true,
      qkNorm: false,
    });
    expect(gemma2.attentionScale).toBe(256 ** -0.5);
    const capsOff = {
      attn_logit_softcapping: null,
      final_logit_softcapping: null,
      query_pre_attn_scalar: 64,
    };
    expect(resolveConfig({ ...six, model_type: 'gemma2', ...capsOff }, 'c.json').config).toMatchObject({
      attentionSoftCap: undefined,
      finalSoftCap: undefined,
      attentionScale: 1 / 8,
    });
    const gemma3 = resolveConfig({ ...six, model_type: 'gemma3_text', sliding_window: 512 }, 'c.json').config;
    expect(gemma3.layerWindows).toEqual([512, 512, 512, 512, 512, undefined]);
    expect(gemma3).toMatchObject({ qkNorm: true, sandwichNorms: true, ropeTheta: 1e6, localRopeTheta: 1e4 });
    expect(gemma3.attentionSoftCap).toBeUndefined();
    const pattern = { model_type: 'gemma3_text', sliding_window_pattern: 3 };
    expect(resolveConfig({ ...six, ...pattern }, 'c.json').config.layerWindows).toEqual([
      4096,
      4096,
      undefined,
      4096,
      4096,
      undefined,
    ]);
  });

  it('a recursive schedule must repeat the layer types: K = 2 loops Gemma 2, K = 3 is refused naming the field', () => {
    const recursion = (blockSize: number) => ({
      ...base,
      model_type: 'rrt_gemma2',
      num_hidden_layers: 6,
      head_dim: 8,
      recursion: { base_model_type: 'gemma2', block_size: blockSize, loops: 6 / blockSize },
    });
    expect(resolveConfig(recursion(2), 'c.json').config.layerWindows[4]).toBe(4096);
    expect(() => resolveConfig(recursion(3), 'c.json')).toThrow(
      /c\.json: field "recursion\.block_size".*depths 0, sliding 4096, and 3, full, both run stored layer 0/,
    );
  });

  it('Gemma: 1 + w norms, √d embedding scale, tanh-GELU whatever hidden_act says, tied head', () => {
    const { config } = resolveConfig(
      { ...base, model_type: 'gemma', head_dim: 8, hidden_act: 'gelu' },
      'c.json',
    );
    expect(config).toMatchObject({
      family: 'gemma',
      normAddOne: true,
      hiddenAct: 'gelu_tanh',
      tieWordEmbeddings: true,
      headDim: 8,
    });
    expect(config.embeddingScale).toBe(Math.fround(4));
  });

  it('reports keys it does not read and rejects bad values with the field named', () => {
    expect(resolveConfig({ ...base, flash_attention: true }, 'c.json').ignoredKeys).toEqual([
      'flash_attention',
    ]);
    expect(() => resolveConfig({ ...base, hidden_size: 0 }, 'm/c.json')).toThrow(ConfigError);
    expect(() => resolveConfig({ ...base, rope_scaling: { type: 'yarn', factor: 4 } }, 'c.json')).toThrow(
      /rope_scaling/,
    );
    expect(() => resolveConfig({ ...base, hidden_act: 'relu' }, 'c.json')).toThrow(/hidden_act/);
    expect(() => resolveConfig([], 'c.json')).toThrow(/c\.json.*JSON object/);
  });
});
