/**
 * GPT-NeoX / Pythia through the conversion path: a random checkpoint with the real HF tensor names
 * (fused, per-head interleaved QKV; LayerNorms with biases; biases on every projection), converted at
 * full rank with shared norms, must reproduce the original's logits; its unrolled export must be a plain
 * `gpt_neox` checkpoint again (NeoX names, QKV fused back) that loads and matches.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { writeSafetensors } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToRecursive } from './convert.js';
import { exportUnrolled } from './export.js';
import { logitsOf, maxAbsDifference, readAllTensors, tempDir, tokenIds } from './test-support.js';

const FULL_RANK = 1_000;
const layers = 4;
const hidden = 32;
const heads = 4; // head 8, rotary_pct 0.5: 4 rotated dimensions
const ffn = 48;
const vocab = 41;

/** A NeoX directory whose layers all differ (weights, biases, LayerNorm weights and biases). */
async function writeNeox(dir: string, seed: number, parallel: boolean): Promise<void> {
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
  const tensors: { name: string; dtype: 'F32'; shape: number[]; bytes: Uint8Array }[] = [];
  const add = (name: string, shape: number[], fill: () => number) => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, fill);
    tensors.push({ name, dtype: 'F32', shape, bytes: new Uint8Array(values.buffer) });
  };
  const weight = (fanIn: number) => () => (2 * uniform()) / Math.sqrt(fanIn);
  add('gpt_neox.embed_in.weight', [vocab, hidden], () => 2 * uniform());
  for (let layer = 0; layer < layers; layer++) {
    const p = `gpt_neox.layers.${layer}`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      add(`${p}.${norm}.weight`, [hidden], () => 1 + 0.4 * uniform());
      add(`${p}.${norm}.bias`, [hidden], () => 0.4 * uniform());
    }
    add(`${p}.attention.query_key_value.weight`, [3 * hidden, hidden], weight(hidden));
    add(`${p}.attention.query_key_value.bias`, [3 * hidden], () => 0.5 * uniform());
    add(`${p}.attention.dense.weight`, [hidden, hidden], weight(hidden));
    add(`${p}.attention.dense.bias`, [hidden], () => 0.5 * uniform());
    add(`${p}.mlp.dense_h_to_4h.weight`, [ffn, hidden], weight(hidden));
    add(`${p}.mlp.dense_h_to_4h.bias`, [ffn], () => 0.5 * uniform());
    add(`${p}.mlp.dense_4h_to_h.weight`, [hidden, ffn], weight(ffn));
    add(`${p}.mlp.dense_4h_to_h.bias`, [hidden], () => 0.5 * uniform());
  }
  add('gpt_neox.final_layer_norm.weight', [hidden], () => 1 + 0.4 * uniform());
  add('gpt_neox.final_layer_norm.bias', [hidden], () => 0.4 * uniform());
  add('embed_out.weight', [vocab, hidden], weight(hidden));
  const { mkdir, writeFile } = await import('node:fs/promises');
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['GPTNeoXForCausalLM'],
      model_type: 'gpt_neox',
      vocab_size: vocab,
      hidden_size: hidden,
      intermediate_size: ffn,
      num_hidden_layers: layers,
      num_attention_heads: heads,
      rotary_pct: 0.5,
      rotary_emb_base: 10000,
      layer_norm_eps: 1e-5,
      use_parallel_residual: parallel,
      hidden_act: 'gelu',
      max_position_embeddings: 32,
      tie_word_embeddings: false,
      torch_dtype: 'float32',
    }),
  );
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
}

/**
 * Bound on logits, relative to the largest original logit. Observed over 11 runs of this file (fresh
 * seeds): full-rank relaxed vs original at most 1.9e-7 on cpu and 4.5e-7 on wasm, unrolled vs original
 * 1.9e-7 and 3.6e-7; the bound is ≈ 2.5× the worst.
 */
const logitTolerance = 1.2e-6;

/** max |a − b| relative to the largest |b|. */
function relativeDifference(a: Float32Array, b: Float32Array): number {
  return maxAbsDifference(a, b) / Math.max(1, ...Array.from(b, Math.abs));
}

