/**
 * Conversion of the families whose layers are not all alike: Gemma 2 (alternating local and global
 * layers, soft-caps, four norms) and Gemma 3 text (five local to one global in real models, here one to
 * two: q/k norms, local RoPE), and Mistral / Qwen2 windows. A relaxed conversion at full rank reproduces
 * the original, its unrolled export is the plain family again, and a block size whose loops would break
 * the local/global pattern is refused.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { type LoRAMode, loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { convertToRecursive } from './convert.js';
import { InvalidOptionError } from './errors.js';
import { exportUnrolled } from './export.js';
import { expectIdentityConversion, logitsOf, maxAbsDifference, tempDir, tokenIds } from './test-support.js';
import { type SyntheticModelSpec, writeSyntheticCheckpoint } from './testing/index.js';

const FULL_RANK = 1_000;

interface FamilyCase {
  spec: SyntheticModelSpec;
  /** Layouts whose loops repeat the layer types. */
  layouts: { loops: number; strategy: 'cycle' | 'sequence' | 'middle-cycle' }[];
  /** A block size that breaks the pattern. */
  refusedLoops: number;
  /** The norms a relaxed conversion keeps per loop. */
  loopNorms: string[] | undefined;
}

const sixLayers = {
  vocabSize: 53,
  hiddenSize: 32,
  intermediateSize: 48,
  numHiddenLayers: 6,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 8,
  tieWordEmbeddings: true,
  dtype: 'F32',
  layerSpecificity: 0.5,
} as const;

const cases: FamilyCase[] = [
  {
    // Even layers local (window 3): loops of an even K repeat the pattern, K = 3 does not.
    spec: {
      ...sixLayers,
      modelType: 'gemma2',
      seed: 21,
      extraConfig: {
        sliding_window: 3,
        query_pre_attn_scalar: 20,
        attn_logit_softcapping: 1.5,
        final_logit_softcapping: 4,
      },
    },
    layouts: [
      { loops: 3, strategy: 'cycle' },
      { loops: 2, strategy: 'middle-cycle' },
    ],
    refusedLoops: 2,
    loopNorms: ['post_attention_layernorm', 'post_feedforward_layernorm'],
  },
  {
    // Layers 2 and 5 global (pattern 3): only K = 3 cycles repeat it.
    spec: {
      ...sixLayers,
      modelType: 'gemma3_text',
      seed: 22,
      extraConfig: {
        sliding_window: 3,
        sliding_window_pattern: 3,
        rope_local_base_freq: 10000,
        rope_theta: 1000000,
        rope_scaling: { rope_type: 'linear', factor: 4 },
        query_pre_attn_scalar: 12,
      },
    },
    layouts: [{ loops: 2, strategy: 'cycle' }],
    refusedLoops: 3,
    loopNorms: ['q_norm', 'k_norm', 'post_attention_layernorm', 'post_feedforward_layernorm'],
  },
  {
    // Every layer slides: any layout repeats the (one) layer type.
    spec: {
      ...sixLayers,
      modelType: 'mistral',
      seed: 23,
      tieWordEmbeddings: false,
      extraConfig: { sliding_window: 3 },
    },
    layouts: [
      { loops: 2, strategy: 'cycle' },
      { loops: 3, strategy: 'sequence' },
    ],
    refusedLoops: 0,
    loopNorms: undefined,
  },
];

