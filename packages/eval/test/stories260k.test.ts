import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { type Decoder, importLlama2c, loadModel, loadTokenizer, type Tokenizer } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentsPerplexity, encodeDocuments, encodeStream, windowPerplexity } from '../src/index.js';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const assets = resolve(repoRoot, '../shared/assets');
const haveAssets = existsSync(join(assets, 'stories260K/stories260K.bin'));

/**
 * The independent reference: −Σ log p(target) over the given (input, first target) runs, each run alone
 * through a plain forward pass, log-softmax in float64 over the logits of the readout `readout` (the
 * full-depth one by default).
 */
async function referenceNll(
  model: Decoder,
  runs: { ids: number[]; firstTarget: number }[],
  readout?: number,
): Promise<{ nll: number; tokens: number }> {
  const { backend } = model;
  const vocab = model.config.vocabSize;
  let nll = 0;
  let tokens = 0;
  for (const { ids, firstTarget } of runs) {
    const input = backend.fromArray(Int32Array.from(ids), [1, ids.length], 'int32');
    const output = model.forward(input, { loopOutputs: readout !== undefined });
    const logits = await backend.read(readout === undefined ? output.logits : output.loops[readout]!.logits);
    backend.dispose([input, output.logits, ...output.loops.flatMap((loop) => [loop.hidden, loop.logits])]);
    for (let position = firstTarget; position < ids.length; position++) {
      const row = logits.subarray((position - 1) * vocab, position * vocab);
      let max = Number.NEGATIVE_INFINITY;
      for (const value of row) max = Math.max(max, value);
      let sum = 0;
      for (const value of row) sum += Math.exp(value - max);
      nll -= row[ids[position]!]! - max - Math.log(sum);
      tokens++;
    }
  }
  return { nll, tokens };
}

/** Hugging Face's sliding-window loop, transcribed: the runs it feeds and the labels it leaves unmasked. */
function hfWindows(ids: number[], window: number, stride: number): { ids: number[]; firstTarget: number }[] {
  const runs = [];
  let prevEnd = 0;
  for (let begin = 0; begin < ids.length; begin += stride) {
    const end = Math.min(begin + window, ids.length);
    const targetLength = end - prevEnd; // labels[:, :-trg_len] = -100; the model shifts labels by one
    runs.push({ ids: ids.slice(begin, end), firstTarget: Math.max(1, end - begin - targetLength) });
    prevEnd = end;
    if (end === ids.length) break;
  }
  return runs;
}

const title = haveAssets
  ? 'perplexity of stories260K (real trained weights)'
  : 'perplexity of stories260K (skipped: ../shared/assets is absent)';
