/**
 * The engine against single-sequence greedy generation (`generateTokens` in `@rrt/core`) on a relaxed
 * recursive model (K = 2, L = 3, a LoRA per loop), wasm: with exit `none`, every mode yields exactly the
 * greedy tokens for every request, over random arrival traces, prompt lengths, chunk sizes, page sizes and
 * slot counts. Then cancellation, the bounded queue, and early exits (CALM propagation) without leaks.
 */
import { type Decoder, seededRandom, yieldToEventLoop } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import {
  type BatchingMode,
  CalibrationError,
  createEngine,
  exitRule,
  QueueFullError,
  RequestError,
} from '../src/index.js';
import { collect, greedy, useRelaxedModel } from './support.js';

describe('serving engine (wasm)', () => {
  let backend: Backend;
  let model: Decoder;
  let seed: number;
  let withModel: number;
  useRelaxedModel('rrt-engine-', (fixture) => {
    ({ backend, model, seed, withModel } = fixture);
  });

  for (const mode of ['static', 'sequence', 'depth'] as const satisfies readonly BatchingMode[]) {
    it(`${mode}: with exit none, every request of random arrival traces yields exactly the greedy tokens`, async () => {
      const vocab = model.config.vocabSize;
      for (let trial = 0; trial < 4; trial++) {
        const random = seededRandom(seed + 17 * trial + mode.length);
        const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
        const engine = createEngine(model, {
          mode,
          maxSlots: int(1, 4),
          kvBytes: 1 << 20,
          pageSize: int(2, 5),
          chunkSize: int(1, 8),
          attention: trial % 2 === 0 ? 'paged' : 'gather', // both attention paths equal greedy
        });
        const requests = Array.from({ length: int(3, 6) }, () => ({
          prompt: Array.from({ length: int(1, 14) }, () => int(0, vocab - 1)),
          maxTokens: int(1, 10),
          delay: int(0, 6),
        }));
        const expected = [];
        for (const request of requests) {
          const all = await greedy(model, request.prompt, request.maxTokens);
          // Some requests stop at a token greedy decoding reaches: the eos path.
          const stop = random() < 0.3 && all.length > 2 ? [all[2]!] : [];
          expected.push(stop.length > 0 ? all.slice(0, all.indexOf(stop[0]!)) : all);
          Object.assign(request, { stop });
        }
        const results = await Promise.all(
          requests.map(async (request) => {
            for (let tick = 0; tick < request.delay; tick++) await yieldToEventLoop();
            const stop = (request as unknown as { stop: number[] }).stop;
            return collect(
              engine.generate(request.prompt, { maxTokens: request.maxTokens, stopTokens: stop }),
            );
          }),
        );
        results.forEach((result, index) => {
          expect(result.tokens, `${mode}, trial ${trial}, request ${index}, seed ${seed}`).toEqual(
            expected[index],
          );
          expect(result.stats.exitLoops.every((loop) => loop === 2)).toBe(true);
        });
        expect(engine.cache.usedBytes()).toBe(0);
        engine.dispose();
        expect(backend.numTensors()).toBe(withModel);
      }
    });
  }

  it('an abort frees the slot and pages at once; a full queue refuses with a typed error', async () => {
    const expectedTensors = backend.numTensors();
    const engine = createEngine(model, {
      mode: 'depth',
      maxSlots: 1,
      kvBytes: 1 << 20,
      maxQueue: 1,
      pageSize: 4,
    });
    const controller = new AbortController();
    const first = engine.generate([1, 2, 3], { maxTokens: 50, stopTokens: [], signal: controller.signal });
    const firstToken = await first.next();
    expect(firstToken.done).toBe(false);
    expect(engine.cache.usedBytes()).toBeGreaterThan(0);
    const waiting = engine.generate([4], { maxTokens: 3, stopTokens: [] });
    const waitingDone = collect(waiting);
    await yieldToEventLoop();
    await expect(engine.generate([5], { maxTokens: 1 }).next()).rejects.toBeInstanceOf(QueueFullError);
    controller.abort();
    const rest = await collect(first);
    expect(rest.stats.reason).toBe('aborted');
    expect((await waitingDone).tokens).toEqual(await greedy(model, [4], 3));
    expect(engine.cache.usedBytes()).toBe(0);
    engine.dispose();
    expect(backend.numTensors()).toBe(expectedTensors);
  });

  it('confidence exits leave at earlier loops, propagate KV (CALM; none under recursive sharing) and leak nothing', async () => {
    const expectedTensors = backend.numTensors();
    for (const [mode, sharing] of [
      ['depth', 'per-loop'],
      ['sequence', 'per-loop'],
      ['depth', 'recursive'],
    ] as const) {
      const engine = createEngine(model, {
        mode,
        sharing,
        maxSlots: 3,
        kvBytes: 1 << 20,
        pageSize: 3,
        exit: { kind: 'confidence', threshold: 0, minLoops: 1 },
      });
      const results = await Promise.all(
        [[1, 2], [3], [4, 5, 6, 7]].map((prompt) =>
          collect(engine.generate(prompt, { maxTokens: 6, stopTokens: [] })),
        ),
      );
      // A chunk of several prompt tokens runs every loop (its other positions need every depth); single
      // tokens exit after loop 0 at threshold 0, the one-token prompt [3] included.
      expect(results.map(({ stats }) => stats.exitLoops)).toEqual([
        [2, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0],
      ]);
      expect(engine.cache.usedBytes()).toBe(0);
      engine.dispose();
    }
    expect(backend.numTensors()).toBe(expectedTensors);
  });

  it('confidence exits with checkLoops read out and exit only at those loops', async () => {
    const expectedTensors = backend.numTensors();
    const rule = exitRule({ kind: 'confidence', threshold: 0, checkLoops: [1] });
    expect([0, 1, 2].map((loop) => rule.readsOut(loop, 3))).toEqual([false, true, true]);
    for (const [checkLoops, minLoops, exitLoop] of [
      [[1], 1, 1],
      [[], 1, 2],
      [[0, 1], 2, 1], // minLoops still applies: loop 0 is not allowed
    ] as const) {
      const engine = createEngine(model, {
        mode: 'depth',
        maxSlots: 2,
        kvBytes: 1 << 20,
        exit: { kind: 'confidence', threshold: 0, minLoops, checkLoops },
      });
      const results = await Promise.all(
        [[1, 2], [3]].map((prompt) => collect(engine.generate(prompt, { maxTokens: 4, stopTokens: [] }))),
      );
      const message = `checkLoops [${checkLoops.join(', ')}], minLoops ${minLoops}`;
      // The two-token prompt's chunk runs every loop; each single token leaves at the first allowed loop.
      expect(results[0]!.stats.exitLoops, message).toEqual([2, exitLoop, exitLoop, exitLoop]);
      expect(results[1]!.stats.exitLoops, message).toEqual([exitLoop, exitLoop, exitLoop, exitLoop]);
      engine.dispose();
    }
    expect(() =>
      createEngine(model, {
        mode: 'depth',
        maxSlots: 2,
        kvBytes: 1 << 20,
        exit: { kind: 'confidence', threshold: 0.5, checkLoops: [0.5] },
      }),
    ).toThrow(RequestError);
    expect(backend.numTensors()).toBe(expectedTensors);
  });

  it('refused options allocate nothing (the KV pool is made after every option is checked)', () => {
    const expectedTensors = backend.numTensors();
    const options = { mode: 'depth', maxSlots: 2, kvBytes: 1 << 20 } as const;
    expect(() => createEngine(model, { ...options, maxStepTokens: 0 })).toThrow(RequestError);
    expect(() =>
      createEngine(model, { ...options, exit: { kind: 'replay', exitLoopShares: [], seed: 1 } }),
    ).toThrow(CalibrationError);
    expect(backend.numTensors()).toBe(expectedTensors);
  });
});
