/**
 * 1,000 seeded random request lifecycles through one engine over the tiny relaxed test model (K = 2,
 * L = 3, wasm): requests that finish (max tokens or a stop token), are cancelled mid-stream (AbortSignal,
 * or the consumer stops reading), are cancelled before they start (a signal aborted before the call, or
 * while queued), cannot fit the KV pool (a typed refusal whose cause is the cache's KVCapacityError), or
 * find the queue full (QueueFullError). Afterwards no page and no tensor is left, and the engine still
 * serves the same tokens it served at the start. Run per exit-KV method, with early exits and a step
 * token budget, so that propagation and background completion rows are cut short by every kind of ending.
 */
import { type Decoder, generateTokens, seededRandom, yieldToEventLoop } from '@rrt/core';
import { KVCapacityError } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import {
  createEngine,
  type Engine,
  type EngineOptions,
  QueueFullError,
  RequestError,
  type RequestStats,
} from '../src/index.js';
import { useRelaxedModel } from './support.js';

type Kind =
  | 'finish'
  | 'stop-token'
  | 'abort-mid'
  | 'consumer-stops'
  | 'abort-before'
  | 'abort-queued'
  | 'too-big';
const kinds: readonly Kind[] = [
  'finish',
  'stop-token',
  'abort-mid',
  'consumer-stops',
  'abort-before',
  'abort-queued',
  'too-big',
];
type Outcome = Kind | 'queue-full';

const lifecycles = 1000;
const pageSize = 4;
const pages = 12;
const maxQueue = 3;

