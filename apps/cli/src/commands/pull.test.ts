import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { float32Bytes, readConfig, seededRandom, writeSafetensors } from '@rrt/core';
import { type FakeHub, startFakeHub } from '@rrt/hub/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capture } from '../../test/capture.js';
import { Interruption, UsageError } from '../cli-io.js';
import { inspectCommand } from './inspect.js';
import { pullCommand } from './pull.js';

const REPO = 'tiny/cli-model';
let workDir: string;
let hub: FakeHub;
let weights: Uint8Array;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'rrt-cli-pull-'));
  const random = seededRandom(5);
  const file = join(workDir, 'model.safetensors');
  const values = new Float32Array(20_000).map(() => random() - 0.5);
  await writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [200, 100], bytes: float32Bytes(values) }]);
  weights = new Uint8Array(await readFile(file));
  const config = {
    model_type: 'llama',
    vocab_size: 8,
    hidden_size: 4,
    intermediate_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 1,
  };
  hub = await startFakeHub([
    { repoId: REPO, files: { 'config.json': JSON.stringify(config), 'model.safetensors': weights } },
  ]);
});
afterAll(async () => {
  await hub?.close();
  await rm(workDir, { recursive: true, force: true });
});

describe('rrt pull', () => {
  it('pulls into the cache, shows progress on stderr and the snapshot on stdout', async () => {
    const cacheDir = join(workDir, 'cache-a');
    const io = capture();
    const code = await pullCommand.run([REPO, '--hub-url', hub.url, '--cache-dir', cacheDir, '--json'], io);
    expect(code).toBe(0);
    const pulled = JSON.parse(io.out) as { directory: string; commit: string; files: { outcome: string }[] };
    expect(pulled.commit).toBe(hub.commit(REPO));
    expect(pulled.files.map((file) => file.outcome)).toEqual(['downloaded', 'downloaded']);
    expect(new Uint8Array(await readFile(join(pulled.directory, 'model.safetensors')))).toEqual(weights);
    expect((await readConfig(pulled.directory)).modelType).toBe('llama');
    expect(io.err).toMatch(/^pull \[#+\] \d+\/\d+ bytes model\.safetensors$/m);

    const offline = capture();
    expect(await pullCommand.run([REPO, '--offline', '--cache-dir', cacheDir], offline)).toBe(0);
    expect(offline.out).toContain(`→ ${pulled.directory}`);
    expect(offline.out).toMatch(/model\.safetensors\s+80,\d{3}\s+sha256\s+cached/);
  });

  it('stops on Ctrl-C keeping the partial, and the same command resumes it', async () => {
    const cacheDir = join(workDir, 'cache-b');
    const args = [REPO, '--hub-url', hub.url, '--cache-dir', cacheDir, '--json'];
    hub.stallNextTransfer('model.safetensors', 30_000);
    // The first progress line of the weights file is the moment to press Ctrl-C.
    const controller = new AbortController();
    const io = capture((text) => {
      if (text.includes('model.safetensors')) controller.abort(new Interruption('SIGINT'));
    });
    io.signal = controller.signal;
    expect(await pullCommand.run(args, io)).toBe(130);
    expect(io.err).toContain('interrupted; the partial download is kept');

    const resumed = capture();
    expect(await pullCommand.run(args, resumed)).toBe(0);
    const pulled = JSON.parse(resumed.out) as {
      directory: string;
      files: { path: string; outcome: string }[];
    };
    expect(pulled.files.find((file) => file.path === 'model.safetensors')!.outcome).toBe('resumed');
    expect(hub.transfers.at(-1)).toMatchObject({ path: 'model.safetensors', status: 206 });
    expect(new Uint8Array(await readFile(join(pulled.directory, 'model.safetensors')))).toEqual(weights);
  });

  it('a command that takes a model directory takes a repo id: pulled, then served offline', async () => {
    const cacheDir = join(workDir, 'cache-inspect');
    const online = capture();
    expect(
      await inspectCommand.run([REPO, '--hub-url', hub.url, '--cache-dir', cacheDir, '--json'], online),
    ).toBe(0);
    expect(JSON.parse(online.out).parameters).toBe(20_000);
    expect(online.err).toMatch(new RegExp(`model: ${REPO} → .*models--tiny--cli-model`));
    const transfers = hub.transfers.length;
    const offline = capture();
    expect(await inspectCommand.run([REPO, '--offline', '--cache-dir', cacheDir, '--json'], offline)).toBe(0);
    expect(JSON.parse(offline.out)).toEqual(JSON.parse(online.out));
    expect(hub.transfers.length).toBe(transfers);
  });

  it('offline with an empty cache fails naming what is missing; a bad repo id is a usage error', async () => {
    const io = capture();
    const error = await pullCommand
      .run([REPO, '--offline', '--cache-dir', join(workDir, 'cache-empty')], io)
      .catch((caught: unknown) => caught);
    expect((error as Error).name).toBe('HubOfflineError');
    expect((error as Error).message).toContain('models--tiny--cli-model (this repository was never pulled)');
    await expect(pullCommand.run([], capture())).rejects.toThrow(UsageError);
    await expect(pullCommand.run(['a/b/c'], capture())).rejects.toThrow(UsageError);
  });
});
