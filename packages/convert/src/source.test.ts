// openSource when a source file vanishes right after the checkpoint was opened: `stat` is made to fail
// from the moment `openCheckpoint` returns, and the checkpoint's `close` is counted.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SourceChangedError } from './errors.js';
import { openSource } from './source.js';
import { tempDir } from './test-support.js';
import { writeSyntheticCheckpoint } from './testing/index.js';

const injected = vi.hoisted(() => ({ failStatAfterOpen: false, failStat: false, opened: 0, closed: 0 }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...actual,
    stat: (async (...args: Parameters<typeof actual.stat>) => {
      if (injected.failStat) {
        throw Object.assign(new Error(`injected: ENOENT, stat '${args[0]}'`), { code: 'ENOENT' });
      }
      return actual.stat(...args);
    }) as typeof actual.stat,
  };
});

vi.mock('@rrt/core', async (importOriginal) => {
  const actual = await importOriginal<typeof import('@rrt/core')>();
  return {
    ...actual,
    openCheckpoint: async (...args: Parameters<typeof actual.openCheckpoint>) => {
      const checkpoint = await actual.openCheckpoint(...args);
      injected.opened += 1;
      injected.failStat = injected.failStatAfterOpen;
      const close = checkpoint.close.bind(checkpoint);
      checkpoint.close = async () => {
        injected.closed += 1;
        await close();
      };
      return checkpoint;
    },
  };
});

let workDir: string;
let sourceDir: string;
beforeAll(async () => {
  workDir = await tempDir('source');
  sourceDir = join(workDir, 'source');
  await writeSyntheticCheckpoint(sourceDir, {
    modelType: 'llama',
    vocabSize: 16,
    hiddenSize: 8,
    intermediateSize: 12,
    numHiddenLayers: 2,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    tieWordEmbeddings: true,
    dtype: 'F32',
    seed: 3,
  });
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('openSource', () => {
  it('opens and closes the checkpoint once when nothing fails', async () => {
    const source = await openSource(sourceDir, 'vanilla');
    await source.assertUnchanged();
    await source.close();
    expect(injected).toMatchObject({ opened: 1, closed: 1 });
  });

  it('closes the checkpoint when a file vanishes before its identity is recorded', async () => {
    injected.opened = 0;
    injected.closed = 0;
    // From the moment the checkpoint is open, every stat fails, as if the files had been deleted.
    injected.failStatAfterOpen = true;
    try {
      await expect(openSource(sourceDir, 'vanilla')).rejects.toThrow(SourceChangedError);
    } finally {
      injected.failStatAfterOpen = false;
      injected.failStat = false;
    }
    expect(injected).toMatchObject({ opened: 1, closed: 1 });
  });
});
