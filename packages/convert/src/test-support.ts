/**
 * Helpers shared by this package's tests (not part of the public API): small random model specs,
 * logits of a model directory, and tensor reads.
 *
 * @module
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, openCheckpoint, toFloat32 } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { expect } from 'vitest';
import { convertToRecursive } from './convert.js';
import type { SyntheticModelSpec } from './testing/index.js';

/** A 6-layer GQA Llama with an untied head, float32. */
export const smallLlama: SyntheticModelSpec = {
  modelType: 'llama',
  vocabSize: 61,
  hiddenSize: 48,
  intermediateSize: 80,
  numHiddenLayers: 6,
  numAttentionHeads: 6,
  numKeyValueHeads: 2,
  tieWordEmbeddings: false,
  dtype: 'F32',
  seed: 11,
  layerSpecificity: 0.5,
};

/** A 6-layer multi-query Gemma (head_dim ≠ hidden / heads, tied head, `1 + w` norms), float32. */
export const smallGemma: SyntheticModelSpec = {
  modelType: 'gemma',
  vocabSize: 67,
  hiddenSize: 32,
  intermediateSize: 64,
  numHiddenLayers: 6,
  numAttentionHeads: 4,
  numKeyValueHeads: 1,
  headDim: 12,
  tieWordEmbeddings: true,
  dtype: 'F32',
  seed: 12,
  layerSpecificity: 0.5,
};

/** A 6-layer Qwen3 (per-head q/k norms, head_dim 12 ≠ 32 / 4, GQA, untied head), float32. */
export const smallQwen3: SyntheticModelSpec = {
  modelType: 'qwen3',
  vocabSize: 59,
  hiddenSize: 32,
  intermediateSize: 56,
  numHiddenLayers: 6,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 12,
  tieWordEmbeddings: false,
  dtype: 'F32',
  seed: 13,
  layerSpecificity: 0.5,
};

/** A fresh temporary directory. */
export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `rrt-convert-${prefix}-`));
}

/** Token ids for a forward pass, reproducible from a seed. */
export function tokenIds(seed: number, count: number, vocabSize: number): number[] {
  return Array.from({ length: count }, (_, i) => (seed * 7919 + i * 104729 + i * i * 13) % vocabSize);
}

/**
 * Loads a model directory, runs `tokens` through it and returns the logits `[T·vocab]`; frees everything.
 * Asserts that the checkpoint holds no tensor its config does not use (a bias the config does not
 * declare, say), which would mean the directory describes its model wrongly.
 */
export async function logitsOf(
  dir: string,
  backend: Backend,
  tokens: readonly number[],
): Promise<Float32Array> {
  const unused: string[] = [];
  const model = await loadModel(dir, backend, { onUnusedTensor: (name) => unused.push(name) });
  expect(unused, `tensors of ${dir} that its config does not use`).toEqual([]);
  const ids = backend.fromArray(Int32Array.from(tokens), [1, tokens.length], 'int32');
  const { logits } = model.forward(ids);
  const values = (await backend.read(logits)) as Float32Array;
  backend.dispose([ids, logits]);
  model.dispose();
  return values;
}

/** max |a − b|. */
export function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Every tensor of a checkpoint directory as float32 values. */
export async function readAllTensors(
  dir: string,
): Promise<Map<string, { shape: readonly number[]; values: Float32Array }>> {
  const checkpoint = await openCheckpoint(dir);
  try {
    const tensors = new Map<string, { shape: readonly number[]; values: Float32Array }>();
    for (const [name, info] of checkpoint.entries) {
      tensors.set(name, { shape: info.shape, values: toFloat32(await checkpoint.readTensor(name)) });
    }
    return tensors;
  } finally {
    await checkpoint.close();
  }
}

/**
 * Converts `sourceDir` with K = N, L = 1 into `out` and checks the result is the original: the same
 * parameter counts, the same tensors value for value, and the same logits on `tokens`.
 */
export async function expectIdentityConversion(
  sourceDir: string,
  out: string,
  numHiddenLayers: number,
  backend: Backend,
  tokens: number[],
  originalLogits: ArrayLike<number>,
): Promise<void> {
  const result = await convertToRecursive(sourceDir, out, { blockSize: numHiddenLayers, loops: 1, ranks: 8 });
  expect(result.parameters.recursive).toBe(result.parameters.original);
  expect(result.parameters.relaxed).toBe(result.parameters.original);
  const source = await readAllTensors(sourceDir);
  const converted = await readAllTensors(out);
  expect([...converted.keys()].sort()).toEqual([...source.keys()].sort());
  for (const [name, tensor] of source) expect(converted.get(name)!.values, name).toEqual(tensor.values);
  expect(maxAbsDifference(await logitsOf(out, backend, tokens), originalLogits)).toBe(0);
}
