import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { linearModules, loraTensorName, moduleTensorName, writeSafetensors } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { convertToRecursive } from './convert.js';
import { exportUnrolled } from './export.js';
import {
  expectIdentityConversion,
  logitsOf,
  maxAbsDifference,
  readAllTensors,
  smallGemma,
  smallLlama,
  smallQwen3,
  tempDir,
  tokenIds,
} from './test-support.js';
import { type SyntheticModelSpec, writeSyntheticCheckpoint } from './testing/index.js';

let backend: Backend;
let workDir: string;
beforeAll(async () => {
  backend = (await createBackend('cpu')).backend;
  workDir = await tempDir('invariants');
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Full rank for every module of the small models (clamped to min(out, in) with a warning). */
const FULL_RANK = 1_000;
/** The seed of the biased Llama's weights: fresh per run, in the describe title. */
const biasSeed = 1 + Math.floor(Math.random() * 1e6);

/** The norms a relaxed conversion keeps per loop: those no projection absorbs (see convert.ts). */
const expectedLoopNorms: Record<string, string[] | undefined> = {
  qwen3: ['q_norm', 'k_norm'],
};

for (const baseSpec of [smallLlama, smallGemma, smallQwen3]) {
  // A fresh seed per run, so that the invariants are checked on new weights; in the title, so that every
  // failure of the block (the leak check of afterEach included) names it.
  const seed = 1 + Math.floor(Math.random() * 1e6);
  describe(`invariants on a random ${baseSpec.modelType} (6 layers, float32, seed ${seed})`, () => {
    const spec: SyntheticModelSpec = { ...baseSpec, seed };
    const tokens = tokenIds(seed, 7, spec.vocabSize);
    let sourceDir: string;
    let originalLogits: Float32Array;
    let tensorsBefore = 0;
    let count = 0;
    const outDir = () => join(workDir, `${spec.modelType}-${seed}-${count++}`);

    beforeAll(async () => {
      sourceDir = join(workDir, `${spec.modelType}-${seed}-source`);
      await writeSyntheticCheckpoint(sourceDir, spec);
      originalLogits = await logitsOf(sourceDir, backend, tokens);
      tensorsBefore = backend.numTensors();
    });
    // Every model loaded for a comparison is freed again.
    afterEach(() => {
      expect(backend.numTensors()).toBe(tensorsBefore);
    });

    it('K = N, L = 1 equals the original, tensor for tensor', async () => {
      const baseline = backend.numTensors();
      await expectIdentityConversion(sourceDir, outDir(), 6, backend, tokens, originalLogits);
      expect(backend.numTensors()).toBe(baseline);
    });

    for (const [strategy, loops] of [
      ['cycle', 2],
      ['sequence', 3],
      ['middle-cycle', 2],
    ] as const) {
      for (const init of ['stepwise', 'average'] as const) {
        it(`full-rank relaxed logits equal the original's (${strategy}, L = ${loops}, ${init})`, async () => {
          const out = outDir();
          const warnings: string[] = [];
          const result = await convertToRecursive(sourceDir, out, {
            loops,
            strategy,
            init,
            ranks: FULL_RANK,
            alpha: 3,
            onWarning: (message) => warnings.push(message),
          });
          expect(warnings.some((message) => message.includes('clamped'))).toBe(true);
          const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
          expect(config.num_hidden_layers).toBe(6);
          expect(config.recursion.loops).toBe(loops);
          expect(config.recursion.lora_alpha).toBe(3);
          expect(config.recursion.loop_norms).toEqual(expectedLoopNorms[spec.modelType]);
          const [qOut, hidden] = [
            spec.numAttentionHeads * (spec.headDim ?? spec.hiddenSize / spec.numAttentionHeads),
            spec.hiddenSize,
          ];
          expect(config.recursion.lora_ranks.q_proj).toBe(Math.min(qOut, hidden));
          expect(config.recursion.lora_ranks.down_proj).toBe(
            Math.min(spec.hiddenSize, spec.intermediateSize),
          );
          const worst = maxAbsDifference(await logitsOf(out, backend, tokens), originalLogits);
          expect(worst, `seed ${seed}`).toBeLessThanOrEqual(1e-4);
          for (const group of result.reconstruction)
            expect(group.relaxedError!, group.group).toBeLessThan(1e-6);
          expect(result.parameters.recursive).toBeLessThan(result.parameters.original);
        });
      }
    }

    it('full rank, plain residuals: W_shared + (α/r)·B·A = W_orig for any α', async () => {
      for (const alpha of [1, 7.5]) {
        const out = outDir();
        await convertToRecursive(sourceDir, out, {
          loops: 2,
          init: 'average',
          ranks: FULL_RANK,
          alpha,
          foldNorms: false,
        });
        const source = await readAllTensors(sourceDir);
        const converted = await readAllTensors(out);
        const ranks = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).recursion.lora_ranks;
        let worst = 0;
        for (let block = 0; block < 3; block++) {
          for (const module of linearModules) {
            const shared = converted.get(`${moduleTensorName(block, module)}.weight`)!;
            const [rows, cols] = shared.shape as [number, number];
            const rank = ranks[module] as number;
            for (let loop = 0; loop < 2; loop++) {
              const original = source.get(`${moduleTensorName(block + 3 * loop, module)}.weight`)!.values;
              const prefix = loraTensorName(loop, block, module);
              const a = converted.get(`${prefix}.lora_A.weight`)!.values;
              const b = converted.get(`${prefix}.lora_B.weight`)!.values;
              for (let i = 0; i < rows; i++) {
                for (let j = 0; j < cols; j++) {
                  let product = 0;
                  for (let k = 0; k < rank; k++) product += b[i * rank + k]! * a[k * cols + j]!;
                  const rebuilt = shared.values[i * cols + j]! + (alpha / rank) * product;
                  worst = Math.max(worst, Math.abs(rebuilt - original[i * cols + j]!));
                }
              }
            }
          }
        }
        // Weights are O(1/√fan-in) ≈ 0.1–0.2; float32 factors leave about 1e-7 of error.
        expect(worst, `alpha ${alpha}, seed ${seed}`).toBeLessThan(2e-6);
      }
    });

    it('rank 0 equals the recursive model built by hand (cycle + average, middle-cycle + stepwise)', async () => {
      const source = await readAllTensors(sourceDir);
      // Effective depth → the source layers whose float64 mean it runs, written out from the definitions.
      const layouts = [
        {
          options: { loops: 2, strategy: 'cycle', init: 'average' } as const,
          depths: [
            [0, 3],
            [1, 4],
            [2, 5],
            [0, 3],
            [1, 4],
            [2, 5],
          ],
        },
        // middle-cycle 2×2: pool = layers 1…4, stepwise round(linspace(0, 3, 2)) = [0, 3] → layers 1 and 4.
        {
          options: { loops: 2, strategy: 'middle-cycle', init: 'stepwise' } as const,
          depths: [[0], [1], [4], [1], [4], [5]],
        },
      ];
      for (const { options, depths } of layouts) {
        const expectedDir = outDir();
        const tensors = [];
        for (const [name, tensor] of source) {
          const match = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
          let values = tensor.values;
          if (match) {
            const [, depthText, rest] = match;
            const tied = depths[Number(depthText)]!;
            values = new Float32Array(values.length);
            for (let i = 0; i < values.length; i++) {
              let sum = 0;
              for (const layer of tied) sum += source.get(`model.layers.${layer}.${rest}`)!.values[i]!;
              values[i] = sum / tied.length;
            }
          }
          tensors.push({
            name,
            dtype: 'F32' as const,
            shape: tensor.shape,
            bytes: new Uint8Array(values.buffer),
          });
        }
        const { mkdir, copyFile } = await import('node:fs/promises');
        await mkdir(expectedDir);
        await copyFile(join(sourceDir, 'config.json'), join(expectedDir, 'config.json'));
        await writeSafetensors(join(expectedDir, 'model.safetensors'), tensors);

        const out = outDir();
        const result = await convertToRecursive(sourceDir, out, { ...options, ranks: 0 });
        const converted = await readAllTensors(out);
        expect([...converted.keys()].some((name) => name.startsWith('model.loras.'))).toBe(false);
        expect(result.parameters.relaxed).toBe(result.parameters.recursive);
        const worst = maxAbsDifference(
          await logitsOf(out, backend, tokens),
          await logitsOf(expectedDir, backend, tokens),
        );
        expect(worst, `${options.strategy}, seed ${seed}`).toBeLessThanOrEqual(1e-5);
        for (const group of result.reconstruction) expect(group.relaxedError).toBe(group.recursiveError);
      }
    });

    it('applying LoRA at run time equals the unrolled export', async () => {
      const relaxed = outDir();
      const result = await convertToRecursive(sourceDir, relaxed, {
        loops: 2,
        init: 'average',
        ranks: { default: 4, ffn: 6 },
      });
      // A low rank approximates: the relaxed model differs from the original but less than the recursive one.
      const byGroup = Object.fromEntries(result.reconstruction.map((group) => [group.group, group]));
      expect(byGroup.ffn!.relaxedError!).toBeGreaterThan(0);
      expect(byGroup.ffn!.relaxedError!).toBeLessThan(byGroup.ffn!.recursiveError!);
      expect(byGroup.ffn!.ranks).toEqual([6, 6, 6]);
      const unrolled = outDir();
      const exported = await exportUnrolled(relaxed, unrolled);
      expect(exported.numLayers).toBe(6);
      const config = JSON.parse(await readFile(join(unrolled, 'config.json'), 'utf8'));
      expect(config.recursion).toBeUndefined();
      expect(config.model_type).toBe(spec.modelType);
      expect(config.num_hidden_layers).toBe(6);
      const worst = maxAbsDifference(
        await logitsOf(relaxed, backend, tokens),
        await logitsOf(unrolled, backend, tokens),
      );
      expect(worst, `seed ${seed}`).toBeLessThanOrEqual(1e-4);
      // The unrolled export of a full-rank conversion is the original again.
      const full = outDir();
      await convertToRecursive(sourceDir, full, { loops: 3, strategy: 'sequence', ranks: FULL_RANK });
      const fullUnrolled = outDir();
      await exportUnrolled(full, fullUnrolled);
      expect(
        maxAbsDifference(await logitsOf(fullUnrolled, backend, tokens), originalLogits),
      ).toBeLessThanOrEqual(1e-4);
    });
  });
}

describe('reconstruction report', () => {
  it('matches an independent float64 computation of ‖T − W_shared‖ / ‖T‖ at rank 0', async () => {
    const spec: SyntheticModelSpec = { ...smallLlama, seed: 5, perLayerNorms: false };
    const sourceDir = join(workDir, 'report-source');
    await writeSyntheticCheckpoint(sourceDir, spec);
    const result = await convertToRecursive(sourceDir, join(workDir, 'report-out'), {
      loops: 3,
      init: 'lower',
      ranks: 0,
    });
    const source = await readAllTensors(sourceDir);
    // lower init, cycle 2×3: block b takes layer b; loops replace layers b, b + 2, b + 4.
    const groups = {
      q: ['q_proj'],
      kv: ['k_proj', 'v_proj'],
      o: ['o_proj'],
      ffn: ['gate_proj', 'up_proj', 'down_proj'],
    };
    for (const group of result.reconstruction) {
      let error = 0;
      let total = 0;
      for (const module of groups[group.group]) {
        for (let block = 0; block < 2; block++) {
          const shared = source.get(`${moduleTensorName(block, module as 'q_proj')}.weight`)!.values;
          for (let loop = 0; loop < 3; loop++) {
            const original = source.get(
              `${moduleTensorName(block + 2 * loop, module as 'q_proj')}.weight`,
            )!.values;
            for (let i = 0; i < original.length; i++) {
              error += (original[i]! - shared[i]!) ** 2;
              total += original[i]! ** 2;
            }
          }
        }
      }
      expect(group.recursiveError!).toBeCloseTo(Math.sqrt(error / total), 10);
      expect(group.relaxedError).toBe(group.recursiveError);
    }
  });
});

describe('sharded Qwen2 source with q/k/v biases, bf16', () => {
  it('converts shard by shard into a sharded output that loads; warns that per-loop biases are shared', async () => {
    const spec: SyntheticModelSpec = {
      modelType: 'qwen2',
      vocabSize: 40,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 4,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      tieWordEmbeddings: true,
      attentionBias: true,
      dtype: 'BF16',
      seed: 8,
      maxShardBytes: 10_000,
    };
    const sourceDir = join(workDir, 'qwen2-source');
    await writeSyntheticCheckpoint(sourceDir, spec);
    const tokens = tokenIds(8, 5, spec.vocabSize);
    // K = N, L = 1 through the sharded path: the same model, and bf16 bytes passed through untouched.
    const same = join(workDir, 'qwen2-same');
    await convertToRecursive(sourceDir, same, { loops: 1, maxShardBytes: 20_000 });
    expect(
      maxAbsDifference(await logitsOf(same, backend, tokens), await logitsOf(sourceDir, backend, tokens)),
    ).toBe(0);

    const out = join(workDir, 'qwen2-relaxed');
    const warnings: string[] = [];
    const result = await convertToRecursive(sourceDir, out, {
      loops: 2,
      init: 'average',
      ranks: 4,
      maxShardBytes: 20_000,
      onWarning: (message) => warnings.push(message),
    });
    expect(result.outputDtype).toBe('BF16');
    expect(result.copiedFiles).toEqual(['generation_config.json']);
    expect(warnings.some((message) => message.includes('biases differ'))).toBe(true);
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(out)).filter((name) => name.endsWith('.safetensors')).length).toBeGreaterThan(1);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.torch_dtype).toBe('bfloat16');
    expect(config.tie_word_embeddings).toBe(true);
    const converted = await readAllTensors(out);
    expect(converted.has('lm_head.weight')).toBe(false);
    expect(converted.get('model.layers.1.self_attn.k_proj.bias')!.shape).toEqual([16]);
    const logits = await logitsOf(out, backend, tokens);
    expect(logits.every(Number.isFinite)).toBe(true);
  });
});

