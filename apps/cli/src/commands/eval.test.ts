import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { importLlama2c } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../cli-io.js';
import { evalCommand } from './eval.js';
import { capture } from '../../test/capture.js';

describe('rrt eval: flags', () => {
  it('rejects missing and contradictory flags as usage errors', async () => {
    await expect(evalCommand.run([], capture())).rejects.toThrow(UsageError);
    await expect(evalCommand.run(['model'], capture())).rejects.toThrow(/--text/);
    await expect(
      evalCommand.run(['model', '--text', 'a.txt', '--protocol', 'chunks'], capture()),
    ).rejects.toThrow(/documents, window/);
    await expect(evalCommand.run(['model', '--text', 'a.txt', '--window', '64'], capture())).rejects.toThrow(
      /belong to --protocol window/,
    );
    await expect(
      evalCommand.run(['model', '--text', 'a.txt', '--protocol', 'window', '--stride', '0'], capture()),
    ).rejects.toThrow(UsageError);
  });
});

const repoRoot = fileURLToPath(new URL('../../../..', import.meta.url));
const assets = resolve(repoRoot, '../shared/assets');
const haveAssets = existsSync(join(assets, 'stories260K/stories260K.bin'));

describe.skipIf(!haveAssets)(
  haveAssets ? 'rrt eval on stories260K' : 'rrt eval on stories260K (skipped: ../shared/assets is absent)',
  () => {
    let workDir: string;
    let modelDir: string;
    let textFile: string;
    beforeAll(async () => {
      workDir = await mkdtemp(join(tmpdir(), 'rrt-cli-eval-'));
      modelDir = join(workDir, 'stories260K');
      await importLlama2c({
        checkpointPath: join(assets, 'stories260K/stories260K.bin'),
        tokenizerPath: join(assets, 'stories260K/tok512.bin'),
        outDir: modelDir,
      });
      const text = await readFile(join(assets, 'text/tinystories_val.txt'), 'utf8');
      textFile = join(workDir, 'few.txt');
      await writeFile(textFile, text.split('\n\n').slice(0, 6).join('\n\n'));
    });
    afterAll(async () => {
      if (workDir) await rm(workDir, { recursive: true, force: true });
    });

    it('prints JSON with the result and the cost, and --max-tokens scores exactly that many', async () => {
      const io = capture();
      const code = await evalCommand.run(
        [modelDir, '--text', textFile, '--backend', 'wasm', '--json', '--max-tokens', '100'],
        io,
      );
      expect(code).toBe(0);
      const output = JSON.parse(io.out);
      expect(output.result.protocol).toBe('documents');
      expect(output.result.tokens).toBe(100);
      expect(output.result.perplexity).toBeGreaterThan(1);
      expect(output.result.perplexity).toBeLessThan(50);
      expect(output.cost.parameters.total).toBe(260_032);
      expect(output.storage.byDtype.F32.bytes).toBe(4 * 260_032);
    });

    it('window protocol with a table on stdout, progress on stderr and a report directory', async () => {
      const io = capture();
      const report = join(workDir, 'report');
      const code = await evalCommand.run(
        [
          modelDir,
          '--text',
          textFile,
          '--backend',
          'wasm',
          '--protocol',
          'window',
          '--window',
          '128',
          '--stride',
          '64',
          '--report',
          report,
        ],
        io,
      );
      expect(code).toBe(0);
      expect(io.out).toMatch(/window protocol, window 128, stride 64/);
      expect(io.out).toMatch(/perplexity \d+\.\d{4} over [\d,]+ tokens in \d+ windows/);
      expect(io.err).toMatch(/eval \[#+\] \d+\/\d+ tokens/);
      expect((await readdir(report)).sort()).toEqual([
        'parameters-vs-perplexity.svg',
        'report.json',
        'report.md',
      ]);
      expect(await readFile(join(report, 'report.md'), 'utf8')).toMatch(
        /\| stories260K \| — \| \d+\.\d{3} \|/,
      );
    });
  },
);
