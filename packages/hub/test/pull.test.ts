import { lstat, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { float32Bytes, openCheckpoint, readConfig, seededRandom, writeShardedCheckpoint } from '@rrt/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  findCachedSnapshot,
  HubChecksumError,
  HubOfflineError,
  HubRequestError,
  HubTransferError,
  type PullProgress,
  parseRepoReference,
  pullModel,
  RepoReferenceError,
  repoCachePaths,
  resolveHubOptions,
  resolveModelReference,
} from '../src/index.js';
import { type FakeHub, startFakeHub } from '../src/testing/index.js';

const REPO = 'tiny-org/tiny-llama';
const TOKEN = 'hf_test_token_0123456789';

/** A tiny Llama checkpoint written by @rrt/core's sharded writer, as the files of a Hub repo. */
async function tinyModelFiles(workDir: string): Promise<Record<string, Uint8Array | string>> {
  const dir = join(workDir, 'source');
  const random = seededRandom(11);
  const tensor = (name: string, shape: number[]) => {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1)).map(() => random() - 0.5);
    return { name, dtype: 'F32' as const, shape, bytes: float32Bytes(values) };
  };
  const tensors = [tensor('model.embed_tokens.weight', [64, 32])];
  for (let layer = 0; layer < 2; layer++) {
    const prefix = `model.layers.${layer}`;
    tensors.push(
      tensor(`${prefix}.input_layernorm.weight`, [32]),
      tensor(`${prefix}.self_attn.q_proj.weight`, [32, 32]),
      tensor(`${prefix}.self_attn.k_proj.weight`, [16, 32]),
      tensor(`${prefix}.self_attn.v_proj.weight`, [16, 32]),
      tensor(`${prefix}.self_attn.o_proj.weight`, [32, 32]),
      tensor(`${prefix}.post_attention_layernorm.weight`, [32]),
      tensor(`${prefix}.mlp.gate_proj.weight`, [64, 32]),
      tensor(`${prefix}.mlp.up_proj.weight`, [64, 32]),
      tensor(`${prefix}.mlp.down_proj.weight`, [32, 64]),
    );
  }
  tensors.push(tensor('model.norm.weight', [32]), tensor('lm_head.weight', [64, 32]));
  const written = await writeShardedCheckpoint(dir, tensors, { maxShardBytes: 40_000 });
  const files: Record<string, Uint8Array | string> = {
    'config.json': JSON.stringify({
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 64,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 128,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: false,
    }),
    'tokenizer.json': JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: {}, merges: [] } }),
    'README.md': '# tiny llama\n',
    // What a default pull leaves on the Hub: pickled weights, a duplicate the index does not name, ONNX.
    'pytorch_model.bin': new Uint8Array(1000).fill(7),
    'consolidated.safetensors': new Uint8Array(2000).fill(9),
    'onnx/model.onnx': new Uint8Array(500).fill(3),
  };
  for (const file of [...written.files, written.indexFile!]) {
    files[file.slice(dir.length + 1)] = new Uint8Array(await readFile(file));
  }
  return files;
}

