import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { tempDir } from './test-support.js';
import { writeSyntheticCheckpoint } from './testing/index.js';

const packageRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
const repoRoot = resolve(packageRoot, '../..');

let workDir: string;
beforeAll(async () => {
  workDir = await tempDir('interrupt');
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

it('a conversion killed mid-way (SIGKILL) leaves nothing at the output path', async () => {
  const sourceDir = join(workDir, 'source');
  // Large enough that the exact SVDs of 4 × 7 × 2 LoRAs take seconds, so the kill lands mid-way.
  await writeSyntheticCheckpoint(sourceDir, {
    modelType: 'llama',
    vocabSize: 256,
    hiddenSize: 192,
    intermediateSize: 512,
    numHiddenLayers: 8,
    numAttentionHeads: 4,
    numKeyValueHeads: 4,
    tieWordEmbeddings: false,
    dtype: 'F32',
    seed: 9,
  });
  const out = join(workDir, 'out');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(packageRoot, 'test/convert-child.ts'), sourceDir, out, '2', '192'],
    { cwd: repoRoot, env: { ...process.env, TSX_TSCONFIG_PATH: join(packageRoot, 'test/tsconfig.json') } },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.on('exit', (code, signal) => done({ code, signal })),
  );
  let killedAt = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    // Kill once the writer is a few module groups in: tensors are on disk, the output is incomplete.
    const match = /progress (\d+)\/(\d+)\n(?![\s\S]*progress)/.exec(stdout);
    if (match && Number(match[1]) >= 8 && !killedAt) {
      killedAt = match[0].trim();
      child.kill('SIGKILL');
    }
  });
  const { signal } = await exit;
  expect(
    signal,
    `child did not get killed; stdout: ${stdout.slice(-200)} stderr: ${stderr.slice(-500)}`,
  ).toBe('SIGKILL');
  const [done, total] = killedAt.replace('progress ', '').split('/').map(Number);
  expect(done!).toBeLessThan(total!);
  expect(stdout).not.toContain('done');
  expect(existsSync(out)).toBe(false);
  // What is left is the hidden temporary directory, partly written: never the output path.
  const leftovers = (await readdir(workDir)).filter((name) => name.startsWith('.out.rrt-tmp-'));
  expect(leftovers.length).toBe(1);
}, 120_000);
