/**
 * The serving engine composes the decoder's step pieces, so the families' features run there too: on a
 * random Gemma 2 (alternating windows of 4, attention and final soft-caps, four norms) and Gemma 3 text
 * (q/k norms, local RoPE, windows of 3), every mode yields exactly the greedy tokens of
 * `generateTokens`, with prompts and generations that run well past the windows, in chunks that straddle
 * their edges (wasm).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, seededRandom } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRandomModel } from '../../core/test/random-model.js';
import { createEngine } from '../src/index.js';
import { collect, greedyReference } from './support.js';

describe('serving engine on windowed, soft-capped families (wasm)', () => {
  let backend: Backend;
  let workDir: string;
  beforeAll(async () => {
    backend = (await createBackend('wasm')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-engine-families-'));
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  for (const name of ['gemma2-softcap', 'gemma3-local'] as const) {
    it(`${name}: static, sequence and depth batching yield exactly the greedy tokens`, async () => {
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      const dir = join(workDir, `${name}-${seed}`);
      const { reference } = await writeRandomModel(dir, name, seed);
      const baseline = backend.numTensors();
      const model = await loadModel(dir, backend);
      const random = seededRandom(seed);
      const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
      const requests = Array.from({ length: 4 }, () => ({
        prompt: Array.from({ length: int(5, 14) }, () => int(0, reference.vocabSize - 1)),
        maxTokens: int(4, 9),
      }));
      const expected = await greedyReference(model, requests);
      for (const mode of ['static', 'sequence', 'depth'] as const) {
        const engine = createEngine(model, {
          mode,
          maxSlots: 3,
          kvBytes: 1 << 20,
          pageSize: 3,
          chunkSize: 5,
        });
        const results = await Promise.all(
          requests.map(async ({ prompt, maxTokens }) => {
            return (await collect(engine.generate(prompt, { maxTokens, stopTokens: [] }))).tokens;
          }),
        );
        results.forEach((tokens, index) => {
          expect(tokens, `${mode}, request ${index}, seed ${seed}`).toEqual(expected[index]);
        });
        engine.dispose();
      }
      model.dispose();
      expect(backend.numTensors()).toBe(baseline);
    });
  }
});
