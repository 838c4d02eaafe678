/**
 * Sampling through the engine (`sampling` of `generate`): with exit `none`, every mode yields, for every
 * request, exactly the tokens `generateTokens` samples with the same options and seed (one draw per token
 * from the last loop's logits), over random arrival traces and slot counts, on a relaxed recursive model
 * (K = 2, L = 3), wasm. Sampling reads the logits, so this holds only if they are the same bits in every
 * batch. Then: bad sampling options are refused with a typed error, and confidence exits sample from the
 * exit loop.
 */
import { type Decoder, generateTokens, seededRandom, yieldToEventLoop } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import { type BatchingMode, createEngine, RequestError } from '../src/index.js';
import { collect, greedy, useRelaxedModel } from './support.js';

describe('sampling through the engine (wasm)', () => {
  let backend: Backend;
  let model: Decoder;
  let seed: number;
  let withModel: number;
  useRelaxedModel('rrt-engine-sampling-', (fixture) => {
    ({ backend, model, seed, withModel } = fixture);
  });

  async function sampled(prompt: readonly number[], maxTokens: number, sampling: object): Promise<number[]> {
    const tokens: number[] = [];
    for await (const token of generateTokens(model, prompt, { maxTokens, stopTokens: [], ...sampling }))
      tokens.push(token);
    return tokens;
  }

  for (const mode of ['static', 'sequence', 'depth'] as const satisfies readonly BatchingMode[]) {
    it(`${mode}: with exit none, every request yields exactly the tokens generateTokens samples`, async () => {
      const vocab = model.config.vocabSize;
      for (let trial = 0; trial < 3; trial++) {
        const random = seededRandom(seed + 31 * trial + mode.length);
        const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
        const engine = createEngine(model, {
          mode,
          maxSlots: int(1, 4),
          kvBytes: 1 << 20,
          pageSize: int(2, 5),
        });
        const requests = Array.from({ length: int(3, 6) }, (_, index) => ({
          prompt: Array.from({ length: int(1, 12) }, () => int(0, vocab - 1)),
          maxTokens: int(1, 12),
          delay: int(0, 6),
          // A high temperature makes the draws move with the logits' last bits.
          sampling: { temperature: 1.5, topP: index % 2 === 0 ? 1 : 0.9, seed: seed + index },
        }));
        const expected = [];
        for (const request of requests)
          expected.push(await sampled(request.prompt, request.maxTokens, request.sampling));
        const results = await Promise.all(
          requests.map(async (request) => {
            for (let tick = 0; tick < request.delay; tick++) await yieldToEventLoop();
            return collect(
              engine.generate(request.prompt, {
                maxTokens: request.maxTokens,
                stopTokens: [],
                sampling: request.sampling,
              }),
            );
          }),
        );
        results.forEach((result, index) => {
          expect(result.tokens, `${mode}, trial ${trial}, request ${index}, seed ${seed}`).toEqual(
            expected[index],
          );
        });
        engine.dispose();
        expect(backend.numTensors()).toBe(withModel);
      }
    });
  }

  it('temperature 0 is greedy; bad options are refused naming the option; confidence exits sample', async () => {
    const engine = createEngine(model, { mode: 'depth', maxSlots: 2, kvBytes: 1 << 20 });
    const prompt = [1, 5, 9, 2];
    const greedyRun = await collect(
      engine.generate(prompt, { maxTokens: 6, stopTokens: [], sampling: { temperature: 0 } }),
    );
    expect(greedyRun.tokens).toEqual(await greedy(model, prompt, 6));
    expect(() =>
      engine.generate(prompt, { maxTokens: 3, sampling: { temperature: -1 } }).next(),
    ).toBeDefined();
    await expect(
      engine.generate(prompt, { maxTokens: 3, sampling: { temperature: -1 } }).next(),
    ).rejects.toThrow(RequestError);
    await expect(
      engine.generate(prompt, { maxTokens: 3, sampling: { temperature: 1, topP: 0 } }).next(),
    ).rejects.toThrow(/sampling: topP must be in \(0, 1\]/);
    engine.dispose();
    // Every token after the first (the prompt's chunk runs every loop) exits at loop 0 (τ 0): each is
    // drawn from loop 0's logits, reproducibly.
    const runs = [];
    for (let run = 0; run < 2; run++) {
      const exiting = createEngine(model, {
        mode: 'depth',
        maxSlots: 2,
        kvBytes: 1 << 20,
        exit: { kind: 'confidence', threshold: 0 },
      });
      runs.push(
        await collect(
          exiting.generate(prompt, { maxTokens: 8, stopTokens: [], sampling: { temperature: 1.5, seed: 3 } }),
        ),
      );
      exiting.dispose();
    }
    expect(runs[0]!.stats.exitLoops.slice(1).every((loop) => loop === 0)).toBe(true);
    expect(runs[0]!.tokens).toHaveLength(8);
    expect(runs[1]!.tokens).toEqual(runs[0]!.tokens);
    expect(backend.numTensors()).toBe(withModel);
  });
});