let backend: Backend;
let workDir: string;
beforeAll(async () => {
  backend = (await createBackend('cpu')).backend;
  workDir = await tempDir('families');
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/**
 * One ragged layer call whose two spans run stored layer 0 at loops 0 and 1 (depths 0 and `blockSize`),
 * each with its own LoRA and per-loop norms, equals each span run alone: bit for bit with `segment` LoRAs
 * (the promise of `Decoder.layer`); with `masked` LoRAs the expand product sums over every loop's rank
 * (zeros included), so at full rank its float32 blocking differs from one loop's alone: observed
 * 2.4e-7–4.8e-7 absolute (outputs of order 1), bound 2e-6.
 */
async function expectRaggedStepExact(dir: string, blockSize: number, loraMode: LoRAMode): Promise<void> {
  const model = await loadModel(dir, backend, { loraMode });
  const width = model.config.hiddenSize;
  const spans = [
    { batch: 1, length: 3, offset: 0 },
    { batch: 1, length: 2, offset: 0 },
  ];
  const depths = [0, blockSize];
  const values = Float32Array.from({ length: 5 * width }, (_, i) => Math.sin(1.7 * i + 0.3));
  const hidden = backend.fromArray(values, [5, width]);
  const rows = model.rows(spans);
  const joined = model.layer(
    hidden,
    rows,
    depths.map((depth) => ({ depth })),
  );
  const together = (await backend.read(joined)) as Float32Array;
  backend.dispose(joined);
  rows.dispose();
  let start = 0;
  for (const [index, span] of spans.entries()) {
    const part = backend.fromArray(values.slice(start * width, (start + span.length) * width), [
      span.length,
      width,
    ]);
    const alone = model.rows([span]);
    const output = model.layer(part, alone, [{ depth: depths[index]! }]);
    const expected = (await backend.read(output)) as Float32Array;
    alone.dispose();
    backend.dispose([part, output]);
    const got = together.subarray(start * width, (start + span.length) * width);
    const difference = maxAbsDifference(got, expected);
    const message = `${loraMode}: span ${index} at depth ${depths[index]}`;
    if (loraMode === 'segment') expect(difference, message).toBe(0);
    else expect(difference, message).toBeLessThanOrEqual(2e-6);
    start += span.length;
  }
  backend.dispose(hidden);
  model.dispose();
}

for (const { spec: baseSpec, layouts, refusedLoops, loopNorms } of cases) {
  const seed = 1 + Math.floor(Math.random() * 1e6);
  describe(`${baseSpec.modelType}: conversion (6 layers, float32, seed ${seed})`, () => {
    const spec: SyntheticModelSpec = { ...baseSpec, seed };
    // 7 tokens: every local layer's window of 3 slides.
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
    afterEach(() => {
      expect(backend.numTensors()).toBe(tensorsBefore);
    });

    it('K = N, L = 1 equals the original, tensor for tensor', async () => {
      await expectIdentityConversion(sourceDir, outDir(), 6, backend, tokens, originalLogits);
    });

    for (const layout of layouts) {
      it(`full-rank relaxed (${layout.strategy}, L = ${layout.loops}) reproduces the original; its unrolled export is a plain ${baseSpec.modelType} that matches`, async () => {
        const out = outDir();
        await convertToRecursive(sourceDir, out, { ...layout, init: 'average', ranks: FULL_RANK });
        const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
        expect(config.model_type).toBe(`rrt_${spec.modelType}`);
        expect(config.recursion.loop_norms).toEqual(loopNorms);
        const relaxed = await logitsOf(out, backend, tokens);
        // Absolute; observed over 15 seeds (cycle, average init): at most 2.7e-6 for Gemma 2 and 3.8e-6 for
        // Gemma 3 (float32 factors of full-rank residuals), their unrolled exports 3.2e-6 and 3.1e-6.
        expect(maxAbsDifference(relaxed, originalLogits), `seed ${seed}`).toBeLessThanOrEqual(2e-5);

        if (layout.strategy === 'cycle') {
          await expectRaggedStepExact(out, 6 / layout.loops, 'segment');
          await expectRaggedStepExact(out, 6 / layout.loops, 'masked');
        }

        const unrolled = outDir();
        await exportUnrolled(out, unrolled);
        const plain = JSON.parse(await readFile(join(unrolled, 'config.json'), 'utf8'));
        expect(plain.model_type).toBe(spec.modelType);
        expect(plain.recursion).toBeUndefined();
        const unrolledLogits = await logitsOf(unrolled, backend, tokens);
        expect(maxAbsDifference(unrolledLogits, relaxed), `seed ${seed}`).toBeLessThanOrEqual(2e-5);
        expect(maxAbsDifference(unrolledLogits, originalLogits), `seed ${seed}`).toBeLessThanOrEqual(2e-5);
      });
    }

    if (spec.modelType === 'gemma2') {
      it('subsampled to layers 0, 2, 3, 5, the output writes their types out (local, local, global, global) and loads', async () => {
        const out = outDir();
        await convertToRecursive(sourceDir, out, { blockSize: 4, loops: 1, subsample: true, ranks: 0 });
        const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
        expect(config.recursion.kept_layers).toEqual([0, 2, 3, 5]);
        // Gemma 2's alternation re-derived for 4 layers would make layer 1 global and layer 2 local.
        expect(config.layer_types).toEqual([
          'sliding_attention',
          'sliding_attention',
          'full_attention',
          'full_attention',
        ]);
        const model = await loadModel(out, backend);
        expect(model.config.layerWindows).toEqual([3, 3, undefined, undefined]);
        model.dispose();
        // K = 2 would loop layer 0's weights (local) at depth 2 (global, source layer 3).
        await expect(
          convertToRecursive(sourceDir, outDir(), { blockSize: 2, loops: 2, subsample: true, ranks: 0 }),
        ).rejects.toThrow(/option "blockSize".*depths 0, sliding 3, and 2, full/);
      });
    }

    if (refusedLoops > 0) {
      it(`L = ${refusedLoops} (cycle) would run local and global depths on one stored layer: refused, naming blockSize`, async () => {
        const attempt = convertToRecursive(sourceDir, outDir(), { loops: refusedLoops, ranks: 4 });
        await expect(attempt).rejects.toThrow(InvalidOptionError);
        await expect(
          convertToRecursive(sourceDir, outDir(), { loops: refusedLoops, ranks: 4 }),
        ).rejects.toThrow(/option "blockSize".*repeat the layer types/);
      });
    }
  });
}
