/**
 * Training keeps every weight of the newer families: a Qwen3 or Gemma 3 model (q/k norms, Gemma's
 * pre/post feed-forward norms) wrapped as trainable variables runs the same forward pass and saves back
 * a checkpoint with every tensor, which loads and runs exactly as the original.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, openCheckpoint } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idsTensor, maxAbsDifference, randomTokens, readAndDispose } from '../../core/test/logits.js';
import { writeRandomModel } from '../../core/test/random-model.js';
import { TrainableModel } from '../src/index.js';

describe('trainable Qwen3 and Gemma 3 models keep their extra norms (cpu)', () => {
  let backend: Backend;
  let workDir: string;
  beforeAll(async () => {
    backend = (await createBackend('cpu')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-train-families-'));
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  for (const name of ['qwen3-qknorm', 'gemma3-local'] as const) {
    it(`${name}: same logits as the loaded model; saved with every tensor, it reloads to the same logits`, async () => {
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      const dir = join(workDir, `${name}-${seed}`);
      const { reference } = await writeRandomModel(dir, name, seed);
      const baseline = backend.numTensors();
      const tokens = randomTokens(seed, 8, reference.vocabSize);
      const logitsOf = async (modelDir: string) => {
        const model = await loadModel(modelDir, backend);
        const ids = idsTensor(backend, [tokens]);
        const logits = await readAndDispose(backend, model.forward(ids).logits);
        backend.dispose(ids);
        model.dispose();
        return logits;
      };
      const original = await logitsOf(dir);
      const trainable = await TrainableModel.load(dir, backend);
      const ids = idsTensor(backend, [tokens]);
      const trained = await readAndDispose(
        backend,
        trainable.withHead((decoder) => decoder.forward(ids).logits),
      );
      backend.dispose(ids);
      expect(maxAbsDifference(trained, original), `seed ${seed}`).toBe(0);
      const saved = join(workDir, `${name}-${seed}-saved`);
      await trainable.save(saved);
      trainable.dispose();
      const [before, after] = await Promise.all([openCheckpoint(dir), openCheckpoint(saved)]);
      expect([...after.entries.keys()].sort()).toEqual([...before.entries.keys()].sort());
      await Promise.all([before.close(), after.close()]);
      expect(maxAbsDifference(await logitsOf(saved), original), `seed ${seed}`).toBe(0);
      expect(backend.numTensors()).toBe(baseline);
    });
  }
});