describe('1,000 random request lifecycles through the engine (wasm)', () => {
  let backend: Backend;
  let model: Decoder;
  let seed: number;
  useRelaxedModel('rrt-lifecycles-', (fixture) => {
    ({ backend, model, seed } = fixture);
  });

  /** Reads a stream to its end; `stopAfter` tokens in, aborts (or, with no controller, stops reading). */
  async function consume(
    stream: AsyncGenerator<number, RequestStats>,
    stopAfter?: { tokens: number; controller?: AbortController },
  ): Promise<{ tokens: number[]; stats?: RequestStats }> {
    const tokens: number[] = [];
    while (true) {
      const next = await stream.next();
      if (next.done) return { tokens, stats: next.value };
      tokens.push(next.value);
      if (stopAfter && tokens.length === stopAfter.tokens) {
        if (!stopAfter.controller) {
          await stream.return(undefined as never);
          return { tokens };
        }
        stopAfter.controller.abort();
      }
    }
  }

  const configs: [string, Omit<EngineOptions, 'kvBytes'>][] = [
    [
      'depth, confidence exits, CALM propagation',
      { mode: 'depth', maxSlots: 4, exit: { kind: 'confidence', threshold: 0.2 }, maxStepTokens: 5 },
    ],
    [
      'depth, agreement exits, FREE completion',
      { mode: 'depth', maxSlots: 4, exit: { kind: 'agreement' }, exitKV: 'complete', maxStepTokens: 5 },
    ],
  ];

  for (const [name, config] of configs) {
    it(`${name}: every kind of ending happens, and no page or tensor is left`, async () => {
      const vocab = model.config.vocabSize;
      const random = seededRandom(seed + name.length);
      const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
      const withModel = backend.numTensors();
      const probe = createEngine(model, { ...config, kvBytes: 1 << 20, pageSize });
      const pageBytes = probe.cache.pageBytes;
      probe.dispose();
      const engine: Engine = createEngine(model, {
        ...config,
        kvBytes: pages * pageBytes,
        pageSize,
        maxQueue,
      });
      const withEngine = backend.numTensors();
      const probePrompt = [1, 5, 9];
      const first = await consume(engine.generate(probePrompt, { maxTokens: 12, stopTokens: [] }));

      const counts = new Map<Outcome, number>();
      let done = 0;
      while (done < lifecycles) {
        const wave = Math.min(lifecycles - done, int(1, 6));
        done += wave;
        const runs = Array.from({ length: wave }, async () => {
          const kind = kinds[int(0, kinds.length - 1)]!;
          // Fits: at most 8 + 8 − 1 positions of the pool's 48. Too big: more than the whole pool.
          const prompt = Array.from({ length: kind === 'too-big' ? int(30, 40) : int(1, 8) }, () =>
            int(0, vocab - 1),
          );
          const maxTokens = kind === 'too-big' ? int(20, 23) : kind === 'abort-mid' ? int(4, 8) : int(1, 8);
          const controller = new AbortController();
          if (kind === 'abort-before') controller.abort();
          for (let tick = int(0, 3); tick > 0; tick--) await yieldToEventLoop();
          const stopTokens = kind === 'stop-token' ? [int(0, vocab - 1), int(0, vocab - 1)] : [];
          const stream = engine.generate(prompt, { maxTokens, stopTokens, signal: controller.signal });
          if (kind === 'abort-queued') queueMicrotask(() => controller.abort());
          try {
            const stopAfter =
              kind === 'abort-mid'
                ? { tokens: int(1, 2), controller }
                : kind === 'consumer-stops'
                  ? { tokens: int(1, 2) }
                  : undefined;
            const { tokens, stats } = await consume(stream, stopAfter);
            expect(kind, `seed ${seed}`).not.toBe('too-big');
            expect(tokens.length).toBeLessThanOrEqual(maxTokens);
            if (stats) {
              expect(stats.tokens).toBe(tokens.length);
              expect(stats.exitLoops.every((loop) => loop >= 0 && loop <= 2)).toBe(true);
              if (kind === 'abort-before') expect([stats.reason, tokens.length]).toEqual(['aborted', 0]);
              if (kind === 'finish') expect(stats.reason).toBe('max-tokens');
              if (kind === 'stop-token') {
                expect(['eos', 'max-tokens']).toContain(stats.reason);
                expect(tokens.some((token) => stopTokens.includes(token))).toBe(false);
              }
              if (kind === 'abort-mid' && stats.reason === 'aborted') {
                // One step may still emit the token in flight after the abort.
                expect(tokens.length).toBeLessThanOrEqual(stopAfter!.tokens + 1);
              }
            }
            counts.set(kind, (counts.get(kind) ?? 0) + 1);
          } catch (error) {
            if (error instanceof QueueFullError) {
              counts.set('queue-full', (counts.get('queue-full') ?? 0) + 1);
              return;
            }
            expect(kind, `seed ${seed}: ${String(error)}`).toBe('too-big');
            expect(error).toBeInstanceOf(RequestError);
            expect((error as Error).cause).toBeInstanceOf(KVCapacityError);
            counts.set(kind, (counts.get(kind) ?? 0) + 1);
          }
        });
        await Promise.all(runs);
      }

      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      expect(total).toBe(lifecycles);
      for (const outcome of [...kinds, 'queue-full'] as const) {
        expect(counts.get(outcome) ?? 0, `${outcome} (seed ${seed})`).toBeGreaterThan(20);
      }
      // A consumer that stopped reading cancels at the engine's next step: let the last one run.
      for (let turn = 0; turn < 100 && engine.cache.openSequences > 0; turn++) await yieldToEventLoop();
      expect(engine.cache.usedBytes(), `seed ${seed}`).toBe(0);
      expect(engine.cache.freePageCount).toBe(engine.cache.pages);
      expect(engine.cache.openSequences).toBe(0);
      expect(backend.numTensors(), `seed ${seed}`).toBe(withEngine);
      // Still serving: the probe request alone again gives what it gave on the fresh engine.
      const again = await consume(engine.generate(probePrompt, { maxTokens: 12, stopTokens: [] }));
      expect(again.tokens).toEqual(first.tokens);
      expect(again.stats!.exitLoops).toEqual(first.stats!.exitLoops);
      expect(backend.numTensors()).toBe(withEngine);
      engine.dispose();
      expect(backend.numTensors()).toBe(withModel);
    });
  }

  it('with exit none the probe is the greedy one (so "still serving" compares real generations)', async () => {
    const engine = createEngine(model, { mode: 'depth', maxSlots: 2, kvBytes: 1 << 20, pageSize });
    const got = await consume(engine.generate([1, 5, 9], { maxTokens: 12, stopTokens: [] }));
    engine.dispose();
    const expected: number[] = [];
    for await (const token of generateTokens(model, [1, 5, 9], { maxTokens: 12, stopTokens: [] })) {
      expected.push(token);
    }
    expect(got.tokens).toEqual(expected);
  });
});
