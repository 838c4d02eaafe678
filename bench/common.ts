/**
 * What the benchmarks share: the clock they measure with, where the real model is, its relaxed 1×5
 * conversion, the event-loop-turn request trace and the timed depth-wise decode step.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Engine } from '@rrt/batching';
import { convertToRecursive } from '@rrt/convert';
import { type Decoder, importLlama2c, seededRandom, yieldToEventLoop } from '@rrt/core';
import { createPagedKVCache, type PagedAttentionPath } from '@rrt/kv-cache';

/**
 * Milliseconds on `clock`: `cpu` is this process's CPU time (keeps other processes' turns out of a
 * measurement on a shared machine), `wall` elapsed time.
 */
export function clockMs(clock: string | undefined): () => number {
  if (clock === 'wall') return () => performance.now();
  return () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
}

/** `../shared/assets/stories260K` beside the checkout; exits quietly (a skip, not a failure) when absent. */
export function stories260KAssetsOrExit(bench: string): string {
  const assets = resolve(import.meta.dirname, '../../shared/assets/stories260K');
  if (!existsSync(join(assets, 'stories260K.bin'))) {
    console.log(`bench/${bench}: skipped, ../shared/assets/stories260K is absent`);
    process.exit(0);
  }
  return assets;
}

/** Imports stories260K from `assets` (its folder in ../shared) into `workDir`; returns the model directory. */
export async function importStories260K(assets: string, workDir: string): Promise<string> {
  const modelDir = join(workDir, 'stories260K');
  await importLlama2c({
    checkpointPath: join(assets, 'stories260K.bin'),
    tokenizerPath: join(assets, 'tok512.bin'),
    outDir: modelDir,
  });
  return modelDir;
}

/**
 * stories260K's relaxed 1×5 conversion (Average init, LoRA rank 8 on every module, not uptrained), written
 * into `workDir` from the imported model; returns its directory.
 */
export async function relaxedStories260K(assets: string, workDir: string): Promise<string> {
  const relaxedDir = join(workDir, 'relaxed-1x5');
  await convertToRecursive(await importStories260K(assets, workDir), relaxedDir, {
    loops: 5,
    init: 'average',
    ranks: 8,
  });
  return relaxedDir;
}

/** One request of {@link turnTrace}. */
export interface TurnTraceRequest {
  prompt: number[];
  maxTokens: number;
  /** Event-loop turns after the previous arrival. */
  gap: number;
}

/**
 * A seeded trace whose arrivals are counted in event-loop turns (Poisson, mean 2 turns), so that it does
 * not depend on the clock: prompts of 4–32 tokens (BOS first), outputs of 8–48.
 */
export function turnTrace(count: number, seed: number, vocab: number): TurnTraceRequest[] {
  const random = seededRandom(seed);
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  return Array.from({ length: count }, () => ({
    prompt: [1, ...Array.from({ length: int(3, 31) }, () => int(3, vocab - 1))],
    maxTokens: int(8, 48),
    gap: Math.round(-2 * Math.log(1 - random())),
  }));
}

/**
 * Submits {@link turnTrace}'s requests to `engine`, each `gap` event-loop turns after the previous, every
 * one to its `maxTokens` (no stop tokens); resolves when all have ended, with each request's tokens and
 * the loop each exited at, in trace order.
 */
export async function replayTurnTrace(
  engine: Engine,
  trace: readonly TurnTraceRequest[],
): Promise<{ tokens: number[]; exitLoops: number[] }[]> {
  const runs: Promise<{ tokens: number[]; exitLoops: number[] }>[] = [];
  for (const request of trace) {
    for (let turn = 0; turn < request.gap; turn++) await yieldToEventLoop();
    runs.push(
      (async () => {
        const stream = engine.generate(request.prompt, { maxTokens: request.maxTokens, stopTokens: [] });
        const tokens: number[] = [];
        while (true) {
          const next = await stream.next();
          if (next.done) return { tokens, exitLoops: next.value.exitLoops };
          tokens.push(next.value);
        }
      })(),
    );
  }
  return Promise.all(runs);
}

/** Options of {@link depthwiseStepTimes}. */
export interface DepthwiseStepOptions {
  /** Sequences, one decode row each per step. */
  sequences: number;
  /** Positions each sequence holds at every depth before the first step. */
  context: number;
  /** Steps timed. */
  steps: number;
  /** The loop row `i` runs at. */
  loopOf: (i: number, step: number) => number;
  /** Seed of the random token ids. */
  seed: number;
  clock: () => number;
  /** The paged cache's attention path (default its own, `paged`). */
  attention?: PagedAttentionPath;
}

/**
 * Milliseconds of each of `steps` depth-wise decode steps: every sequence prefilled with `context` random
 * tokens at every depth of a paged cache, then per step one decode row per sequence, row `i` at
 * `loopOf(i, step)` (K `Decoder.layer` calls over all rows, read back).
 */
export async function depthwiseStepTimes(model: Decoder, options: DepthwiseStepOptions): Promise<number[]> {
  const { sequences, context, steps, loopOf, clock } = options;
  const { backend, config } = model;
  const depths = model.schedule.length;
  const blockSize = config.recursion?.blockSize ?? depths;
  const loops = depths / blockSize;
  const pageSize = 16;
  const cache = createPagedKVCache(backend, {
    depths,
    blockSize,
    kvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    pageSize,
    bytes:
      sequences *
      Math.ceil((context + steps + 2) / pageSize) *
      pageSize *
      depths *
      2 *
      4 *
      config.numKeyValueHeads *
      config.headDim,
    ...(options.attention ? { attention: options.attention } : {}),
  });
  const open = Array.from({ length: sequences }, () => cache.open());
  const random = seededRandom(options.seed);
  const ids = (count: number) =>
    backend.fromArray(
      Int32Array.from({ length: count }, () => 1 + Math.floor(random() * (config.vocabSize - 1))),
      [count],
      'int32',
    );
  backend.tidy(() => {
    const rows = model.rows(open.map(() => ({ batch: 1, length: context, offset: 0 })));
    let hidden = model.embed(ids(sequences * context));
    for (const { depth } of model.schedule) {
      hidden = model.layer(
        hidden,
        rows,
        open.map((sequence) => ({ depth, cache: sequence.layer(depth) })),
      );
    }
  });
  const times: number[] = [];
  const filled = open.map(() => new Array<number>(loops).fill(context));
  for (let step = 0; step < steps; step++) {
    const loopOfRow = open.map((_, i) => loopOf(i, step));
    const started = clock();
    const out = backend.tidy(() => {
      const rows = model.rows(
        open.map((_, i) => ({ batch: 1, length: 1, offset: filled[i]![loopOfRow[i]!]! })),
      );
      let hidden = model.embed(ids(sequences));
      for (let layer = 0; layer < blockSize; layer++) {
        hidden = model.layer(
          hidden,
          rows,
          open.map((sequence, i) => {
            const depth = loopOfRow[i]! * blockSize + layer;
            return { depth, cache: sequence.layer(depth) };
          }),
        );
      }
      return hidden;
    });
    await backend.read(out);
    backend.dispose(out);
    times.push(clock() - started);
    open.forEach((_, i) => {
      filled[i]![loopOfRow[i]!]! += 1;
    });
  }
  for (const sequence of open) sequence.free();
  cache.dispose();
  return times;
}
