import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { ResumeError, STATE_FILE, type TrainOptions, train } from '../src/index.js';
import { resumableRun, tinyModelsFixture } from './support.js';

const fixture = tinyModelsFixture('train');

describe.each(['cpu', 'wasm'] as const)('%s', (kind) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = (await createBackend(kind)).backend;
  });

  const options = (outDir: string): TrainOptions => resumableRun(fixture.dirs, outDir);

  it('a run stopped after step 3 and resumed gives the losses and weights of an uninterrupted run, bit for bit', async () => {
    const baseline = backend.numTensors();
    const tensorsPerStep: number[] = [];
    const whole = await train(backend, {
      ...options(join(fixture.workDir, `${kind}-whole`)),
      onProgress: () => tensorsPerStep.push(backend.numTensors()),
    });
    expect(whole.stepsDone).toBe(6);
    // No tensor left behind: the same number alive after every step, and none after the run.
    expect(new Set(tensorsPerStep).size).toBe(1);
    expect(backend.numTensors()).toBe(baseline);

    const outDir = join(fixture.workDir, `${kind}-killed`);
    const stop = new AbortController();
    const killed = await train(backend, {
      ...options(outDir),
      signal: stop.signal,
      onProgress: (progress) => {
        if (progress.step === 3) stop.abort();
      },
    });
    expect(killed.interrupted).toBe(true);
    expect(killed.stepsDone).toBe(3);
    // The state on disk is step 2's (checkpoints every 2 steps); step 3 was lost with the "kill".
    const resumed = await train(backend, { ...options(outDir), resume: true });
    expect(resumed.resumedFrom).toBe(2);
    expect(resumed.losses).toEqual(whole.losses);
    expect(resumed.heldOutLosses).toEqual(whole.heldOutLosses);
    const [a, b] = await Promise.all([
      readFile(join(fixture.workDir, `${kind}-whole`, 'model.safetensors')),
      readFile(join(outDir, 'model.safetensors')),
    ]);
    expect(Buffer.compare(a, b)).toBe(0);
    expect(backend.numTensors()).toBe(baseline);

    // The written model loads as an ordinary model directory.
    const model = await loadModel(outDir, backend);
    model.dispose();
  });

  it('refuses to resume a state written with other settings', async () => {
    const outDir = join(fixture.workDir, `${kind}-whole`);
    await expect(train(backend, { ...options(outDir), learningRate: 1e-3, resume: true })).rejects.toThrow(
      ResumeError,
    );
    await expect(readFile(join(outDir, STATE_FILE))).resolves.toBeDefined();
  });
});
