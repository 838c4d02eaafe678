import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, openCheckpoint, readConfig, toFloat32 } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../test-support.js';
import {
  type SyntheticModelSpec,
  syntheticTensorShapes,
  tinyLlamaSpec,
  writeSyntheticCheckpoint,
} from './index.js';

let workDir: string;
beforeAll(async () => {
  workDir = await tempDir('synthetic');
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

const spec: SyntheticModelSpec = {
  modelType: 'qwen2',
  vocabSize: 40,
  hiddenSize: 32,
  intermediateSize: 48,
  numHiddenLayers: 3,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  tieWordEmbeddings: true,
  attentionBias: true,
  dtype: 'BF16',
  seed: 4,
  layerSpecificity: 0.25,
  maxShardBytes: 8_000,
};

describe('writeSyntheticCheckpoint', () => {
  it('writes a sharded checkpoint the model loader accepts, reproducibly', async () => {
    const dir = join(workDir, 'a');
    const written = await writeSyntheticCheckpoint(dir, spec);
    const config = await readConfig(dir);
    expect(config.biasedModules).toEqual(['q_proj', 'k_proj', 'v_proj']); // Qwen2: q, k, v
    expect(config.tieWordEmbeddings).toBe(true);
    const { backend } = await createBackend('cpu');
    const unused: string[] = [];
    const model = await loadModel(dir, backend, { onUnusedTensor: (name) => unused.push(name) });
    model.dispose();
    expect(unused).toEqual([]);

    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.indexFile).toBeDefined(); // 8 kB shards: sharded
    const shapes = syntheticTensorShapes(spec);
    expect([...checkpoint.entries.keys()].sort()).toEqual(shapes.map(([name]) => name).sort());
    expect(written.parameters).toBe(
      shapes.reduce((total, [, shape]) => total + shape.reduce((a, b) => a * b, 1), 0),
    );
    // Layers share a base (specificity 0.25): correlation between two layers' q_proj ≈ 0.75.
    const q0 = toFloat32(await checkpoint.readTensor('model.layers.0.self_attn.q_proj.weight'));
    const q2 = toFloat32(await checkpoint.readTensor('model.layers.2.self_attn.q_proj.weight'));
    let dot = 0;
    let n0 = 0;
    let n2 = 0;
    for (let i = 0; i < q0.length; i++) {
      dot += q0[i]! * q2[i]!;
      n0 += q0[i]! ** 2;
      n2 += q2[i]! ** 2;
    }
    expect(dot / Math.sqrt(n0 * n2)).toBeGreaterThan(0.65);
    expect(dot / Math.sqrt(n0 * n2)).toBeLessThan(0.85);
    // Standard deviation 1/√fan-in = 1/√32.
    expect(Math.sqrt(n0 / q0.length)).toBeCloseTo(1 / Math.sqrt(32), 1);
    await checkpoint.close();

    const again = join(workDir, 'b');
    await writeSyntheticCheckpoint(again, spec);
    const { readdir } = await import('node:fs/promises');
    const files = (await readdir(dir)).sort();
    expect(await readdir(again).then((names) => names.sort())).toEqual(files);
    for (const file of files) {
      expect(await readFile(join(again, file)), file).toEqual(await readFile(join(dir, file)));
    }
  });

  it('writes the biases a Llama config with attention_bias and mlp_bias declares, and nothing else', async () => {
    const llama: SyntheticModelSpec = {
      ...spec,
      modelType: 'llama',
      numHiddenLayers: 2,
      attentionBias: true,
      mlpBias: true,
      maxShardBytes: undefined,
    };
    const shapes = new Map(syntheticTensorShapes(llama));
    const biases = [...shapes.keys()].filter(
      (name) => name.startsWith('model.layers.1.') && name.endsWith('.bias'),
    );
    expect(biases.sort()).toEqual(
      [
        'mlp.down_proj',
        'mlp.gate_proj',
        'mlp.up_proj',
        'self_attn.k_proj',
        'self_attn.o_proj',
        'self_attn.q_proj',
        'self_attn.v_proj',
      ].map((module) => `model.layers.1.${module}.bias`),
    );
    expect(shapes.get('model.layers.0.self_attn.o_proj.bias')).toEqual([32]);
    expect(shapes.get('model.layers.0.mlp.up_proj.bias')).toEqual([48]);
    const dir = join(workDir, 'llama-biased');
    await writeSyntheticCheckpoint(dir, llama);
    const { backend } = await createBackend('cpu');
    const unused: string[] = [];
    const model = await loadModel(dir, backend, { onUnusedTensor: (name) => unused.push(name) });
    model.dispose();
    expect(unused).toEqual([]);
    // Without the flags: no bias at all.
    const plain = syntheticTensorShapes({ ...llama, attentionBias: false, mlpBias: false });
    expect(plain.some(([name]) => name.endsWith('.bias'))).toBe(false);
  });

  it('describes TinyLlama as the issue asks', () => {
    const shapes = new Map(syntheticTensorShapes(tinyLlamaSpec));
    expect(shapes.get('model.layers.21.self_attn.k_proj.weight')).toEqual([256, 2048]);
    expect(shapes.get('model.layers.0.mlp.down_proj.weight')).toEqual([2048, 5632]);
    expect(shapes.get('lm_head.weight')).toEqual([32000, 2048]);
    const parameters = [...shapes.values()].reduce(
      (total, shape) => total + shape.reduce((a, b) => a * b, 1),
      0,
    );
    expect(parameters).toBe(1_100_048_384); // TinyLlama-1.1B's count
    expect(tinyLlamaSpec.dtype).toBe('BF16');
  });
});
