/**
 * What the executor keeps between steps: the previous step's hidden rows as one tensor (the rows that
 * continue are gathered from it), not one tensor per row, in every mode and with exits (propagation reads
 * its exit rows from the same tensor). With exit `none` the tokens stay the greedy ones.
 */
import { type Decoder, seededRandom, yieldToEventLoop } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import { type BatchingMode, createEngine, type ExitPolicy } from '../src/index.js';
import { collect, greedyReference, useRelaxedModel } from './support.js';

describe('executor: rows kept between steps (wasm)', () => {
  let backend: Backend;
  let model: Decoder;
  let seed: number;
  let withModel: number;
  useRelaxedModel('rrt-kept-rows-', (fixture) => {
    ({ backend, model, seed, withModel } = fixture);
  });

  const runs: [BatchingMode, ExitPolicy][] = [
    ['sequence', { kind: 'none' }],
    ['depth', { kind: 'none' }],
    ['depth', { kind: 'confidence', threshold: 0 }], // every token exits after loop 0: propagation each step
  ];
  for (const [mode, exit] of runs) {
    it(`${mode}, exit ${exit.kind}: one hidden tensor is live between steps, however many rows ran`, async () => {
      const random = seededRandom(seed + mode.length + exit.kind.length);
      const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
      const vocab = model.config.vocabSize;
      const requests = Array.from({ length: 6 }, () => ({
        prompt: Array.from({ length: int(1, 9) }, () => int(0, vocab - 1)),
        maxTokens: int(2, 7),
        delay: int(0, 4),
      }));
      const engine = createEngine(model, {
        mode,
        maxSlots: 4,
        kvBytes: 1 << 20,
        pageSize: 4,
        chunkSize: 3,
        exit,
      });
      const withEngine = backend.numTensors(); // the model and the KV pools
      const live: number[] = [];
      const results = await Promise.all(
        requests.map(async (request) => {
          for (let tick = 0; tick < request.delay; tick++) await yieldToEventLoop();
          return collect(
            engine.generate(request.prompt, {
              maxTokens: request.maxTokens,
              stopTokens: [],
              // Called between the step that decided the token and the next one.
              onToken: () => live.push(backend.numTensors() - withEngine),
            }),
          );
        }),
      );
      expect(engine.stats().meanOccupancy, 'several rows ran in a step').toBeGreaterThan(1.5);
      expect(new Set(live), `seed ${seed}`).toEqual(new Set([1]));
      if (exit.kind === 'none') {
        const expected = await greedyReference(model, requests);
        expect(results.map((result) => result.tokens)).toEqual(expected);
      } else {
        // A prompt chunk of several tokens cannot exit; every decode token after it does, at loop 0.
        const decodeExits = results.flatMap((result) => result.stats.exitLoops.slice(1));
        expect(decodeExits.length).toBeGreaterThan(0);
        expect(decodeExits.every((loop) => loop === 0)).toBe(true);
      }
      expect(backend.numTensors()).toBe(withEngine); // the last step's rows are freed with the loop
      engine.dispose();
      expect(backend.numTensors()).toBe(withModel);
    });
  }
});
