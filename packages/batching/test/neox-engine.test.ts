/**
 * The serving engine on a relaxed recursive GPT-NeoX (parallel residual, LayerNorm with bias, partial
 * rotary, per-loop LoRA with `lora_B.bias`), wasm: the engine composes the decoder's step pieces, so
 * with exit `none` every mode yields exactly single-sequence greedy generation's tokens, on both
 * attention paths (`paged`: `Backend.pagedAttention` over the pool; `gather`) and with both multi-LoRA
 * methods (`masked`: the concatenated LoRAs with a row mask, their biases by a row selector; `segment`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, seededRandom, yieldToEventLoop } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRelaxedNeoxModel } from '../../core/test/neox-model.js';
import { type BatchingMode, createEngine } from '../src/index.js';
import { collect, greedyReference } from './support.js';

describe('serving engine on relaxed GPT-NeoX (wasm)', () => {
  let workDir: string;
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'rrt-engine-neox-'));
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  it.each(['masked', 'segment'] as const)(
    'every mode and attention path yields exactly the greedy tokens of each request (%s LoRA)',
    async (loraMode) => {
      const { backend } = await createBackend('wasm');
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      await writeRelaxedNeoxModel(join(workDir, 'relaxed'), seed);
      const baseline = backend.numTensors();
      const model = await loadModel(join(workDir, 'relaxed'), backend, { loraMode });
      expect(model.loraMode).toBe(loraMode);
      const withModel = backend.numTensors();
      const random = seededRandom(seed);
      const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
      const requests = Array.from({ length: 4 }, () => ({
        prompt: Array.from({ length: int(1, 9) }, () => int(0, model.config.vocabSize - 1)),
        maxTokens: int(2, 8),
      }));
      const expected = await greedyReference(model, requests);
      const runs = (['static', 'sequence', 'depth'] as const satisfies readonly BatchingMode[]).flatMap(
        (mode) => (['paged', 'gather'] as const).map((attention) => ({ mode, attention })),
      );
      for (const { mode, attention } of runs) {
        const engine = createEngine(model, {
          mode,
          attention,
          maxSlots: 3,
          kvBytes: 1 << 20,
          pageSize: 4,
          chunkSize: 3,
        });
        const results = await Promise.all(
          requests.map(async ({ prompt, maxTokens }, index) => {
            for (let tick = 0; tick < index; tick++) await yieldToEventLoop();
            return (await collect(engine.generate(prompt, { maxTokens, stopTokens: [] }))).tokens;
          }),
        );
        expect(results, `${mode}, ${attention}, seed ${seed}`).toEqual(expected);
        engine.dispose();
        expect(backend.numTensors()).toBe(withModel);
      }
      model.dispose();
      expect(backend.numTensors()).toBe(baseline);
    },
  );
});
