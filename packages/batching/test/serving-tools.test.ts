/**
 * The benchmark pieces of `@rrt/batching`: seeded traces, percentiles and run summaries, the paper-style
 * simulation on hand-timed steps (worked out by hand below), step-time measurement without leaks, and the
 * `replay` exit policy through the engine (wasm, relaxed K = 2, L = 3).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { type Decoder, loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRelaxedModel } from '../../core/test/relaxed-model.js';
import {
  CalibrationError,
  changedTokenShare,
  createEngine,
  generateTrace,
  identicalRequestShare,
  measureStepTimes,
  percentile,
  type RequestResult,
  runTrace,
  type StepTimes,
  simulateTrace,
  readoutCost,
  stepTimeAt,
  summarizeRun,
  type TraceRequest,
} from '../src/index.js';

describe('generateTrace', () => {
  const options = {
    requests: 4000,
    seed: 7,
    ratePerSecond: 50,
    promptLength: [4, 32] as const,
    outputLength: [8, 48] as const,
    vocabSize: 512,
    bosId: 1,
  };
  it('is seeded, keeps lengths in range, and its gaps have the Poisson mean', () => {
    const trace = generateTrace(options);
    expect(generateTrace(options)).toEqual(trace);
    expect(generateTrace({ ...options, seed: 8 })).not.toEqual(trace);
    const inRange = trace.every(
      (request) =>
        request.prompt[0] === 1 &&
        request.prompt.length >= 4 &&
        request.prompt.length <= 32 &&
        request.maxTokens >= 8 &&
        request.maxTokens <= 48 &&
        request.prompt.slice(1).every((id) => id >= 3 && id < 512),
    );
    expect(inRange).toBe(true);
    // Mean gap 20 ms; the standard error of 4000 exponential gaps is 20/√4000 ≈ 0.32 ms.
    const meanGap = trace[trace.length - 1]!.arrivalMs / trace.length;
    expect(Math.abs(meanGap - 20)).toBeLessThan(1.5);
    const lengths = new Set(trace.map((r) => r.maxTokens));
    expect(lengths.has(8) && lengths.has(48)).toBe(true);
  });
  it('cuts prompts from text when given, and refuses bad options', () => {
    const text = Array.from({ length: 100 }, (_, i) => i + 3);
    for (const request of generateTrace({ ...options, requests: 50, text })) {
      const body = request.prompt.slice(1);
      for (let i = 1; i < body.length; i++) expect(body[i]).toBe(body[i - 1]! + 1);
    }
    expect(() => generateTrace({ ...options, requests: 0 })).toThrow(CalibrationError);
    expect(() => generateTrace({ ...options, promptLength: [5, 4] })).toThrow(/promptLength/);
    expect(() => generateTrace({ ...options, text: [1, 2] })).toThrow(/text/);
  });
});

describe('metrics', () => {
  it('percentiles interpolate between closest ranks (numpy default), leaving NaN out', () => {
    expect(percentile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(percentile([1, 2, 3, 4], 0.9)).toBeCloseTo(3.7, 12);
    expect(percentile([1, Number.NaN, 2], 1)).toBe(2);
    expect(percentile([Number.NaN], 0.5)).toBeNaN();
  });
  it('summaries and changed shares count tokens', () => {
    const requests: RequestResult[] = [
      { tokens: [5, 6, 7], exitLoops: [0, 1, 2], ttftMs: 10, tpotMs: 2 },
      { tokens: [8], exitLoops: [2], ttftMs: 30, tpotMs: Number.NaN },
    ];
    const summary = summarizeRun({ requests, seconds: 2 });
    expect(summary.outputTokens).toBe(4);
    expect(summary.tokensPerSecond).toBe(2);
    expect(summary.meanExitLoop).toBe(5 / 4);
    expect(summary.ttftMs.p50).toBe(20);
    expect(summary.tpotMs.p99).toBe(2);
    const other: RequestResult[] = [{ ...requests[0]!, tokens: [5, 9, 7] }, requests[1]!];
    expect(changedTokenShare(other, requests)).toBe(1 / 4);
    expect(identicalRequestShare(other, requests)).toBe(1 / 2);
  });
});

describe('simulateTrace', () => {
  // One pass costs 1 ms at any batch size, all three loops 3 ms; prefill tokens are free.
  const times: StepTimes = {
    loops: 3,
    batchSizes: [1, 8],
    passMs: [1, 1],
    passWithoutReadoutMs: [0.8, 0.8],
    fullMs: [3, 3],
    prefillTokenPassMs: 0,
  };
  const one: TraceRequest[] = [{ arrivalMs: 0, prompt: [1], maxTokens: 3 }];
  it('depth-wise: a token leaves after its exit loop; sequence-wise: every step runs every loop', () => {
    const depth = simulateTrace(one, { mode: 'depth', maxSlots: 1, times, exitLoops: [[0, 0, 1]] });
    // Tokens after 1, 2 and 4 passes.
    expect(depth.seconds).toBe(0.004);
    expect(depth.requests[0]!.ttftMs).toBe(1);
    expect(depth.requests[0]!.tpotMs).toBe(1.5);
    expect(depth.requests[0]!.exitLoops).toEqual([0, 0, 1]);
    const sequence = simulateTrace(one, { mode: 'sequence', maxSlots: 1, times, exitLoops: [[0, 0, 1]] });
    expect(sequence.seconds).toBe(0.009);
    const none = simulateTrace(one, { mode: 'depth', maxSlots: 1, times });
    expect(none.seconds).toBe(0.009);
  });
  it('a multi-token prompt chunk runs every loop; static waits for the whole batch', () => {
    const trace: TraceRequest[] = [
      { arrivalMs: 0, prompt: [1, 2], maxTokens: 2 },
      { arrivalMs: 0, prompt: [1], maxTokens: 1 },
      { arrivalMs: 0.5, prompt: [1], maxTokens: 1 },
    ];
    const exitLoops = [[0, 0], [0], [0]];
    // Depth, 2 slots: request 0's prompt chunk takes 3 passes (first token at 3), its second token 1 more
    // (4); request 1 leaves at 1, request 2 takes its slot at 1 and leaves at 2.
    const depth = simulateTrace(trace, { mode: 'depth', maxSlots: 2, times, exitLoops });
    expect(depth.requests.map((r) => r.ttftMs)).toEqual([3, 1, 1.5]);
    expect(depth.seconds).toBe(0.004);
    // Static, 2 slots: requests 0 and 1 run together (steps of 3 ms; 0 ends at 6); request 2 starts then.
    const fixed = simulateTrace(trace, { mode: 'static', maxSlots: 2, times, exitLoops });
    expect(fixed.requests.map((r) => r.ttftMs)).toEqual([3, 3, 8.5]);
    expect(fixed.seconds).toBe(0.009);
  });
  it('interpolates step times linearly between measured batch sizes', () => {
    const measured: StepTimes = { ...times, batchSizes: [1, 2, 4], passMs: [1, 2, 6] };
    expect(stepTimeAt(measured, 'pass', 3)).toBe(4);
    expect(stepTimeAt(measured, 'pass', 8)).toBe(14);
    // A readout costs what a pass costs beyond a bare one, in bare passes: 1 / 0.8 − 1.
    expect(readoutCost(times, 4)).toBeCloseTo(0.25, 15);
    expect(readoutCost({ ...times, passWithoutReadoutMs: [1.2, 1.2] }, 4)).toBe(0);
  });
});

describe('measured steps and replayed exits (wasm, relaxed K=2 L=3)', () => {
  let backend: Backend;
  let workDir: string;
  let model: Decoder;
  let baseline: number;
  beforeAll(async () => {
    backend = (await createBackend('wasm')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-serving-tools-'));
    await writeRelaxedModel(join(workDir, 'relaxed'), 1000 + Math.floor(Math.random() * 1e6));
    model = await loadModel(join(workDir, 'relaxed'), backend);
    baseline = backend.numTensors();
  });
  afterAll(async () => {
    model?.dispose();
    await rm(workDir, { recursive: true, force: true });
  });

  it('measureStepTimes times every batch size and leaves no tensor or page', async () => {
    const times = await measureStepTimes(model, { batchSizes: [1, 3], context: 6, rounds: 2, chunk: 4 });
    expect(times.loops).toBe(3);
    expect(times.passMs).toHaveLength(2);
    expect(times.passWithoutReadoutMs).toHaveLength(2);
    for (const ms of [...times.passMs, ...times.passWithoutReadoutMs, ...times.fullMs]) {
      expect(ms).toBeGreaterThan(0);
    }
    expect(backend.numTensors()).toBe(baseline);
  });

  it('replay draws each token’s exit loop from the shares, seeded, and runs through the engine', async () => {
    const trace = generateTrace({
      requests: 12,
      seed: 3,
      ratePerSecond: 1e6,
      promptLength: [1, 1],
      outputLength: [10, 10],
      vocabSize: model.config.vocabSize,
    });
    const run = async (shares: number[], seed: number) => {
      const engine = createEngine(model, {
        mode: 'depth',
        maxSlots: 4,
        kvBytes: 1 << 20,
        exit: { kind: 'replay', exitLoopShares: shares, seed },
      });
      try {
        return (await runTrace(engine, trace)).requests.flatMap((r) => r.exitLoops);
      } finally {
        engine.dispose();
      }
    };
    const loops = await run([0.5, 0.25, 0.25], 11);
    expect(loops).toHaveLength(120);
    expect(await run([0.5, 0.25, 0.25], 11)).toEqual(loops);
    const atZero = loops.filter((loop) => loop === 0).length;
    // 120 draws at p = 0.5: the standard deviation is √30 ≈ 5.5 tokens; 4 of them either side.
    expect(Math.abs(atZero - 60)).toBeLessThan(22);
    expect(new Set(await run([0, 1, 0], 5))).toEqual(new Set([1]));
    // Shares past the model's loops count at its last loop.
    expect(new Set(await run([0, 0, 0, 1], 5))).toEqual(new Set([2]));
    expect(backend.numTensors()).toBe(baseline);
    expect(() =>
      createEngine(model, {
        mode: 'depth',
        maxSlots: 1,
        kvBytes: 1 << 20,
        exit: { kind: 'replay', exitLoopShares: [0, 0], seed: 1 },
      }),
    ).toThrow(CalibrationError);
  });
});
