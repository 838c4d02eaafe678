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

  it('caps positions at a sliding window, which it does not implement, unless the window is off', () => {
    const positions = (extra: Record<string, unknown>) =>
      resolveConfig({ ...base, ...extra }, 'c.json').config.maxPositionEmbeddings;
    expect(positions({ model_type: 'mistral', sliding_window: 128 })).toBe(128);
    expect(positions({ model_type: 'mistral', sliding_window: null })).toBe(512);
    expect(positions({ model_type: 'qwen2', sliding_window: 128, use_sliding_window: false })).toBe(512);
    expect(() => resolveConfig({ ...base, sliding_window: -1 }, 'c.json')).toThrow(/c\.json.*sliding_window/);
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