describe.skipIf(!haveAssets)(title, () => {
  let workDir: string;
  let backend: Backend;
  let baseline: number;
  let model: Decoder;
  let relaxed: Decoder;
  let tokenizer: Tokenizer;
  let documents: number[][];

  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'rrt-eval-'));
    const modelDir = join(workDir, 'stories260K');
    await importLlama2c({
      checkpointPath: join(assets, 'stories260K/stories260K.bin'),
      tokenizerPath: join(assets, 'stories260K/tok512.bin'),
      outDir: modelDir,
    });
    await convertToRecursive(modelDir, join(workDir, 'relaxed'), { loops: 5, init: 'average', ranks: 16 });
    backend = (await createBackend('wasm')).backend;
    baseline = backend.numTensors();
    model = await loadModel(modelDir, backend);
    relaxed = await loadModel(join(workDir, 'relaxed'), backend);
    tokenizer = await loadTokenizer(modelDir);
    const text = await readFile(join(assets, 'text/tinystories_val.txt'), 'utf8');
    documents = encodeDocuments(tokenizer, text).slice(0, 16);
  });
  afterAll(async () => {
    model?.dispose();
    relaxed?.dispose();
    // Every forward pass and every scoring tensor freed.
    if (backend) expect(backend.numTensors()).toBe(baseline);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it('encodes WikiText’s literal <unk> as text, not as the unknown token', () => {
    const unk = tokenizer.tokenToId('<unk>')!;
    const [document] = encodeDocuments(tokenizer, ' = Robert <unk> = \n \n');
    expect(document![0]).toBe(tokenizer.bosId);
    expect(document).not.toContain(unk);
    expect(tokenizer.decode(document!)).toBe('= Robert <unk> =');
    expect(encodeStream(tokenizer, 'a <unk> b')).not.toContain(unk);
  });

  it('documents protocol equals the per-token log-likelihood sum of plain forward passes', async () => {
    const result = await documentsPerplexity(model, documents);
    const reference = await referenceNll(
      model,
      documents.map((ids) => ({ ids, firstTarget: 1 })),
    );
    expect(result.tokens).toBe(reference.tokens);
    expect(result.spans).toBe(documents.length);
    expect(result.truncatedTokens).toBe(0);
    const relative = Math.abs(result.negativeLogLikelihood - reference.nll) / reference.nll;
    // Observed on wasm: ≤ 2.7e-7 relative in every test here (float32 log-softmax and logits).
    expect(relative).toBeLessThan(1e-6);
  });

  it('documents are truncated at the context, and batching them changes nothing beyond rounding', async () => {
    const context = 40;
    const batched = await documentsPerplexity(model, documents, { context });
    const alone = await documentsPerplexity(model, documents, { context, batchTokens: 1 });
    const reference = await referenceNll(
      model,
      documents.map((ids) => ({ ids: ids.slice(0, context), firstTarget: 1 })),
    );
    expect(batched.tokens).toBe(reference.tokens);
    expect(batched.truncatedTokens).toBe(
      documents.reduce((sum, ids) => sum + Math.max(0, ids.length - context), 0),
    );
    expect(Math.abs(batched.negativeLogLikelihood - reference.nll) / reference.nll).toBeLessThan(1e-6);
    // Observed bit-identical on wasm; allowed to differ in rounding only.
    expect(
      Math.abs(alone.negativeLogLikelihood - batched.negativeLogLikelihood) / reference.nll,
    ).toBeLessThan(1e-9);
  });

  it('window protocol equals Hugging Face’s sliding-window loop, every token scored once', async () => {
    const text = documents.length > 0 ? await readFile(join(assets, 'text/tinystories_val.txt'), 'utf8') : '';
    const ids = encodeStream(tokenizer, text.slice(0, 6000));
    for (const [window, stride] of [
      [128, 48],
      [64, 63],
    ] as const) {
      const result = await windowPerplexity(model, ids, { window, stride });
      const reference = await referenceNll(model, hfWindows(ids, window, stride));
      expect(result.tokens).toBe(ids.length - 1);
      expect(reference.tokens).toBe(ids.length - 1);
      expect(Math.abs(result.negativeLogLikelihood - reference.nll) / reference.nll).toBeLessThan(1e-6);
    }
  });

  it('per-loop perplexity of a relaxed 1×5: each loop equals its own reference, the last the full depth', async () => {
    const subset = documents.slice(0, 6);
    const perLoop = await documentsPerplexity(relaxed, subset, { perLoop: true });
    const full = await documentsPerplexity(relaxed, subset);
    expect(perLoop.loops!.map((loop) => loop.depth)).toEqual([0, 1, 2, 3, 4]);
    expect(perLoop.loops![4]!.final).toBe(true);
    expect(perLoop.loops![4]!.negativeLogLikelihood).toBe(full.negativeLogLikelihood);
    expect(perLoop.perplexity).toBe(full.perplexity);
    for (const [index, loop] of perLoop.loops!.entries()) {
      const reference = await referenceNll(
        relaxed,
        subset.map((ids) => ({ ids, firstTarget: 1 })),
        index,
      );
      expect(Math.abs(loop.negativeLogLikelihood - reference.nll) / reference.nll).toBeLessThan(1e-6);
    }
  });
});
