import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToRecursive } from '@rrt/convert';
import { type SyntheticModelSpec, writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { openCheckpoint, readConfig } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CheckpointStorage, checkpointStorage, type ModelCost, modelCost } from '../src/index.js';

/**
 * vocab 32, hidden 16, FFN 24, 4 layers, 4 query / 2 KV heads of 4, untied head, q/k/v/o biases. Counted
 * by hand, per layer: q 16·16 = 256, k 16·8 = 128, v 128, o 256, gate 16·24 = 384, up 384, down 384 →
 * 1920 weights; biases q 16 + k 8 + v 8 + o 16 = 48 → 1968 per layer. Norms 2·16 per layer, 16 final.
 */
const spec: SyntheticModelSpec = {
  modelType: 'llama',
  vocabSize: 32,
  hiddenSize: 16,
  intermediateSize: 24,
  numHiddenLayers: 4,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  tieWordEmbeddings: false,
  attentionBias: true,
  dtype: 'BF16',
  seed: 3,
};

async function costOf(dir: string): Promise<{ cost: ModelCost; storage: CheckpointStorage }> {
  const config = await readConfig(dir);
  const checkpoint = await openCheckpoint(dir);
  try {
    return {
      cost: modelCost(config, { context: 10 }),
      storage: checkpointStorage(checkpoint.entries, config),
    };
  } finally {
    await checkpoint.close();
  }
}

describe('cost of original, recursive and relaxed models, counted by hand', () => {
  let workDir: string;
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'rrt-eval-cost-'));
    await writeSyntheticCheckpoint(join(workDir, 'original'), spec);
    await convertToRecursive(join(workDir, 'original'), join(workDir, 'recursive'), { loops: 2 });
    // LoRA stored in F32 beside BF16 weights: two dtypes in one checkpoint.
    await convertToRecursive(join(workDir, 'original'), join(workDir, 'relaxed'), {
      loops: 2,
      ranks: 2,
      loraDtype: 'F32',
    });
  });
  afterAll(async () => {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it('original: 4 unique layers', async () => {
    const { cost, storage } = await costOf(join(workDir, 'original'));
    expect(cost.parameters).toEqual({
      embedding: 512,
      sharedBlock: 0,
      uniqueLayers: 4 * 1968,
      lora: 0,
      norms: 4 * 32 + 16,
      head: 512,
      total: 512 + 7872 + 144 + 512,
      nonEmbedding: 7872 + 144,
    });
    // 2·(4 layers · 1920 weights) + 2·16·32 head + 4·4 layers·(4 heads · 4) per key · 10 keys.
    expect(cost.flopsPerToken).toEqual({
      layers: 15360,
      lora: 0,
      head: 1024,
      attentionPerKey: 256,
      context: 10,
      total: 15360 + 1024 + 2560,
    });
    expect(cost.kvBytesPerToken).toBe(2 * 4 * 2 * 4 * 4);
    expect(cost.storedLayers).toBe(4);
    expect(cost.effectiveLayers).toBe(4);
    expect(storage.byDtype).toEqual({ BF16: { tensors: 3 + 4 * 13, parameters: 9040, bytes: 2 * 9040 } });
  });

  it('recursive 2×2: half the layers stored, the same FLOPs and KV bytes', async () => {
    const { cost, storage } = await costOf(join(workDir, 'recursive'));
    expect(cost.parameters).toEqual({
      embedding: 512,
      sharedBlock: 2 * 1968,
      uniqueLayers: 0,
      lora: 0,
      norms: 2 * 32 + 16,
      head: 512,
      total: 512 + 3936 + 80 + 512,
      nonEmbedding: 3936 + 80,
    });
    expect(cost.flopsPerToken.total).toBe(15360 + 1024 + 2560);
    expect(cost.kvBytesPerToken).toBe(256);
    expect(cost.storedLayers).toBe(2);
    expect(storage.total.parameters).toBe(5040);
  });

  it('relaxed 2×2 rank 2: LoRA per loop and layer, in its own dtype', async () => {
    const { cost, storage } = await costOf(join(workDir, 'relaxed'));
    // Per (loop, layer): 2·(16+16) q + 2·(16+8) k + 2·(16+8) v + 2·(16+16) o + 3 · 2·(16+24) FFN = 464.
    const lora = 2 * 2 * 464;
    expect(cost.parameters.lora).toBe(lora);
    expect(cost.parameters.total).toBe(5040 + lora);
    expect(cost.flopsPerToken.lora).toBe(2 * lora);
    expect(cost.flopsPerToken.total).toBe(15360 + 2 * lora + 1024 + 2560);
    expect(storage.byDtype).toEqual({
      BF16: { tensors: 3 + 2 * 13, parameters: 5040, bytes: 2 * 5040 },
      F32: { tensors: 2 * 2 * 7 * 2, parameters: lora, bytes: 4 * lora },
    });
  });

  it('the groups counted from the config equal those tallied from the checkpoint headers', async () => {
    for (const name of ['original', 'recursive', 'relaxed']) {
      const { cost, storage } = await costOf(join(workDir, name));
      for (const [group, tally] of Object.entries(storage.byGroup)) {
        expect(tally.parameters, `${name} ${group}`).toBe(
          cost.parameters[group as keyof typeof storage.byGroup],
        );
      }
    }
  });

  it('middle-cycle: the first and last layers are unique, the middle two shared', async () => {
    const dir = join(workDir, 'middle');
    await convertToRecursive(join(workDir, 'original'), dir, {
      loops: 2,
      strategy: 'middle-cycle',
      ranks: 2,
    });
    const { cost, storage } = await costOf(dir);
    expect(cost.storedLayers).toBe(3);
    expect(cost.parameters.uniqueLayers).toBe(2 * 1968);
    expect(cost.parameters.sharedBlock).toBe(1968);
    expect(cost.parameters.lora).toBe(2 * 464);
    expect(storage.byGroup.lora.parameters).toBe(2 * 464);
  });
});
