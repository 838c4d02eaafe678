/**
 * Two engine options on the relaxed K = 2, L = 3 test model (wasm, a fresh seed each run):
 * - `maxStepTokens`, one token budget per step across every request (vLLM-style chunked prefill): no step
 *   runs more tokens than the budget, decode tokens are planned before prompt chunks, and with exit `none`
 *   every request still yields exactly the single-sequence greedy tokens, in every mode.
 * - `exitKV: 'complete'` (FREE-style): a token that exits keeps running its deeper loops in the
 *   background, so every later token attends to exact keys and values: each emitted token equals the
 *   full recompute's readout at the loop it exited at.
 */
import { argmax, type Decoder, seededRandom, yieldToEventLoop } from '@rrt/core';
import { createPagedKVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { describe, expect, it } from 'vitest';
import {
  type BatchingMode,
  createEngine,
  exitKVRule,
  exitRule,
  modeRule,
  RequestError,
  Scheduler,
} from '../src/index.js';
import { collect, greedyReference, useRelaxedModel } from './support.js';

describe('token budget and FREE-style completion (wasm)', () => {
  let backend: Backend;
  let model: Decoder;
  let seed: number;
  let withModel: number;
  useRelaxedModel('rrt-budget-', (fixture) => {
    ({ backend, model, seed, withModel } = fixture);
  });

  for (const mode of ['static', 'sequence', 'depth'] as const satisfies readonly BatchingMode[]) {
    it(`${mode}: under a step token budget no step exceeds it, and exit none still yields the greedy tokens`, async () => {
      const vocab = model.config.vocabSize;
      for (let trial = 0; trial < 4; trial++) {
        const random = seededRandom(seed + 31 * trial + mode.length);
        const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
        const budget = int(1, 6);
        const engine = createEngine(model, {
          mode,
          maxSlots: int(1, 4),
          kvBytes: 1 << 20,
          pageSize: int(2, 5),
          chunkSize: 8,
          maxStepTokens: budget,
        });
        // One prompt longer than the budget, so that some step's chunk is cut to exactly the budget.
        const requests = Array.from({ length: int(3, 6) }, (_, index) => ({
          prompt: Array.from({ length: index === 0 ? int(budget + 1, 14) : int(1, 14) }, () =>
            int(0, vocab - 1),
          ),
          maxTokens: int(1, 10),
          delay: int(0, 6),
        }));
        const expected = await greedyReference(model, requests);
        const results = await Promise.all(
          requests.map(async (request) => {
            for (let tick = 0; tick < request.delay; tick++) await yieldToEventLoop();
            return collect(engine.generate(request.prompt, { maxTokens: request.maxTokens, stopTokens: [] }));
          }),
        );
        results.forEach((result, index) => {
          expect(result.tokens, `${mode}, trial ${trial}, request ${index}, seed ${seed}`).toEqual(
            expected[index],
          );
        });
        const stats = engine.stats();
        expect(stats.peakStepTokens, `${mode}, trial ${trial}, seed ${seed}`).toBe(budget);
        expect(engine.cache.usedBytes()).toBe(0);
        engine.dispose();
        expect(backend.numTensors()).toBe(withModel);
      }
    });
  }

  it('a step plans decode tokens first and fills what is left of the budget with a prompt chunk', () => {
    const cache = createPagedKVCache(backend, {
      depths: 6,
      blockSize: 2,
      kvHeads: 2,
      headDim: 6,
      pageSize: 4,
      bytes: 1 << 20,
    });
    const scheduler = new Scheduler(cache, modeRule('sequence'), exitRule({ kind: 'none' }), {
      maxSlots: 4,
      loops: 3,
      chunkSize: 8,
      maxStepTokens: 5,
    });
    const request = (id: number, prompt: number[]) => ({
      id,
      prompt,
      maxTokens: 4,
      stopTokens: new Set<number>(),
      onToken: () => {},
      onFinish: () => {},
    });
    const finalReadout = (plan: ReturnType<Scheduler['schedule']>) => ({
      readouts: new Map(plan.rows.map((row) => [row.id, [{ loop: 2, argmax: 7, maxProbability: 1 }]])),
    });
    scheduler.enqueue(request(0, [1, 2]));
    scheduler.enqueue(request(1, [3]));
    const first = scheduler.schedule();
    expect(first.rows.map((row) => [row.id, row.tokens.length])).toEqual([
      [0, 2],
      [1, 1],
    ]);
    scheduler.update(first, finalReadout(first));
    scheduler.enqueue(request(2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    // Two decode tokens come first (1 token each), the new prompt gets the 3 tokens left, not its 8.
    const second = scheduler.schedule();
    expect(second.rows.map((row) => [row.id, row.tokens.length, row.offset])).toEqual([
      [0, 1, 2],
      [1, 1, 1],
      [2, 3, 0],
    ]);
    scheduler.update(second, finalReadout(second));
    const third = scheduler.schedule();
    expect(third.rows.map((row) => [row.id, row.tokens.length, row.offset])).toEqual([
      [0, 1, 3],
      [1, 1, 2],
      [2, 3, 3],
    ]);
    expect(
      () =>
        new Scheduler(cache, modeRule('depth'), exitRule({ kind: 'none' }), {
          maxSlots: 1,
          loops: 3,
          chunkSize: 8,
          maxStepTokens: 0,
        }),
    ).toThrow(RequestError);
    cache.dispose();
    // Completion keeps no propagation, propagation no completion.
    expect(exitKVRule('complete')).toEqual({ propagates: false, completes: true });
    expect(exitKVRule('propagate')).toEqual({ propagates: true, completes: false });
  });

  it('complete: every token equals the full recompute at its exit loop (exact KV at every depth); no leaks', async () => {
    const vocab = model.config.vocabSize;
    const random = seededRandom(seed + 5);
    const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
    const prompts = Array.from({ length: 4 }, () =>
      Array.from({ length: int(1, 6) }, () => int(0, vocab - 1)),
    );
    let exitedEarly = 0;
    let checked = 0;
    for (const maxStepTokens of [undefined, 3]) {
      const engine = createEngine(model, {
        mode: 'depth',
        maxSlots: 3,
        kvBytes: 1 << 20,
        pageSize: 3,
        exit: { kind: 'agreement' },
        exitKV: 'complete',
        ...(maxStepTokens ? { maxStepTokens } : {}),
      });
      const results = await Promise.all(
        prompts.map((prompt) => collect(engine.generate(prompt, { maxTokens: 20, stopTokens: [] }))),
      );
      expect(engine.cache.usedBytes()).toBe(0);
      engine.dispose();
      for (const [index, { tokens, stats }] of results.entries()) {
        const prompt = prompts[index]!;
        const all = [...prompt, ...tokens];
        const ids = backend.fromArray(Int32Array.from(all), [1, all.length], 'int32');
        const { loops, logits } = model.forward(ids, { loopOutputs: true });
        const perLoop = await Promise.all(loops.map((loop) => backend.read(loop.logits)));
        backend.dispose([ids, logits, ...loops.flatMap((loop) => [loop.logits, loop.hidden])]);
        tokens.forEach((token, t) => {
          const loop = stats.exitLoops[t]!;
          const position = prompt.length - 1 + t;
          const row = (perLoop[loop] as Float32Array).subarray(position * vocab, (position + 1) * vocab);
          expect(token, `request ${index}, token ${t}, exit loop ${loop}, seed ${seed}`).toBe(argmax(row));
          if (loop < 2) exitedEarly++;
          checked++;
        });
      }
    }
    // Agreement exits after loop 1 at the earliest: enough tokens must leave early for the check to bite.
    expect(exitedEarly).toBeGreaterThan(checked / 10);
    expect(backend.numTensors()).toBe(withModel);
  });

  /**
   * One sequence alone through the step API, the way CALM propagation is specified: loops one at a
   * time, exit where two loops in a row agree, then each skipped depth's K/V from the exit hidden state,
   * one appendKV call per depth (the engine batches them per stored layer, across requests).
   */
  async function propagatingReference(prompt: readonly number[], maxTokens: number) {
    const { config } = model;
    const blockSize = config.recursion!.blockSize;
    const loops = config.recursion!.loops;
    const depths = blockSize * loops;
    const cache = createPagedKVCache(backend, {
      depths,
      blockSize,
      kvHeads: config.numKeyValueHeads,
      headDim: config.headDim,
      pageSize: 4,
      bytes: 1 << 20,
    });
    const sequence = cache.open();
    const read = async (hidden: import('@rrt/tensor').Tensor) => {
      const logits = model.readout(hidden);
      const values = (await backend.read(logits)) as Float32Array;
      backend.dispose(logits);
      return argmax(values);
    };
    const tokens: number[] = [];
    const exitLoops: number[] = [];
    // A prompt of several positions runs every loop (the engine lets only a single-token chunk exit).
    if (prompt.length > 1) {
      const hidden = backend.tidy(() => {
        const rows = model.rows([{ batch: 1, length: prompt.length, offset: 0 }]);
        let h = model.embed(backend.fromArray(Int32Array.from(prompt), [prompt.length], 'int32'));
        for (let depth = 0; depth < depths; depth++)
          h = model.layer(h, rows, [{ depth, cache: sequence.layer(depth) }]);
        rows.dispose();
        return backend.slice(h, [prompt.length - 1, 0], [1, -1]);
      });
      tokens.push(await read(hidden));
      exitLoops.push(loops - 1);
      backend.dispose(hidden);
    }
    for (let position = prompt.length > 1 ? prompt.length : 0; tokens.length < maxTokens; position++) {
      const input = tokens.length > 0 ? tokens.at(-1)! : prompt[0]!;
      const rows = model.rows([{ batch: 1, length: 1, offset: position }]);
      let hidden = backend.tidy(() => model.embed(backend.fromArray(Int32Array.from([input]), [1], 'int32')));
      const seen: number[] = [];
      let loop = 0;
      for (; loop < loops; loop++) {
        for (let layer = 0; layer < blockSize; layer++) {
          const depth = loop * blockSize + layer;
          const next = model.layer(hidden, rows, [{ depth, cache: sequence.layer(depth) }]);
          backend.dispose(hidden);
          hidden = next;
        }
        seen.push(await read(hidden));
        if (loop < loops - 1 && seen.length >= 2 && seen.at(-1) === seen.at(-2)) break;
      }
      for (let depth = (loop + 1) * blockSize; depth < depths; depth++) {
        model.appendKV(hidden, rows, [{ depth, cache: sequence.layer(depth) }]);
      }
      backend.dispose(hidden);
      rows.dispose();
      tokens.push(seen.at(-1)!);
      exitLoops.push(Math.min(loop, loops - 1));
    }
    sequence.free();
    cache.dispose();
    return { tokens, exitLoops };
  }

  it('propagate: batched propagation gives each request what one sequence alone gets by propagating depth by depth', async () => {
    const vocab = model.config.vocabSize;
    const random = seededRandom(seed + 9);
    const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
    const prompts = Array.from({ length: 8 }, () =>
      Array.from({ length: int(1, 6) }, () => int(0, vocab - 1)),
    );
    const engine = createEngine(model, {
      mode: 'depth',
      maxSlots: 4,
      kvBytes: 1 << 20,
      pageSize: 3,
      exit: { kind: 'agreement' },
    });
    const results = await Promise.all(
      prompts.map((prompt) => collect(engine.generate(prompt, { maxTokens: 30, stopTokens: [] }))),
    );
    engine.dispose();
    let early = 0;
    for (const [index, prompt] of prompts.entries()) {
      const expected = await propagatingReference(prompt, 30);
      expect(results[index]!.tokens, `request ${index}, seed ${seed}`).toEqual(expected.tokens);
      expect(results[index]!.stats.exitLoops).toEqual(expected.exitLoops);
      early += expected.exitLoops.filter((loop) => loop < 2).length;
    }
    expect(early).toBeGreaterThan(6);
    expect(backend.numTensors()).toBe(withModel);
  });

  it('complete under recursive sharing is refused with a typed error and allocates nothing', () => {
    const before = backend.numTensors();
    expect(() =>
      createEngine(model, {
        mode: 'depth',
        maxSlots: 1,
        kvBytes: 1 << 20,
        sharing: 'recursive',
        exitKV: 'complete',
      }),
    ).toThrow(RequestError);
    expect(backend.numTensors()).toBe(before);
  });
});
