import { existsSync, rmSync, truncateSync } from 'node:fs';
import { cp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { writeSafetensors } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConvertOptions, convertToRecursive } from './convert.js';
import {
  IncompatibleLayoutError,
  InvalidOptionError,
  OutputExistsError,
  SourceChangedError,
  SourceCheckpointError,
  UnsupportedArchitectureError,
} from './errors.js';
import { exportUnrolled } from './export.js';
import { readAllTensors, smallLlama, tempDir } from './test-support.js';
import { writeSyntheticCheckpoint } from './testing/index.js';

let workDir: string;
let sourceDir: string;
let count = 0;
beforeAll(async () => {
  workDir = await tempDir('errors');
  sourceDir = join(workDir, 'source');
  await writeSyntheticCheckpoint(sourceDir, { ...smallLlama, seed: 3 });
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** A copy of the source to damage. */
async function sourceCopy(): Promise<string> {
  const dir = join(workDir, `copy-${count++}`);
  await cp(sourceDir, dir, { recursive: true });
  return dir;
}

/** Nothing at `out`, and no temporary directory left beside it. */
async function expectNoOutput(out: string): Promise<void> {
  expect(existsSync(out), out).toBe(false);
  const leftovers = (await readdir(dirname(out))).filter((name) => name.startsWith(`.${basename(out)}.`));
  expect(leftovers).toEqual([]);
}

/** Runs a conversion that must fail with `errorClass` and leave no output. */
async function expectRejected(
  options: ConvertOptions,
  errorClass: new (...args: never[]) => Error,
  source = sourceDir,
): Promise<Error> {
  const out = join(workDir, `out-${count++}`);
  const error = await convertToRecursive(source, out, options).then(
    () => undefined,
    (caught: unknown) => caught as Error,
  );
  expect(error, JSON.stringify(options)).toBeInstanceOf(errorClass);
  await expectNoOutput(out);
  return error!;
}

describe('bad input gets a typed error and no output directory', () => {
  it('non-integer or non-positive loops and block sizes', async () => {
    for (const loops of [0, -2, 1.5, Number.NaN]) {
      const error = await expectRejected({ loops }, InvalidOptionError);
      expect((error as InvalidOptionError).option).toBe('loops');
    }
    await expectRejected({ blockSize: 2.5 }, InvalidOptionError);
    await expectRejected({}, InvalidOptionError);
  });

  it('non-integer or negative ranks, unknown rank groups, bad alpha or dtype', async () => {
    for (const ranks of [-1, 2.5, { ffn: -3 }, { default: 0.5 }, { attn: 4 } as never]) {
      const error = await expectRejected({ loops: 2, ranks }, InvalidOptionError);
      expect((error as InvalidOptionError).option).toMatch(/^ranks/);
    }
    for (const alpha of [0, -1, Number.POSITIVE_INFINITY])
      await expectRejected({ loops: 2, alpha }, InvalidOptionError);
    await expectRejected({ loops: 2, outputDtype: 'F8' as never }, InvalidOptionError);
  });

  it('K·L ≠ N without subsampling lists the valid pairs; with subsampling it converts', async () => {
    const error = (await expectRejected({ loops: 4 }, IncompatibleLayoutError)) as IncompatibleLayoutError;
    expect(error.validPairs.map((pair) => `${pair.blockSize}×${pair.loops}`)).toEqual([
      '6×1',
      '3×2',
      '2×3',
      '1×6',
    ]);
    expect(error.message).toContain('config.json');
    const middle = (await expectRejected(
      { loops: 3, strategy: 'middle-cycle' },
      IncompatibleLayoutError,
    )) as IncompatibleLayoutError;
    expect(middle.validPairs.map((pair) => `${pair.blockSize}×${pair.loops}`)).toEqual(['4×1', '2×2', '1×4']);

    const out = join(workDir, `out-${count++}`);
    const warnings: string[] = [];
    const result = await convertToRecursive(sourceDir, out, {
      loops: 4,
      subsample: true,
      onWarning: (w) => warnings.push(w),
    });
    expect(result.layout.keptLayers).toEqual([0, 2, 3, 5]); // round(linspace(0, 5, 4)) = round([0, 1.67, 3.33, 5])
    expect(warnings.some((warning) => warning.includes('subsampled'))).toBe(true);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.num_hidden_layers).toBe(4);
    expect(config.recursion.kept_layers).toEqual([0, 2, 3, 5]);
  });

  it('an unsupported architecture, or a source that is already recursive', async () => {
    const gpt2 = await sourceCopy();
    const config = JSON.parse(await readFile(join(gpt2, 'config.json'), 'utf8'));
    await writeFile(join(gpt2, 'config.json'), JSON.stringify({ ...config, model_type: 'gpt2' }));
    const error = await expectRejected({ loops: 2 }, UnsupportedArchitectureError, gpt2);
    expect(error.message).toContain('gpt2');

    const recursive = join(workDir, `recursive-${count++}`);
    await convertToRecursive(sourceDir, recursive, { loops: 2 });
    await expectRejected({ loops: 2 }, UnsupportedArchitectureError, recursive);
    // And the reverse: exporting a model that is not recursive.
    const out = join(workDir, `out-${count++}`);
    await expect(exportUnrolled(sourceDir, out)).rejects.toBeInstanceOf(UnsupportedArchitectureError);
    await expectNoOutput(out);
  });

  it('layers whose shapes disagree, or a missing tensor, named in the error', async () => {
    const tensors = await readAllTensors(sourceDir);
    const bad = join(workDir, `bad-shape-${count++}`);
    await cp(sourceDir, bad, { recursive: true });
    const wrong = 'model.layers.4.mlp.up_proj.weight';
    await writeSafetensors(
      join(bad, 'model.safetensors'),
      [...tensors].map(([name, tensor]) => {
        // Same byte count, transposed shape: only the shape check can catch it.
        const shape = name === wrong ? [...tensor.shape].reverse() : tensor.shape;
        return { name, dtype: 'F32' as const, shape, bytes: new Uint8Array(tensor.values.buffer) };
      }),
    );
    const error = (await expectRejected({ loops: 2 }, SourceCheckpointError, bad)) as SourceCheckpointError;
    expect(error.tensor).toBe(wrong);
    expect(error.message).toContain('[80, 48]');

    const missing = join(workDir, `missing-${count++}`);
    await cp(sourceDir, missing, { recursive: true });
    const gone = 'model.layers.5.self_attn.k_proj.weight';
    await writeSafetensors(
      join(missing, 'model.safetensors'),
      [...tensors]
        .filter(([name]) => name !== gone)
        .map(([name, tensor]) => ({
          name,
          dtype: 'F32' as const,
          shape: tensor.shape,
          bytes: new Uint8Array(tensor.values.buffer),
        })),
    );
    expect(
      ((await expectRejected({ loops: 2 }, SourceCheckpointError, missing)) as SourceCheckpointError).tensor,
    ).toBe(gone);
  });

  it('a source that vanishes or is truncated mid-way', async () => {
    const vanishing = await sourceCopy();
    const error = await expectRejected(
      { loops: 2, ranks: 4, onProgress: ({ done }) => done === 6 && rmSync(vanishing, { recursive: true }) },
      SourceChangedError,
      vanishing,
    );
    expect(error.message).toContain('vanished');

    const truncated = await sourceCopy();
    await expectRejected(
      {
        loops: 2,
        ranks: 4,
        onProgress: ({ done }) => done === 6 && truncateSync(join(truncated, 'model.safetensors'), 4096),
      },
      SourceChangedError,
      truncated,
    );
  });

  it('an existing output path, unless overwriting', async () => {
    const out = join(workDir, `existing-${count++}`);
    await convertToRecursive(sourceDir, out, { loops: 2 });
    await expect(convertToRecursive(sourceDir, out, { loops: 3 })).rejects.toBeInstanceOf(OutputExistsError);
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).recursion.loops).toBe(2);
    await convertToRecursive(sourceDir, out, { loops: 3, overwrite: true });
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).recursion.loops).toBe(3);
    expect((await readdir(workDir)).filter((name) => name.startsWith(`.${basename(out)}.`))).toEqual([]);
  });
});

describe('tensors the decoder does not use', () => {
  it('are reported in a warning and not carried over', async () => {
    const tensors = await readAllTensors(sourceDir);
    const extra = join(workDir, `extra-${count++}`);
    await cp(sourceDir, extra, { recursive: true });
    await writeSafetensors(join(extra, 'model.safetensors'), [
      ...[...tensors].map(([name, tensor]) => ({
        name,
        dtype: 'F32' as const,
        shape: tensor.shape,
        bytes: new Uint8Array(tensor.values.buffer),
      })),
      {
        name: 'model.layers.0.self_attn.rotary_emb.inv_freq',
        dtype: 'F32',
        shape: [4],
        bytes: new Uint8Array(16),
      },
    ]);
    const warnings: string[] = [];
    const out = join(workDir, `out-${count++}`);
    await convertToRecursive(extra, out, { loops: 2, onWarning: (message) => warnings.push(message) });
    expect(warnings.join('\n')).toContain('1 source tensors are not part of the decoder');
    expect(warnings.join('\n')).toContain('rotary_emb.inv_freq');
    expect([...(await readAllTensors(out)).keys()].some((name) => name.includes('rotary'))).toBe(false);
  });
});