describe(`random Llama with attention_bias and mlp_bias (seed ${biasSeed})`, () => {
  /** smallLlama with q, k, v, o biases (attention_bias) and gate, up, down biases (mlp_bias). */
  const biasedSpec = (perLayerBiases: boolean): SyntheticModelSpec => ({
    ...smallLlama,
    seed: biasSeed,
    attentionBias: true,
    mlpBias: true,
    perLayerBiases,
  });
  const tokens = tokenIds(biasSeed, 7, smallLlama.vocabSize);
  const biasNames = (layer: number) =>
    linearModules.map((module) => `${moduleTensorName(layer, module)}.bias`);

  it('equal biases: all seven are shared and unrolled, none dropped; full rank equals the original', async () => {
    const sourceDir = join(workDir, `biased-equal-${biasSeed}`);
    await writeSyntheticCheckpoint(sourceDir, biasedSpec(false));
    const originalLogits = await logitsOf(sourceDir, backend, tokens);
    const baseline = backend.numTensors();
    const out = join(workDir, `biased-equal-${biasSeed}-relaxed`);
    const warnings: string[] = [];
    await convertToRecursive(sourceDir, out, {
      loops: 2,
      init: 'average',
      ranks: FULL_RANK,
      onWarning: (message) => warnings.push(message),
    });
    // Tied layers have equal biases, and every source tensor has its place.
    expect(warnings.filter((message) => !message.includes('clamped'))).toEqual([]);
    const source = await readAllTensors(sourceDir);
    const converted = await readAllTensors(out);
    for (let block = 0; block < 3; block++) {
      for (const name of biasNames(block))
        expect(converted.get(name)?.values, name).toEqual(source.get(name)!.values);
    }
    expect(maxAbsDifference(await logitsOf(out, backend, tokens), originalLogits)).toBeLessThanOrEqual(1e-4);

    const unrolled = join(workDir, `biased-equal-${biasSeed}-unrolled`);
    await exportUnrolled(out, unrolled);
    const exported = await readAllTensors(unrolled);
    for (let depth = 0; depth < 6; depth++) {
      for (const name of biasNames(depth))
        expect(exported.get(name)?.values, name).toEqual(source.get(name)!.values);
    }
    expect(maxAbsDifference(await logitsOf(unrolled, backend, tokens), originalLogits)).toBeLessThanOrEqual(
      1e-4,
    );
    expect(backend.numTensors()).toBe(baseline);
  });

  it('per-layer biases: K = N is the original; shared means with a warning; run-time LoRA equals unroll', async () => {
    const sourceDir = join(workDir, `biased-${biasSeed}`);
    await writeSyntheticCheckpoint(sourceDir, biasedSpec(true));
    const baseline = backend.numTensors();
    const source = await readAllTensors(sourceDir);

    const same = join(workDir, `biased-${biasSeed}-same`);
    await convertToRecursive(sourceDir, same, { blockSize: 6, loops: 1 });
    const copied = await readAllTensors(same);
    expect([...copied.keys()].sort()).toEqual([...source.keys()].sort());
    for (const [name, tensor] of source) expect(copied.get(name)!.values, name).toEqual(tensor.values);

    const relaxed = join(workDir, `biased-${biasSeed}-relaxed`);
    const warnings: string[] = [];
    await convertToRecursive(sourceDir, relaxed, {
      loops: 2,
      init: 'average',
      ranks: 4,
      onWarning: (message) => warnings.push(message),
    });
    // 3 blocks × 7 biased modules × 2 tied layers, all different.
    expect(warnings).toContain(
      '42 biases differ between tied layers; the converted model shares the initial bias (LoRA corrects weights only)',
    );
    expect(warnings.some((message) => message.includes('not carried over'))).toBe(false);
    const converted = await readAllTensors(relaxed);
    for (let block = 0; block < 3; block++) {
      for (const module of linearModules) {
        const name = `${moduleTensorName(block, module)}.bias`;
        const first = source.get(name)!.values;
        const second = source.get(`${moduleTensorName(block + 3, module)}.bias`)!.values;
        const expected = Float32Array.from(first, (value, i) => (value + second[i]!) / 2);
        expect(converted.get(name)?.values, name).toEqual(expected);
      }
    }
    const unrolled = join(workDir, `biased-${biasSeed}-unrolled`);
    await exportUnrolled(relaxed, unrolled);
    const worst = maxAbsDifference(
      await logitsOf(relaxed, backend, tokens),
      await logitsOf(unrolled, backend, tokens),
    );
    expect(worst).toBeLessThanOrEqual(1e-4);
    expect(backend.numTensors()).toBe(baseline);
  });
});