for (const kind of ['cpu', 'wasm'] as const)
  describe(`GPT-NeoX conversion and unrolled export (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await tempDir('neox');
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    for (const parallel of [true, false]) {
      const form = parallel ? 'parallel' : 'sequential';
      it(`${form} residual: full rank with shared LayerNorms reproduces the original; the unrolled export is gpt_neox again`, async () => {
        const seed = 1 + Math.floor(Math.random() * 1e6);
        const sourceDir = join(workDir, `${form}-${seed}`);
        await writeNeox(sourceDir, seed, parallel);
        const tokens = tokenIds(seed, 9, vocab);
        const original = await logitsOf(sourceDir, backend, tokens);

        // Average init: the shared norms and weights equal no loop's original, so every fold is exercised.
        const converted = join(workDir, `${form}-${seed}-rrt`);
        const result = await convertToRecursive(sourceDir, converted, {
          loops: 2,
          init: 'average',
          ranks: FULL_RANK,
        });
        const config = JSON.parse(await readFile(join(converted, 'config.json'), 'utf8'));
        expect(config.model_type).toBe('rrt_gpt_neox');
        expect(config.recursion.lora_bias).toBe(true);
        expect(config.recursion.lora_ranks.gate_proj).toBe(0);
        expect(result.warnings.filter((w) => w.includes('biases differ'))).toEqual([]);
        const relaxed = relativeDifference(await logitsOf(converted, backend, tokens), original);
        console.log(
          `neox ${kind} ${form} seed ${seed}: full-rank relaxed vs original ${relaxed.toExponential(2)}`,
        );
        expect(relaxed, `seed ${seed}`).toBeLessThanOrEqual(logitTolerance);

        // Without the per-loop bias correction the same conversion is far off: the correction is what makes it exact.
        const uncorrected = join(workDir, `${form}-${seed}-nobias`);
        await convertToRecursive(sourceDir, uncorrected, {
          loops: 2,
          init: 'average',
          ranks: FULL_RANK,
          loraBias: false,
        });
        expect(relativeDifference(await logitsOf(uncorrected, backend, tokens), original)).toBeGreaterThan(
          1e-2,
        );

        const unrolled = join(workDir, `${form}-${seed}-unrolled`);
        await exportUnrolled(converted, unrolled);
        const unrolledConfig = JSON.parse(await readFile(join(unrolled, 'config.json'), 'utf8'));
        expect(unrolledConfig.model_type).toBe('gpt_neox');
        expect(unrolledConfig.architectures).toEqual(['GPTNeoXForCausalLM']);
        expect(unrolledConfig.recursion).toBeUndefined();
        // The same tensor names and shapes as the source, QKV fused back in its per-head interleaved order
        // (the loader splits it again: a wrong order would show in the logits below). The projections that
        // read no norm (attention.dense, dense_4h_to_h) come back as the originals, biases included; the
        // others carry the shared norms' folds, so only the logits can be compared.
        const source = await readAllTensors(sourceDir);
        const exported = await readAllTensors(unrolled);
        expect([...exported.keys()].sort()).toEqual([...source.keys()].sort());
        let worstTensor = 0;
        for (const [name, tensor] of source) {
          expect(exported.get(name)!.shape, name).toEqual(tensor.shape);
          if (/attention\.dense|dense_4h_to_h|embed|final_layer_norm/.test(name)) {
            worstTensor = Math.max(worstTensor, maxAbsDifference(exported.get(name)!.values, tensor.values));
          }
        }
        console.log(
          `neox ${form} seed ${seed}: unrolled tensors vs source, worst |Δ| ${worstTensor.toExponential(2)}`,
        );
        // Observed at most 1.5e-8 (weights O(0.3), float32 SVD factors).
        expect(worstTensor, `seed ${seed}`).toBeLessThanOrEqual(1e-7);
        const unrolledError = relativeDifference(await logitsOf(unrolled, backend, tokens), original);
        console.log(
          `neox ${kind} ${form} seed ${seed}: unrolled vs original ${unrolledError.toExponential(2)}`,
        );
        expect(unrolledError, `seed ${seed}`).toBeLessThanOrEqual(logitTolerance);
      });
    }
  });
