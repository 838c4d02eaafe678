import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBackend } from '@rrt/backend-tfjs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { train } from '../src/index.js';
import { resumableRun, tempDir, writeTinyModels } from './support.js';

const packageRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
const repoRoot = resolve(packageRoot, '../..');

let workDir: string;
let dirs: Awaited<ReturnType<typeof writeTinyModels>>;
beforeAll(async () => {
  workDir = await tempDir('kill');
  dirs = await writeTinyModels(workDir);
});
afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

it('a run killed with SIGKILL mid-way and resumed gives the losses and weights of an uninterrupted run (wasm)', async () => {
  const { backend } = await createBackend('wasm');
  const whole = await train(backend, resumableRun(dirs, join(workDir, 'whole')));

  const outDir = join(workDir, 'killed');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(packageRoot, 'test/train-child.ts'),
      dirs.originalDir,
      dirs.relaxedDir,
      outDir,
      'wasm',
    ],
    { cwd: repoRoot, env: { ...process.env, TSX_TSCONFIG_PATH: join(packageRoot, 'test/tsconfig.json') } },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exit = new Promise<NodeJS.Signals | null>((done) =>
    child.on('exit', (_code, signal) => done(signal)),
  );
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    // Kill right after step 3 is reported: step 2's checkpoint is on disk, step 4's not yet.
    if (stdout.includes('step 3\n')) child.kill('SIGKILL');
  });
  expect(await exit, `child was not killed; stdout ${stdout.slice(-200)} stderr ${stderr.slice(-500)}`).toBe(
    'SIGKILL',
  );
  expect(stdout).not.toContain('done');

  const resumed = await train(backend, { ...resumableRun(dirs, outDir), resume: true });
  expect(resumed.resumedFrom).toBeGreaterThan(0);
  expect(resumed.resumedFrom).toBeLessThan(6);
  expect(resumed.losses).toEqual(whole.losses);
  const [a, b] = await Promise.all([
    readFile(join(workDir, 'whole', 'model.safetensors')),
    readFile(join(outDir, 'model.safetensors')),
  ]);
  expect(Buffer.compare(a, b)).toBe(0);
}, 120_000);
