import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBackend } from '@rrt/backend-tfjs';
import { importLlama2c, writeSafetensors } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToRecursive } from './convert.js';
import { exportUnrolled } from './export.js';
import {
  expectIdentityConversion,
  logitsOf,
  maxAbsDifference,
  readAllTensors,
  tempDir,
} from './test-support.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const assets = resolve(repoRoot, '../shared/assets/stories260K');
const hasAssets = existsSync(join(assets, 'stories260K.bin'));

const title = hasAssets
  ? 'stories260K (real trained weights, 5 layers)'
  : 'stories260K — skipped: ../shared/assets/stories260K is absent';

describe.skipIf(!hasAssets)(title, () => {
  let backend: Backend;
  let workDir: string;
  let sourceDir: string;
  let tokens: number[];
  let originalLogits: Float32Array;
  let count = 0;
  const outDir = () => join(workDir, `out-${count++}`);

  beforeAll(async () => {
    backend = (await createBackend('cpu')).backend;
    workDir = await tempDir('stories260k');
    sourceDir = join(workDir, 'stories260K');
    await importLlama2c({
      checkpointPath: join(assets, 'stories260K.bin'),
      tokenizerPath: join(assets, 'tok512.bin'),
      outDir: sourceDir,
    });
    const reference = JSON.parse(await readFile(join(assets, 'reference_logits.json'), 'utf8'));
    tokens = (reference.tokens as number[]).slice(0, 24);
    originalLogits = await logitsOf(sourceDir, backend, tokens);
  });
  afterAll(async () => {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  for (const [strategy, loops] of [
    ['cycle', 5],
    ['middle-cycle', 3],
  ] as const) {
    it(`${strategy} 1×${loops}: full-rank relaxed logits equal the original's`, async () => {
      const out = outDir();
      const result = await convertToRecursive(sourceDir, out, {
        loops,
        strategy,
        init: 'average',
        ranks: 64,
      });
      expect(result.recursion.blockSize).toBe(1);
      expect(result.recursion.loraRanks).toMatchObject({ q_proj: 64, k_proj: 32, v_proj: 32, gate_proj: 64 });
      expect(result.copiedFiles).toContain('tokenizer.json');
      const worst = maxAbsDifference(await logitsOf(out, backend, tokens), originalLogits);
      expect(worst).toBeLessThanOrEqual(1e-4);
      // Recursion saves parameters; a full-rank LoRA per loop gives them back and more.
      expect(result.parameters.recursive).toBeLessThan(result.parameters.original);
      expect(result.parameters.relaxed).toBeGreaterThan(result.parameters.recursive);
    });
  }

  it('rank 0 equals the recursive model built by hand (stepwise picks layer 0, or layer 1 for middle-cycle)', async () => {
    const source = await readAllTensors(sourceDir);
    for (const [strategy, loops, depthToLayer] of [
      ['cycle', 5, [0, 0, 0, 0, 0]],
      ['middle-cycle', 3, [0, 1, 1, 1, 4]],
    ] as const) {
      const expectedDir = outDir();
      await mkdir(expectedDir);
      await writeSafetensors(
        join(expectedDir, 'model.safetensors'),
        [...source].map(([name, tensor]) => {
          const match = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
          const values = match
            ? source.get(`model.layers.${depthToLayer[Number(match[1])]}.${match[2]}`)!.values
            : tensor.values;
          return {
            name,
            dtype: 'F32' as const,
            shape: tensor.shape,
            bytes: new Uint8Array(values.slice().buffer),
          };
        }),
      );
      const { copyFile } = await import('node:fs/promises');
      await copyFile(join(sourceDir, 'config.json'), join(expectedDir, 'config.json'));
      const out = outDir();
      await convertToRecursive(sourceDir, out, { loops, strategy, init: 'stepwise', ranks: 0 });
      const worst = maxAbsDifference(
        await logitsOf(out, backend, tokens),
        await logitsOf(expectedDir, backend, tokens),
      );
      expect(worst, strategy).toBeLessThanOrEqual(1e-5);
    }
  });

  it('K = N, L = 1 equals the original, tensor for tensor', async () => {
    await expectIdentityConversion(sourceDir, outDir(), 5, backend, tokens, originalLogits);
  });

  for (const [strategy, loops] of [
    ['cycle', 5],
    ['middle-cycle', 3],
  ] as const) {
    it(`applying LoRA at run time equals the unrolled export (rank 8, ${strategy} 1×${loops})`, async () => {
      const relaxed = outDir();
      const result = await convertToRecursive(sourceDir, relaxed, {
        loops,
        strategy,
        init: 'average',
        ranks: 8,
      });
      const group = result.reconstruction.find((entry) => entry.group === 'ffn')!;
      expect(group.relaxedError!).toBeLessThan(group.recursiveError!);
      const unrolled = outDir();
      const exported = await exportUnrolled(relaxed, unrolled);
      expect(exported.numLayers).toBe(5);
      const worst = maxAbsDifference(
        await logitsOf(relaxed, backend, tokens),
        await logitsOf(unrolled, backend, tokens),
      );
      expect(worst).toBeLessThanOrEqual(1e-4);
    });
  }
});
