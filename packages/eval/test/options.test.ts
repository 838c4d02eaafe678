import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { type Decoder, loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  documentsPerplexity,
  EvalOptionError,
  type PerplexityProgress,
  splitDocuments,
  windowPerplexity,
} from '../src/index.js';

describe('splitDocuments', () => {
  it('splits at lines holding only whitespace and trims each document', () => {
    expect(splitDocuments(' = Title = \n \n First line\nsecond line\r\n\t\r\n\n\nLast.\n')).toEqual([
      '= Title =',
      'First line\nsecond line',
      'Last.',
    ]);
    expect(splitDocuments('\n \n')).toEqual([]);
  });
});

describe('perplexity options, on a tiny random model', () => {
  let workDir: string;
  let backend: Backend;
  let baseline: number;
  let model: Decoder;
  const ids = Array.from({ length: 50 }, (_, i) => (i * 7 + 3) % 32);

  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'rrt-eval-options-'));
    await writeSyntheticCheckpoint(workDir, {
      modelType: 'llama',
      vocabSize: 32,
      hiddenSize: 16,
      intermediateSize: 24,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      tieWordEmbeddings: true,
      dtype: 'F32',
      seed: 5,
      extraConfig: { max_position_embeddings: 32 },
    });
    backend = (await createBackend('cpu')).backend;
    baseline = backend.numTensors();
    model = await loadModel(workDir, backend);
  });
  afterAll(async () => {
    model?.dispose();
    if (backend) expect(backend.numTensors()).toBe(baseline);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it('rejects a window past the context and a stride that would leave tokens unscored', async () => {
    await expect(windowPerplexity(model, ids, { window: 33 })).rejects.toThrow(EvalOptionError);
    await expect(windowPerplexity(model, ids, { window: 16, stride: 16 })).rejects.toThrow(/stride/);
    await expect(windowPerplexity(model, ids, { window: 16, stride: 0 })).rejects.toThrow(EvalOptionError);
    await expect(documentsPerplexity(model, [[1]])).rejects.toThrow(/no token to score/);
    await expect(documentsPerplexity(model, [ids], { maxTokens: 0 })).rejects.toThrow(/maxTokens/);
  });

  it('window: scores every token after the first once; maxTokens cuts the stream', async () => {
    const progress: PerplexityProgress[] = [];
    const all = await windowPerplexity(model, ids, { stride: 10, onProgress: (p) => progress.push(p) });
    expect(all.tokens).toBe(49);
    expect(all.spans).toBe(3); // windows at 0, 10 and 20, which reaches the end
    expect(all.context).toBe(32);
    expect(all.stride).toBe(10);
    expect(progress[progress.length - 1]).toEqual({
      scoredTokens: 49,
      totalTokens: 49,
      spans: 3,
      totalSpans: 3,
    });
    const cut = await windowPerplexity(model, ids, { stride: 10, maxTokens: 20 });
    expect(cut.tokens).toBe(20);
  });

  it('documents: truncated at the context, cut at maxTokens in text order', async () => {
    const documents = [ids.slice(0, 40), ids.slice(0, 5), ids.slice(10, 30)];
    const all = await documentsPerplexity(model, documents);
    expect(all.tokens).toBe(31 + 4 + 19);
    expect(all.truncatedTokens).toBe(8);
    const cut = await documentsPerplexity(model, documents, { maxTokens: 33 });
    expect(cut.tokens).toBe(33);
    expect(cut.spans).toBe(2);
    // The first 31 targets and 2 of the second document's: the same as scoring those prefixes.
    const prefixes = await documentsPerplexity(model, [ids.slice(0, 32), ids.slice(0, 3)]);
    expect(Math.abs(cut.negativeLogLikelihood - prefixes.negativeLogLikelihood)).toBeLessThan(1e-9);
  });
});
