import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { type Decoder, generateTokens, loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, expect } from 'vitest';
import { writeRelaxedModel } from '../../core/test/relaxed-model.js';
import type { RequestStats } from '../src/index.js';

/** What {@link useRelaxedModel} hands a test file once its `beforeAll` has run. */
export interface RelaxedModelFixture {
  backend: Backend;
  model: Decoder;
  /** The seed the model's weights were drawn with (fresh each run; name it in assertion messages). */
  seed: number;
  /** Live tensors before the model was loaded: the count `afterAll` requires once it is disposed. */
  baseline: number;
  /** Live tensors with the model loaded: the count each test must return to. */
  withModel: number;
}

/**
 * The engine tests' model: the relaxed K = 2, L = 3 test model written with a fresh seed into a temporary
 * directory and loaded on wasm in `beforeAll` (then handed to `ready`); disposed in `afterAll`, which
 * requires the live-tensor count back at its baseline and removes the directory.
 */
export function useRelaxedModel(prefix: string, ready: (fixture: RelaxedModelFixture) => void): void {
  let workDir: string;
  let fixture: RelaxedModelFixture;
  beforeAll(async () => {
    const { backend } = await createBackend('wasm');
    workDir = await mkdtemp(join(tmpdir(), prefix));
    const seed = 1000 + Math.floor(Math.random() * 1e6);
    await writeRelaxedModel(join(workDir, 'relaxed'), seed);
    const baseline = backend.numTensors();
    const model = await loadModel(join(workDir, 'relaxed'), backend);
    fixture = { backend, model, seed, baseline, withModel: backend.numTensors() };
    ready(fixture);
  });
  afterAll(async () => {
    fixture.model.dispose();
    expect(fixture.backend.numTensors()).toBe(fixture.baseline);
    await rm(workDir, { recursive: true, force: true });
  });
}

/** Single-sequence greedy tokens of one prompt (`generateTokens`): what the engine must yield for it. */
export async function greedy(
  model: Decoder,
  prompt: readonly number[],
  maxTokens: number,
  stopTokens: readonly number[] = [],
): Promise<number[]> {
  const tokens: number[] = [];
  for await (const token of generateTokens(model, prompt, { maxTokens, stopTokens })) tokens.push(token);
  return tokens;
}

/** {@link greedy} for each request (no stop tokens). */
export async function greedyReference(
  model: Decoder,
  requests: readonly { prompt: readonly number[]; maxTokens: number }[],
): Promise<number[][]> {
  const expected: number[][] = [];
  for (const { prompt, maxTokens } of requests) expected.push(await greedy(model, prompt, maxTokens));
  return expected;
}

/** Reads an engine stream to its end: the tokens it yielded and the request's final stats. */
export async function collect(
  stream: AsyncGenerator<number, RequestStats>,
): Promise<{ tokens: number[]; stats: RequestStats }> {
  const tokens: number[] = [];
  while (true) {
    const next = await stream.next();
    if (next.done) return { tokens, stats: next.value };
    tokens.push(next.value);
  }
}
