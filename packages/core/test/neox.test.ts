/**
 * GPT-NeoX / Pythia through the public path: a random checkpoint with the real HF tensor names (fused,
 * per-head interleaved QKV, LayerNorms with biases, untied `embed_out`) loaded with `loadModel`, against
 * the independent float64 forward of `neox-model.ts`, in both residual forms; and cached decoding against
 * the full recompute.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, generateTokens, loadModel, resolveConfig, WeightError } from '../src/index.js';
import {
  idsTensor,
  maxAbsDifference,
  randomTokens,
  readAndDispose,
  staggeredLoopLogits,
  worstRelativeError,
} from './logits.js';
import {
  neoxHfConfig,
  neoxParallel,
  neoxReferenceLogits,
  neoxSequential,
  writeRandomNeoxModel,
  writeRelaxedNeoxModel,
} from './neox-model.js';

/**
 * Relative to the position's largest logit. Observed over 21 runs of this file (fresh seeds): the plain
 * models at most 1.8e-7 on cpu and 6.0e-7 on wasm, in both residual forms; the relaxed one at most
 * 3.5e-7 on cpu and 7.7e-7 on wasm. The bound is ≈ 2.5× the worst.
 */
const referenceTolerance = 2e-6;

const variants = { parallel: neoxParallel, sequential: neoxSequential };

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`GPT-NeoX vs float64 reference (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-neox-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    for (const [name, config] of Object.entries(variants)) {
      it(`${name} residual: logits match the reference; cached decoding equals recompute bit for bit; greedy generation follows the reference`, async () => {
        const seed = 1000 + Math.floor(Math.random() * 1e6);
        const dir = join(workDir, `${name}-${seed}`);
        const weights = await writeRandomNeoxModel(dir, config, seed);
        const baseline = backend.numTensors();
        const unused: string[] = [];
        const model = await loadModel(dir, backend, { onUnusedTensor: (tensor) => unused.push(tensor) });
        expect(unused).toEqual([]);
        expect(model.config.family).toBe('gpt_neox');
        expect(model.config.parallelResidual).toBe(config.useParallelResidual);

        const tokens = randomTokens(seed, 11, config.vocabSize);
        const expected = neoxReferenceLogits(config, weights, tokens);
        const allIds = idsTensor(backend, [tokens]);
        const full = await readAndDispose(backend, model.forward(allIds).logits);
        backend.dispose(allIds);
        const worst = worstRelativeError(full, expected);
        console.log(`neox ${name} ${kind} seed ${seed}: worst relative error ${worst.toExponential(2)}`);
        expect(worst, `seed ${seed}`).toBeLessThanOrEqual(referenceTolerance);

        // Prefill 4, then one token at a time: each position equals the full recompute bit for bit.
        const cache = createKVCache(backend, { depths: config.numHiddenLayers, capacity: tokens.length });
        let position = 0;
        for (const chunk of [tokens.slice(0, 4), ...tokens.slice(4).map((token) => [token])]) {
          const ids = idsTensor(backend, [chunk]);
          const values = await readAndDispose(backend, model.forward(ids, { cache }).logits);
          backend.dispose(ids);
          expect(
            maxAbsDifference(values, full, position * config.vocabSize),
            `seed ${seed} at ${position}`,
          ).toBe(0);
          position += chunk.length;
        }
        cache.dispose();

        // Greedy generation (prefill, then cached steps) picks the reference's argmax at every step.
        const prompt = tokens.slice(0, 3);
        const generated: number[] = [];
        for await (const id of generateTokens(model, prompt, { maxTokens: 8, stopTokens: [] }))
          generated.push(id);
        expect(generated).toHaveLength(8);
        const sequence = [...prompt, ...generated];
        const referenceSteps = neoxReferenceLogits(config, weights, sequence.slice(0, -1)).slice(
          prompt.length - 1,
        );
        referenceSteps.forEach((row, step) => {
          const sorted = [...row].sort((a, b) => b - a);
          // A near-tie (gap below float32 noise) may go either way; none was seen, but do not fail on one.
          if (sorted[0]! - sorted[1]! < 1e-4 * Math.max(1, Math.abs(sorted[0]!))) return;
          expect(generated[step], `seed ${seed}, step ${step}`).toBe(row.indexOf(sorted[0]!));
        });
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      });
    }
  });
}

describe('GPT-NeoX config and checkpoint errors', () => {
  const base = neoxHfConfig(neoxParallel);

  it('resolves HF defaults: parallel residual, rotary_pct 0.25, LayerNorm eps 1e-5, untied head, biases everywhere', () => {
    const { config, ignoredKeys } = resolveConfig(
      {
        model_type: 'gpt_neox',
        vocab_size: 50,
        hidden_size: 64,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
      },
      'config.json',
    );
    expect(ignoredKeys).toEqual([]);
    expect(config).toMatchObject({
      family: 'gpt_neox',
      normType: 'layer',
      parallelResidual: true,
      headDim: 16,
      rotaryDim: 4,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      gatedMlp: false,
      hiddenAct: 'gelu',
      numKeyValueHeads: 4,
    });
    expect(config.biasedModules).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj']);
    expect(resolveConfig(base, 'config.json').ignoredKeys).toEqual([]);
    // A config written by newer transformers names the rotary share and base as the other families do.
    const { rotary_pct: _pct, rotary_emb_base: _base, ...renamed } = base;
    const newer = resolveConfig({ ...renamed, partial_rotary_factor: 0.5, rope_theta: 500 }, 'c.json').config;
    expect(newer).toMatchObject({ rotaryDim: 8, ropeTheta: 500 });
  });

  it('rejects a rotary share that rotates an odd number of dimensions, and an activation NeoX does not run', () => {
    expect(() => resolveConfig({ ...base, rotary_pct: 0.2 }, 'c.json')).toThrow(ConfigError);
    expect(() => resolveConfig({ ...base, rotary_pct: 0.2 }, 'c.json')).toThrow(/c\.json.*rotary_pct/);
    expect(() => resolveConfig({ ...base, hidden_act: 'relu' }, 'c.json')).toThrow(/hidden_act.*"gelu"/);
  });

  it('a fused QKV of the wrong shape is a WeightError naming the stored tensor', async () => {
    const workDir = await mkdtemp(join(tmpdir(), 'rrt-neox-bad-'));
    try {
      const config = { ...neoxParallel, numHiddenLayers: 1 };
      await writeRandomNeoxModel(workDir, config, 5);
      // A config whose width disagrees with the file: the fused tensor is [192, 64], the config wants [144, 48].
      const { writeFile } = await import('node:fs/promises');
      await writeFile(
        join(workDir, 'config.json'),
        JSON.stringify({ ...neoxHfConfig(config), hidden_size: 48, num_attention_heads: 3 }),
      );
      const { backend } = await createBackend('cpu');
      const error = await loadModel(workDir, backend).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WeightError);
      expect((error as WeightError).tensor).toBe('gpt_neox.layers.0.attention.query_key_value.weight');
      expect((error as Error).message).toContain('expected [144, 48]');
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  });
});

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`relaxed GPT-NeoX (per-loop LoRA with lora_B.bias) through the step API (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-neox-relaxed-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    // `masked` (the default: concatenated LoRAs under a row mask, the LoRA biases by a row selector) and
    // `segment` (one product per run of spans) must both give each span what it gets alone.
    it.each(['masked', 'segment'] as const)(
      'matches its unrolled float64 reference; spans at different loops in one layer call equal each sequence alone, bit for bit (%s LoRA)',
      async (loraMode) => {
        const seed = 1000 + Math.floor(Math.random() * 1e6);
        const dir = join(workDir, `relaxed-${seed}`);
        const { config, unrolled } = await writeRelaxedNeoxModel(dir, seed);
        const baseline = backend.numTensors();
        const unused: string[] = [];
        const model = await loadModel(dir, backend, {
          loraMode,
          onUnusedTensor: (name) => unused.push(name),
        });
        expect(model.loraMode).toBe(loraMode);
        expect(unused).toEqual([]);
        const tokens = [7, 5].map((count, s) => randomTokens(seed + s, count, config.vocabSize));
        const alone: Float32Array[] = [];
        for (const sequence of tokens) {
          const ids = idsTensor(backend, [sequence]);
          alone.push(await readAndDispose(backend, model.forward(ids).logits));
          backend.dispose(ids);
          const worst = worstRelativeError(alone.at(-1)!, neoxReferenceLogits(config, unrolled, sequence));
          console.log(`relaxed neox ${kind} seed ${seed}: worst relative error ${worst.toExponential(2)}`);
          expect(worst, `seed ${seed}`).toBeLessThanOrEqual(referenceTolerance);
        }

        // Sequence 1 runs one loop behind sequence 0: call j runs 0 at depth j and 1 at depth j − K, the
        // same stored layer with another loop's LoRA (and LoRA bias), masked or by segment.
        const logits = backend.tidy(() => staggeredLoopLogits(model, [tokens[0]!, tokens[1]!]));
        const depths = model.schedule.length;
        for (const [s] of tokens.entries()) {
          const values = await readAndDispose(backend, logits[s]!);
          expect(maxAbsDifference(values, alone[s]!), `sequence ${s}, seed ${seed}`).toBe(0);
        }

        // Cached decoding of the relaxed model equals its recompute, bit for bit.
        const cache = createKVCache(backend, { depths, capacity: tokens[0]!.length });
        for (const [position, token] of tokens[0]!.entries()) {
          const ids = idsTensor(backend, [[token]]);
          const values = await readAndDispose(backend, model.forward(ids, { cache }).logits);
          backend.dispose(ids);
          expect(
            maxAbsDifference(values, alone[0]!, position * config.vocabSize),
            `seed ${seed} at ${position}`,
          ).toBe(0);
        }
        cache.dispose();
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      },
    );
  });
}
