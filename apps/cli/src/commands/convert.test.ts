import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../cli-io.js';
import { convertCommand } from './convert.js';
import { exportCommand } from './export.js';
import { capture } from '../../test/capture.js';

let workDir: string;
let source: string;
beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'rrt-cli-convert-'));
  source = join(workDir, 'source');
  await writeSyntheticCheckpoint(source, {
    modelType: 'llama',
    vocabSize: 50,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 4,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    tieWordEmbeddings: false,
    dtype: 'F32',
    seed: 2,
    layerSpecificity: 0.5,
  });
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('rrt convert / rrt export', () => {
  it('converts with per-group ranks, shows progress and the closing table', async () => {
    const io = capture();
    const out = join(workDir, 'relaxed');
    const code = await convertCommand.run(
      [
        source,
        '--out',
        out,
        '--loops',
        '2',
        '--init',
        'average',
        '--rank',
        '4',
        '--rank-ffn',
        '8',
        '--backend',
        'cpu',
      ],
      io,
    );
    expect(code).toBe(0);
    expect(io.err).toMatch(/convert \[#+\] \d+\/\d+/);
    expect(io.out).toContain('recursive');
    expect(io.out).toMatch(/ffn\s+8\s+0\.\d{4}\s+0\.\d{4}/);
    // Norm folding is the default: the error is measured against W·diag(g_l/g_s), and says so.
    expect(io.out).toContain('T = W·diag(g_l/g_s)');
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.recursion.lora_ranks).toMatchObject({ q_proj: 4, k_proj: 4, gate_proj: 8 });

    const exportIo = capture();
    const unrolled = join(workDir, 'unrolled');
    expect(
      await exportCommand.run([out, '--unroll', '--out', unrolled, '--backend', 'none', '--json'], exportIo),
    ).toBe(0);
    expect(JSON.parse(exportIo.out).numLayers).toBe(4);
  });

  it('--json prints the parameters and errors', async () => {
    const io = capture();
    const out = join(workDir, 'json');
    expect(await convertCommand.run([source, '--out', out, '--loops', '4', '--json'], io)).toBe(0);
    const result = JSON.parse(io.out);
    expect(result.parameters.recursive).toBeLessThan(result.parameters.original);
    expect(result.reconstruction).toHaveLength(4);
  });

  it('--no-fold-norms labels the error against the plain W', async () => {
    const io = capture();
    const out = join(workDir, 'plain');
    expect(await convertCommand.run([source, '--out', out, '--loops', '2', '--no-fold-norms'], io)).toBe(0);
    expect(io.out).toContain('‖W − (W_shared + ΔW)‖_F / ‖W‖_F');
    expect(io.out).not.toContain('diag(g_l/g_s)');
  });

  it('bad arguments are usage errors', async () => {
    const out = join(workDir, 'never');
    for (const args of [
      [source, '--out', out],
      [source, '--loops', '2'],
      [source, '--out', out, '--loops', 'two'],
      [source, '--out', out, '--loops', '3'],
      [source, '--out', out, '--loops', '2', '--rank=-1'],
      [source, '--out', out, '--loops', '2', '--rank-kv', '2.5'],
      [source, '--out', out, '--loops', '2', '--strategy', 'zigzag'],
    ]) {
      await expect(convertCommand.run(args, capture()), args.join(' ')).rejects.toBeInstanceOf(UsageError);
    }
    await expect(exportCommand.run([source, '--out', out], capture())).rejects.toBeInstanceOf(UsageError);
  });
});
