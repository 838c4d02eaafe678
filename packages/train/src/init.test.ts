import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, toFloat32 } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainOptionError } from './errors.js';
import { writeRandomModel } from './init.js';

const config = {
  model_type: 'llama',
  vocab_size: 40,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  tie_word_embeddings: false,
};

let workDir: string;
beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'rrt-train-init-'));
});
afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe('writeRandomModel', () => {
  it('writes the same bytes for the same seed, with the scales it promises', async () => {
    await writeRandomModel(join(workDir, 'a'), config, { seed: 3 });
    await writeRandomModel(join(workDir, 'b'), config, { seed: 3 });
    await writeRandomModel(join(workDir, 'c'), config, { seed: 4 });
    const bytes = (dir: string) => readFile(join(workDir, dir, 'model.safetensors'));
    expect(Buffer.compare(await bytes('a'), await bytes('b'))).toBe(0);
    expect(Buffer.compare(await bytes('a'), await bytes('c'))).not.toBe(0);
    const checkpoint = await openCheckpoint(join(workDir, 'a'));
    const values = async (name: string) => toFloat32(await checkpoint.readTensor(name));
    const std = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
    expect(std(await values('model.layers.0.mlp.up_proj.weight'))).toBeCloseTo(0.02, 2);
    // Residual projections are scaled by 1/√(2·layers) = 1/2.
    expect(std(await values('model.layers.1.self_attn.o_proj.weight'))).toBeCloseTo(0.01, 2);
    expect(Array.from(await values('model.norm.weight'))).toEqual(new Array(16).fill(1));
    expect(checkpoint.entries.has('lm_head.weight')).toBe(true);
    await checkpoint.close();
  });

  it('refuses a recursive config', async () => {
    const recursive = { ...config, recursion: { block_size: 1, loops: 2 } };
    await expect(writeRandomModel(join(workDir, 'r'), recursive)).rejects.toThrow(TrainOptionError);
  });
});