let workDir: string;
let files: Record<string, Uint8Array | string>;
let hub: FakeHub;
let shards: string[];
let cacheCount = 0;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'rrt-hub-'));
  files = await tinyModelFiles(workDir);
  shards = Object.keys(files).filter((path) => /^model-\d+-of-\d+\.safetensors$/.test(path));
  hub = await startFakeHub(
    [
      { repoId: REPO, files, refs: ['v1', 'refs/pr/1'] },
      { repoId: 'tiny-org/pickled', files: { 'config.json': '{}', 'pytorch_model.bin': 'not safetensors' } },
    ],
    { token: TOKEN },
  );
});
afterAll(async () => {
  await hub?.close();
  await rm(workDir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
  hub.ignoreRanges = false;
});

/** A fresh cache directory and the options that reach the fake Hub with the token from the environment. */
function freshOptions() {
  const cacheDir = join(workDir, `cache-${cacheCount++}`);
  return { cacheDir, hubUrl: hub.url, env: { HF_TOKEN: TOKEN }, retryDelayMs: 0 };
}

function bytesOf(path: string): Uint8Array {
  const contents = files[path]!;
  return typeof contents === 'string' ? new TextEncoder().encode(contents) : contents;
}

/**
 * Stalls the next transfer of `path` after `bytes` and returns a progress callback that cuts the
 * connection once the client has those bytes on disk: an interruption at an exact byte.
 */
function cutAt(path: string, bytes: number): (progress: PullProgress) => void {
  hub.stallNextTransfer(path, bytes);
  return (progress) => {
    if (progress.file === path && progress.fileBytes === bytes) hub.cutStalledTransfers();
  };
}

async function listTree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

describe('parseRepoReference and resolveHubOptions', () => {
  it('reads owner/name@revision and refuses what the Hub would', () => {
    expect(parseRepoReference('Qwen/Qwen3-0.6B')).toEqual({ repoId: 'Qwen/Qwen3-0.6B', revision: 'main' });
    expect(parseRepoReference('gpt2@refs/pr/1')).toEqual({ repoId: 'gpt2', revision: 'refs/pr/1' });
    for (const bad of ['a/b/c', 'a--b/c', '-a/b', 'a/b.', 'a/b@', 'a/b@../x', './model', '/abs/path', '']) {
      expect(() => parseRepoReference(bad), bad).toThrow(RepoReferenceError);
    }
  });

  it('takes the cache, endpoint, offline flag and token from the environment unless told', () => {
    const env = { HF_HOME: '/h', HF_HUB_OFFLINE: '1', HF_TOKEN: 'hf_x', HF_ENDPOINT: 'http://mirror/' };
    expect(resolveHubOptions({ env })).toEqual({
      cacheDir: join('/h', 'hub'),
      hubUrl: 'http://mirror',
      offline: true,
      token: 'hf_x',
    });
    expect(resolveHubOptions({ env: { ...env, RRT_CACHE: '/r' } }).cacheDir).toBe('/r');
    expect(resolveHubOptions({ env, cacheDir: '/c', offline: false })).toMatchObject({
      cacheDir: '/c',
      offline: false,
    });
    expect(resolveHubOptions({ env: { XDG_CACHE_HOME: '/x', HF_HUB_OFFLINE: '0' } })).toMatchObject({
      cacheDir: join('/x', 'huggingface', 'hub'),
      offline: false,
      hubUrl: 'https://huggingface.co',
    });
  });
});

describe('pullModel against a local fake Hub', () => {
  it('pulls config, tokenizer and the indexed shards, verified, into the huggingface_hub layout', async () => {
    const options = freshOptions();
    const progress: PullProgress[] = [];
    const pulled = await pullModel(REPO, { ...options, onProgress: (event) => progress.push(event) });
    const commit = hub.commit(REPO);
    expect(pulled.commit).toBe(commit);
    const paths = repoCachePaths(options.cacheDir, REPO);
    expect(pulled.directory).toBe(join(paths.snapshots, commit));
    const wanted = ['config.json', 'model.safetensors.index.json', ...shards, 'tokenizer.json'].sort();
    expect(shards.length).toBeGreaterThanOrEqual(2);
    expect(await listTree(pulled.directory)).toEqual(wanted);
    for (const path of wanted) {
      expect(new Uint8Array(await readFile(join(pulled.directory, path))), path).toEqual(bytesOf(path));
      // Snapshot entries are relative symlinks into blobs/, as huggingface_hub makes them.
      expect((await lstat(join(pulled.directory, path))).isSymbolicLink()).toBe(true);
      expect(await readlink(join(pulled.directory, path))).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/);
    }
    expect((await readFile(join(paths.refs, 'main'), 'utf8')).trim()).toBe(commit);
    expect(pulled.files!.every((file) => file.outcome === 'downloaded')).toBe(true);
    const total = wanted.reduce((sum, path) => sum + bytesOf(path).length, 0);
    expect(pulled.downloadedBytes).toBe(total);
    // The snapshot is a model directory that @rrt/core reads.
    expect((await readConfig(pulled.directory)).modelType).toBe('llama');
    const checkpoint = await openCheckpoint(pulled.directory);
    expect(checkpoint.entries.size).toBe(21);
    await checkpoint.close();
    // Progress only grows and ends at the total; the token reached the API.
    const bytes = progress.map((event) => event.bytes);
    expect(bytes).toEqual([...bytes].sort((a, b) => a - b));
    expect(progress.at(-1)).toMatchObject({ bytes: total, totalBytes: total, filesDone: wanted.length });
    expect(
      hub.requests.filter((request) => request.url.startsWith('/api/')).map((r) => r.authorization),
    ).toContain(`Bearer ${TOKEN}`);
  });

  it('fetches nothing again when the snapshot is complete, and no request at all for a pinned commit', async () => {
    const options = freshOptions();
    await pullModel(`${REPO}@v1`, options);
    const transfersBefore = hub.transfers.length;
    const again = await pullModel(`${REPO}@v1`, options);
    expect(again.files!.every((file) => file.outcome === 'cached')).toBe(true);
    expect(again.downloadedBytes).toBe(0);
    expect(hub.transfers.length).toBe(transfersBefore);
    const connections = hub.connections();
    const pinned = await pullModel(`${REPO}@${hub.commit(REPO)}`, options);
    expect(pinned.directory).toBe(again.directory);
    expect(hub.connections()).toBe(connections);
  });

  it('resumes with a Range request after the connection is cut mid-file', async () => {
    const options = { ...freshOptions(), retries: 0 };
    const shard = shards[0]!;
    const size = bytesOf(shard).length;
    const error = await pullModel(REPO, { ...options, onProgress: cutAt(shard, 10_000) }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(HubTransferError);
    expect((error as HubTransferError).file).toBe(shard);
    const paths = repoCachePaths(options.cacheDir, REPO);
    const blobs = await readdir(paths.blobs);
    const partials = blobs.filter((name) => name.endsWith('.incomplete'));
    expect(partials).toHaveLength(1);
    const partialSize = (await stat(join(paths.blobs, partials[0]!))).size;
    expect(partialSize).toBe(10_000);
    expect((error as HubTransferError).receivedBytes).toBe(10_000);

    const resumed = await pullModel(REPO, options);
    expect(resumed.files!.find((file) => file.path === shard)!.outcome).toBe('resumed');
    expect(hub.transfers.at(-shards.length)).toMatchObject({
      path: shard,
      range: 'bytes=10000-',
      status: 206,
      bytes: size - 10_000,
    });
    expect(new Uint8Array(await readFile(join(resumed.directory, shard)))).toEqual(bytesOf(shard));
    expect((await readdir(paths.blobs)).filter((name) => name.endsWith('.incomplete'))).toEqual([]);
  });

  it('retries a dropped connection within one pull, from where it stopped', async () => {
    const options = freshOptions();
    const shard = shards[1]!;
    const before = hub.transfers.length;
    const pulled = await pullModel(REPO, { ...options, onProgress: cutAt(shard, 5_000) });
    const transfers = hub.transfers.slice(before).filter((transfer) => transfer.path === shard);
    expect(transfers).toHaveLength(2);
    expect(transfers[0]!.range).toBeUndefined();
    expect(transfers[1]).toMatchObject({ range: 'bytes=5000-', status: 206 });
    expect(new Uint8Array(await readFile(join(pulled.directory, shard)))).toEqual(bytesOf(shard));
  });

  it('starts the file over when the server ignores the Range header', async () => {
    const options = { ...freshOptions(), retries: 0 };
    const shard = shards[0]!;
    await expect(pullModel(REPO, { ...options, onProgress: cutAt(shard, 8_000) })).rejects.toThrow(
      HubTransferError,
    );
    hub.ignoreRanges = true;
    const pulled = await pullModel(REPO, options);
    expect(hub.transfers.filter((transfer) => transfer.path === shard).at(-1)).toMatchObject({ status: 200 });
    expect(new Uint8Array(await readFile(join(pulled.directory, shard)))).toEqual(bytesOf(shard));
  });

  it('leaves only a resumable partial when aborted, which offline mode reports and a pull resumes', async () => {
    const options = freshOptions();
    const shard = shards[0]!;
    const size = bytesOf(shard).length;
    hub.stallNextTransfer(shard, 12_000);
    const controller = new AbortController();
    const aborted = pullModel(REPO, {
      ...options,
      signal: controller.signal,
      onProgress: (event) => {
        if (event.file === shard && event.fileBytes > 0 && event.fileBytes < size) controller.abort();
      },
    });
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
    const paths = repoCachePaths(options.cacheDir, REPO);
    const snapshot = join(paths.snapshots, hub.commit(REPO));
    await expect(stat(join(snapshot, shard))).rejects.toThrow();
    const partials = (await readdir(paths.blobs)).filter((name) => name.endsWith('.incomplete'));
    expect(partials).toHaveLength(1);
    const partialSize = (await stat(join(paths.blobs, partials[0]!))).size;

    const offline = await pullModel(REPO, { ...options, offline: true }).catch((caught: unknown) => caught);
    expect(offline).toBeInstanceOf(HubOfflineError);
    expect((offline as HubOfflineError).missing).toContain(
      `${shard} (partial: ${partialSize} of ${size} bytes)`,
    );
    expect((offline as Error).message).toContain(`rrt pull ${REPO}@main`);

    const resumed = await pullModel(REPO, options);
    expect(resumed.files!.find((file) => file.path === shard)!.outcome).toBe('resumed');
    expect(new Uint8Array(await readFile(join(resumed.directory, shard)))).toEqual(bytesOf(shard));
  });

  it.each([
    ['an LFS shard', () => shards[0]!, 'sha256'],
    ['a plain git file', () => 'config.json', 'git-sha1'],
  ])('refuses a checksum mismatch in %s and caches nothing of it', async (_, pathOf, check) => {
    const options = freshOptions();
    const path = pathOf();
    hub.corruptNextTransfer(path);
    const error = await pullModel(REPO, options).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(HubChecksumError);
    expect(error).toMatchObject({ file: path, check });
    const paths = repoCachePaths(options.cacheDir, REPO);
    await expect(stat(join(paths.snapshots, hub.commit(REPO), path))).rejects.toThrow();
    const blobs = await readdir(paths.blobs);
    expect(blobs.filter((name) => name.endsWith('.incomplete'))).toEqual([]);
    // The fault was one-shot: the next pull gets the true bytes.
    const pulled = await pullModel(REPO, options);
    expect(new Uint8Array(await readFile(join(pulled.directory, path)))).toEqual(bytesOf(path));
  });

  it('takes a revision with slashes (a pull request ref) and records its ref', async () => {
    const options = freshOptions();
    const pulled = await pullModel(`${REPO}@refs/pr/1`, options);
    expect(pulled.commit).toBe(hub.commit(REPO));
    const ref = join(repoCachePaths(options.cacheDir, REPO).refs, 'refs', 'pr', '1');
    expect((await readFile(ref, 'utf8')).trim()).toBe(hub.commit(REPO));
  });

  it('refuses a repo without safetensors weights before downloading anything', async () => {
    const before = hub.transfers.length;
    await expect(pullModel('tiny-org/pickled', freshOptions())).rejects.toThrow(
      /has no safetensors weights at [0-9a-f]{40} \(it has pytorch_model\.bin\); rrt reads safetensors only/,
    );
    expect(hub.transfers.length).toBe(before);
  });

  it('says which repo failed, and why, without a token', async () => {
    const error = await pullModel(REPO, { ...freshOptions(), env: {} }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(HubRequestError);
    expect(error).toMatchObject({ repoId: REPO, status: 401 });
  });
});

describe('offline mode', () => {
  /** Counts sockets that try to connect anywhere, from this process. */
  function spyOnConnect() {
    return vi.spyOn(net.Socket.prototype, 'connect');
  }

  it('the socket spy sees the connections a pull makes (so its zero below means something)', async () => {
    // A Hub of its own: fetch keeps connections to the shared one alive, and would reuse them.
    const ownHub = await startFakeHub([{ repoId: REPO, files }]);
    try {
      const connect = spyOnConnect();
      await pullModel(REPO, { ...freshOptions(), hubUrl: ownHub.url });
      expect(connect).toHaveBeenCalled();
      expect(ownHub.connections()).toBeGreaterThan(0);
    } finally {
      await ownHub.close();
    }
  });

  it('opens no socket and names what is missing when nothing is cached', async () => {
    const options = freshOptions();
    const connect = spyOnConnect();
    const connections = hub.connections();
    const error = await pullModel(REPO, { ...options, env: { ...options.env, HF_HUB_OFFLINE: '1' } }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(HubOfflineError);
    expect((error as HubOfflineError).missing).toEqual([
      'models--tiny-org--tiny-llama (this repository was never pulled)',
    ]);
    expect(connect).not.toHaveBeenCalled();
    expect(hub.connections()).toBe(connections);
  });

  it('serves a pulled snapshot with no socket opened, by env or option, and through resolveModelReference', async () => {
    const options = freshOptions();
    const pulled = await pullModel(REPO, options);
    const connect = spyOnConnect();
    const connections = hub.connections();
    const byEnv = await pullModel(REPO, { ...options, env: { HF_HUB_OFFLINE: 'true' } });
    expect(byEnv.directory).toBe(pulled.directory);
    expect(byEnv.files!.map((file) => file.path).sort()).toEqual(
      pulled.files!.map((file) => file.path).sort(),
    );
    const resolved = await resolveModelReference(REPO, { ...options, offline: true });
    expect(resolved).toEqual({
      directory: pulled.directory,
      source: { kind: 'hub', repoId: REPO, revision: 'main', commit: hub.commit(REPO) },
    });
    const missingRevision = await pullModel(`${REPO}@v1`, { ...options, offline: true }).catch(
      (caught) => caught,
    );
    expect((missingRevision as HubOfflineError).missing).toEqual([
      'refs/v1 (this revision was never pulled)',
    ]);
    expect(connect).not.toHaveBeenCalled();
    expect(hub.connections()).toBe(connections);
  });

  it('reads a snapshot another tool pulled (no rrt manifest) and names the shard it lacks', async () => {
    const options = freshOptions();
    const pulled = await pullModel(REPO, options);
    const paths = repoCachePaths(options.cacheDir, REPO);
    await rm(paths.manifests, { recursive: true });
    expect((await findCachedSnapshot(options.cacheDir, REPO, 'main')).directory).toBe(pulled.directory);
    await rm(join(pulled.directory, shards[1]!));
    await expect(findCachedSnapshot(options.cacheDir, REPO, 'main')).rejects.toMatchObject({
      missing: [shards[1]],
    });
  });
});

describe('resolveModelReference', () => {
  it('takes an existing directory as it is, and a repo id by pulling it', async () => {
    expect(await resolveModelReference(workDir)).toEqual({ directory: workDir, source: { kind: 'path' } });
    const options = freshOptions();
    const resolved = await resolveModelReference(`${REPO}@main`, options);
    expect(resolved.source).toMatchObject({ kind: 'hub', commit: hub.commit(REPO) });
    expect((await readConfig(resolved.directory)).modelType).toBe('llama');
  });

  it('says both readings failed for a missing path that is also not on the Hub', async () => {
    await expect(resolveModelReference('./no/such/dir', freshOptions())).rejects.toThrow(
      /no such file or directory, and not a Hub repo id/,
    );
    await expect(resolveModelReference('models/missing', freshOptions())).rejects.toThrow(
      /no such file or directory, and the Hub has no model repo models\/missing@main .*HTTP 404/,
    );
  });
});
