/**
 * Every `config.json` field the forward pass reads, changed one at a time on the same weights: the output
 * must follow the float64 reference given the changed field, and must differ from the output before the
 * change by far more than the tolerance (so a decoder that ignored the field would fail).
 *
 * Observed over 20 seeds per change and backend, and 25 runs of this file: the worst error against the
 * reference, relative to the position's largest logit, was 3.4e-7 on cpu and 8.2e-7 on wasm; the smallest
 * change a field made to the output, measured the same way, was 6.9e-2.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { idsTensor, randomTokens, readAndDispose, worstRelativeError } from './logits.js';
import { type ReferenceConfig, referenceLogits } from './reference.js';
import { hfConfig, randomConfigs, writeRandomModel } from './random-model.js';

/** Relative error bound against the reference: the same as decoder-paths.test.ts (observed here: 8.2e-7). */
const referenceTolerance = 3e-6;

/** One field changed: what `config.json` gets on top of the model's own, and what the reference gets. */
interface FieldChange {
  model: keyof typeof randomConfigs;
  field: string;
  hf: Record<string, unknown>;
  reference: Partial<ReferenceConfig>;
}

const llamaBiases = randomConfigs['llama-gqa']!.reference.biases;
const changes: FieldChange[] = [
  {
    model: 'llama-gqa',
    field: 'rms_norm_eps 1e-5 → 0.3',
    hf: { rms_norm_eps: 0.3 },
    reference: { rmsNormEps: 0.3 },
  },
  { model: 'llama-gqa', field: 'rope_theta 10000 → 7', hf: { rope_theta: 7 }, reference: { ropeTheta: 7 } },
  {
    model: 'llama-gqa',
    field: 'rope_scaling linear factor 2 → 5',
    hf: { rope_scaling: { type: 'linear', factor: 5 } },
    reference: { ropeScalingFactor: 5 },
  },
  {
    model: 'llama-gqa',
    field: 'attention_bias true → false',
    hf: { attention_bias: false },
    reference: {
      biases: llamaBiases.filter((name) => !['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(name)),
    },
  },
  {
    model: 'llama-gqa',
    field: 'mlp_bias true → false',
    hf: { mlp_bias: false },
    reference: {
      biases: llamaBiases.filter((name) => !['gate_proj', 'up_proj', 'down_proj'].includes(name)),
    },
  },
  {
    model: 'llama-gqa',
    field: 'tie_word_embeddings false → true',
    hf: { tie_word_embeddings: true },
    reference: { tieWordEmbeddings: true },
  },
  {
    model: 'llama-gqa',
    field: 'hidden_act silu → gelu_pytorch_tanh',
    hf: { hidden_act: 'gelu_pytorch_tanh' },
    reference: { hiddenAct: 'gelu_tanh' },
  },
  {
    model: 'qwen2-bias',
    field: 'model_type qwen2 → mistral (no q, k, v biases)',
    hf: { model_type: 'mistral' },
    reference: { biases: [] },
  },
  {
    model: 'mistral-window',
    field: 'sliding_window 3 → null (full attention)',
    hf: { sliding_window: null },
    reference: { windows: undefined },
  },
  {
    model: 'qwen2-window',
    field: 'max_window_layers 1 → 2 (layer 1 attends fully)',
    hf: { max_window_layers: 2 },
    reference: { windows: [undefined, undefined, 5] },
  },
  {
    model: 'qwen3-qknorm',
    field: 'tie_word_embeddings false → true',
    hf: { tie_word_embeddings: true },
    reference: { tieWordEmbeddings: true },
  },
  {
    model: 'gemma2-softcap',
    field: 'attn_logit_softcapping 1.5 → null',
    hf: { attn_logit_softcapping: null },
    reference: { attnLogitSoftcapping: undefined },
  },
  {
    model: 'gemma2-softcap',
    field: 'final_logit_softcapping 4 → null',
    hf: { final_logit_softcapping: null },
    reference: { finalLogitSoftcapping: undefined },
  },
  {
    model: 'gemma2-softcap',
    field: 'query_pre_attn_scalar 20 → 3',
    hf: { query_pre_attn_scalar: 3 },
    reference: { queryPreAttnScalar: 3 },
  },
  {
    model: 'gemma2-softcap',
    field: 'layer_types: layer 1 local, layer 2 global',
    hf: { layer_types: ['sliding_attention', 'sliding_attention', 'full_attention', 'full_attention'] },
    reference: { windows: [4, 4, undefined, undefined] },
  },
  {
    model: 'gemma3-local',
    field: 'rope_local_base_freq 10000 → 7',
    hf: { rope_local_base_freq: 7 },
    reference: { localRopeTheta: 7 },
  },
  {
    model: 'gemma3-local',
    field: 'rope_scaling linear ×4 → none (the global layer only)',
    hf: { rope_scaling: null },
    reference: { ropeScalingFactor: 1 },
  },
  {
    model: 'gemma3-local',
    field: 'sliding_window 3 → 2',
    hf: { sliding_window: 2 },
    reference: { windows: [2, 2, undefined] },
  },
  {
    // Gemma's family: norms by 1 + w, embeddings by √d. The activation is kept (tanh-GELU either way).
    model: 'gemma-mqa',
    field: 'model_type gemma → llama (norms by w, no embedding scale)',
    hf: { model_type: 'llama', tie_word_embeddings: true },
    reference: { family: 'llama', hiddenAct: 'gelu_tanh' },
  },
];

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`config fields the decoder reads, each changed on the same weights (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-config-fields-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    for (const change of changes) {
      it(`${change.model}: ${change.field}`, async () => {
        const seed = 1000 + Math.floor(Math.random() * 1e6);
        const baseDir = join(workDir, `${change.model}-${seed}`);
        const { reference, weights } = await writeRandomModel(baseDir, change.model, seed);
        const changedReference = { ...reference, ...change.reference };
        const changedDir = join(workDir, `${change.model}-${seed}-changed`);
        await mkdir(changedDir);
        await copyFile(join(baseDir, 'model.safetensors'), join(changedDir, 'model.safetensors'));
        const hf = { ...randomConfigs[change.model]!.hf, ...change.hf };
        await writeFile(join(changedDir, 'config.json'), JSON.stringify(hfConfig(changedReference, hf)));

        const tokens = randomTokens(seed, 11, reference.vocabSize);
        const baseline = backend.numTensors();
        const logitsOf = async (dir: string) => {
          const model = await loadModel(dir, backend);
          const ids = idsTensor(backend, [tokens]);
          const values = await readAndDispose(backend, model.forward(ids).logits);
          backend.dispose(ids);
          model.dispose();
          return values;
        };
        const before = await logitsOf(baseDir);
        const after = await logitsOf(changedDir);
        const expectedBefore = referenceLogits(reference, weights, tokens);
        const expectedAfter = referenceLogits(changedReference, weights, tokens);

        expect(worstRelativeError(before, expectedBefore), `seed ${seed}`).toBeLessThanOrEqual(
          referenceTolerance,
        );
        expect(worstRelativeError(after, expectedAfter), `seed ${seed}`).toBeLessThanOrEqual(
          referenceTolerance,
        );
        // The change is visible: the output before it misses the changed reference by far more than the bound.
        expect(worstRelativeError(before, expectedAfter), `seed ${seed}`).toBeGreaterThan(
          1000 * referenceTolerance,
        );
        expect(backend.numTensors()).toBe(baseline);
      });
    }

    it('llama-gqa: max_position_embeddings bounds the positions a forward may reach, with or without a cache', async () => {
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      const { reference } = await writeRandomModel(join(workDir, `max-${seed}`), 'llama-gqa', seed);
      const dir = join(workDir, `max-${seed}-changed`);
      await mkdir(dir);
      await copyFile(join(workDir, `max-${seed}`, 'model.safetensors'), join(dir, 'model.safetensors'));
      const hf = { ...randomConfigs['llama-gqa']!.hf, max_position_embeddings: 10 };
      await writeFile(join(dir, 'config.json'), JSON.stringify(hfConfig(reference, hf)));
      const baseline = backend.numTensors();
      const model = await loadModel(dir, backend);
      const tokens = randomTokens(seed, 11, reference.vocabSize);

      const tooLong = idsTensor(backend, [tokens]);
      expect(() => model.forward(tooLong)).toThrow(/positions 0…10 exceed max_position_embeddings 10/);
      backend.dispose(tooLong);
      const cache = createKVCache(backend, { depths: reference.numHiddenLayers, capacity: 16 });
      const fits = idsTensor(backend, [tokens.slice(0, 10)]);
      backend.dispose(model.forward(fits, { cache }).logits);
      backend.dispose(fits);
      const next = idsTensor(backend, [tokens.slice(10)]);
      expect(() => model.forward(next, { cache })).toThrow(
        /positions 10…10 exceed max_position_embeddings 10/,
      );
      backend.dispose(next);
      cache.dispose();
      model.dispose();
      expect(backend.numTensors()).toBe(baseline);
    });
  });
}
