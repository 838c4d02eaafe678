import { readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { HubApiError, type ListFileEntry, listFiles, modelInfo } from '@huggingface/hub';
import {
  exists,
  findCachedSnapshot,
  linkSnapshotFile,
  type RepoCachePaths,
  repoCachePaths,
  type SnapshotFile,
  writeManifest,
  writeRef,
} from './cache.js';
import { HubOfflineError, HubRequestError, RepoReferenceError } from './errors.js';
import { type HubOptions, type ResolvedHubOptions, resolveHubOptions } from './options.js';
import { isCommitHash, parseRepoReference, type RepoReference } from './reference.js';
import { type TransferOutcome, transferBlob } from './transfer.js';

/**
 * The files a pull takes unless told otherwise: the top-level JSON files (config, tokenizer, generation
 * config, the safetensors index), the safetensors weights, and the other tokenizer formats. Pickled
 * `*.bin` / `*.pth` weights, ONNX, GGUF and subfolders are left on the Hub.
 */
export const DEFAULT_INCLUDE: readonly string[] = [
  '*.json',
  '*.safetensors',
  'tokenizer.model',
  '*.tiktoken',
  '*.txt',
];

/** Where a pull stands; passed to {@link PullOptions.onProgress} after every chunk written. */
export interface PullProgress {
  /** The file being transferred. */
  readonly file: string;
  /** Bytes of that file on disk. */
  readonly fileBytes: number;
  /** That file's size. */
  readonly fileSize: number;
  /** Bytes of all chosen files on disk (cached ones count as done). */
  readonly bytes: number;
  /** Bytes of all chosen files. */
  readonly totalBytes: number;
  /** Files complete. */
  readonly filesDone: number;
  /** Files chosen. */
  readonly files: number;
}

/** Options of {@link pullModel}: where the Hub and cache are, plus what to fetch and how. */
export interface PullOptions extends HubOptions {
  /** The revision, when the reference has no `@revision`. Default `main`. */
  revision?: string;
  /**
   * Glob patterns (`*` within a path segment, `**` across them) of the files to take. Default
   * {@link DEFAULT_INCLUDE}, which also drops safetensors files the index does not name (the
   * `consolidated.safetensors` duplicates some repos carry).
   */
  include?: readonly string[];
  /** Progress after every chunk written. */
  onProgress?: (progress: PullProgress) => void;
  /** Stops the pull; partial downloads stay resumable. */
  signal?: AbortSignal;
  /** Further attempts for a file after a dropped connection or a 5xx answer. Default 3. */
  retries?: number;
  /** The wait before the first retry in ms, doubled for each further one. Default 1000. */
  retryDelayMs?: number;
}

/** One file of a finished pull. */
export interface PulledFile extends SnapshotFile {
  /** How it got into the cache. */
  readonly outcome: TransferOutcome;
}

/** A model repository at one commit, complete in the local cache. */
export interface PulledModel {
  /** The snapshot directory: pass it to anything that takes a model directory. */
  readonly directory: string;
  /** The repository. */
  readonly repoId: string;
  /** The revision asked for. */
  readonly revision: string;
  /** The commit it resolved to. */
  readonly commit: string;
  /** The files chosen; `undefined` offline for a snapshot that another tool pulled. */
  readonly files: readonly PulledFile[] | undefined;
  /** Bytes fetched over the network by this call. */
  readonly downloadedBytes: number;
}

/** Reads the reference and the `revision` option as one {@link RepoReference}. */
function referenceOf(reference: string | RepoReference, revision: string | undefined): RepoReference {
  const text = typeof reference === 'string' ? reference : `${reference.repoId}@${reference.revision}`;
  const named = typeof reference !== 'string' || reference.includes('@');
  const parsed = parseRepoReference(text);
  if (revision === undefined) return parsed;
  if (named && parsed.revision !== revision) {
    throw new RepoReferenceError(
      text,
      `names revision ${parsed.revision} but the revision option is ${revision}`,
    );
  }
  return parseRepoReference(`${parsed.repoId}@${revision}`);
}

/** A glob as a regular expression over the whole path: `**` crosses `/`, `*` and `?` do not. */
function globPattern(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const char = glob[i]!;
    if (char === '*' && glob[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (char === '*') source += '[^/]*';
    else if (char === '?') source += '[^/]';
    else source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** The Hub's listing entry as a file to fetch, with the digest it will be checked against. */
function snapshotFileOf(repoId: string, entry: ListFileEntry): SnapshotFile {
  // Xet-backed files still carry their LFS SHA-256 in the listing, so one check fits both. One with a
  // xet hash alone has no digest we can compute (its `oid` is the pointer's): refuse rather than guess.
  if (entry.xetHash && !entry.lfs) {
    const problem = `the Hub listed ${entry.path} with a xet hash only, and rrt checks files by SHA-256`;
    throw new HubRequestError(repoId, entry.path, undefined, problem);
  }
  if (entry.lfs) return { path: entry.path, size: entry.lfs.size, hash: entry.lfs.oid, algorithm: 'sha256' };
  if (entry.oid) return { path: entry.path, size: entry.size, hash: entry.oid, algorithm: 'git-sha1' };
  throw new HubRequestError(
    repoId,
    entry.path,
    undefined,
    `the Hub listed ${entry.path} without a hash to check it by`,
  );
}

/** Rejects listed paths that would leave the snapshot directory once joined onto it. */
function checkRelativePath(repoId: string, path: string): void {
  const normal = posix.normalize(path);
  if (
    path.startsWith('/') ||
    normal.startsWith('../') ||
    normal === '..' ||
    path.includes('\\') ||
    path.includes('\0')
  ) {
    throw new HubRequestError(
      repoId,
      path,
      undefined,
      `the Hub listed a file path outside the repository: ${path}`,
    );
  }
}

/** Wraps the client's errors (and network failures) into {@link HubRequestError}s naming the repo. */
async function hubCall<T>(
  repoId: string,
  what: string,
  signal: AbortSignal | undefined,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof HubApiError) {
      const hint =
        error.statusCode === 401 || error.statusCode === 403 || error.statusCode === 404
          ? 'not found, or gated or private (set HF_TOKEN for those)'
          : error.message;
      throw new HubRequestError(repoId, error.url, error.statusCode, `${what}: ${hint}`, { cause: error });
    }
    if (error instanceof HubRequestError) throw error;
    throw new HubRequestError(repoId, what, undefined, `${what}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** The files of the listing a pull takes, in listing order. */
async function chooseFiles(
  entries: readonly SnapshotFile[],
  include: readonly string[] | undefined,
  readIndex: (file: SnapshotFile) => Promise<Record<string, string> | undefined>,
): Promise<SnapshotFile[]> {
  const patterns = (include ?? DEFAULT_INCLUDE).map(globPattern);
  const chosen = entries.filter((entry) => patterns.some((pattern) => pattern.test(entry.path)));
  if (include !== undefined) return chosen;
  // By default the weights are the ones the index names, or model.safetensors when there is no index.
  const index = chosen.find((file) => file.path === 'model.safetensors.index.json');
  let weights: Set<string> | undefined;
  if (index) {
    const weightMap = await readIndex(index);
    if (weightMap) weights = new Set(Object.values(weightMap));
  } else if (chosen.some((file) => file.path === 'model.safetensors')) {
    weights = new Set(['model.safetensors']);
  }
  return weights === undefined
    ? chosen
    : chosen.filter((file) => !file.path.endsWith('.safetensors') || weights.has(file.path));
}

/**
 * Downloads a model repository's files (config, tokenizer, safetensors shards) at one revision into
 * the local cache and returns the snapshot directory. Files already cached are not fetched again; an
 * interrupted download resumes from its `.incomplete` partial; every file is checked against the hash
 * the Hub lists before it enters the cache. Offline (`offline` or `HF_HUB_OFFLINE=1`) it opens no
 * socket: it returns the cached snapshot or throws {@link HubOfflineError} naming what is missing.
 *
 * The Hub's API (revision → commit, the file listing with sizes and hashes) goes through
 * `@huggingface/hub`; the bytes through `fetch` with Range requests (see transfer.ts for why).
 *
 * @throws {@link RepoReferenceError}, {@link HubRequestError}, {@link HubTransferError},
 * {@link HubChecksumError}, {@link HubOfflineError}; `signal.reason` when aborted
 * @example
 * ```ts
 * const { directory } = await pullModel('Qwen/Qwen3-0.6B', { onProgress: (p) => console.log(p.bytes, p.totalBytes) });
 * const model = await loadModel(directory, backend);
 * ```
 */
export async function pullModel(
  reference: string | RepoReference,
  options: PullOptions = {},
): Promise<PulledModel> {
  const { repoId, revision } = referenceOf(reference, options.revision);
  const hub = resolveHubOptions(options);
  if (hub.offline) {
    const cached = await findCachedSnapshot(hub.cacheDir, repoId, revision);
    return {
      ...cached,
      repoId,
      revision,
      files: cached.files?.map((file) => ({ ...file, outcome: 'cached' as const })),
      downloadedBytes: 0,
    };
  }
  // A pinned commit already complete needs no request at all.
  if (isCommitHash(revision)) {
    const cached = await findCachedSnapshot(hub.cacheDir, repoId, revision).catch((error: unknown) => {
      if (error instanceof HubOfflineError) return undefined;
      throw error;
    });
    if (cached?.files) {
      const files = cached.files.map((file) => ({ ...file, outcome: 'cached' as const }));
      return { ...cached, repoId, revision, files, downloadedBytes: 0 };
    }
  }
  return pullOnline(repoId, revision, hub, options);
}

/** The client's parameters every call of one pull shares. */
interface ClientParams {
  readonly hubUrl: string;
  readonly fetch: typeof fetch;
  readonly accessToken: string | undefined;
}

/** The commit `revision` points to on the Hub (a commit hash is its own answer). */
async function resolveCommit(
  repoId: string,
  revision: string,
  client: ClientParams,
  signal: AbortSignal | undefined,
): Promise<string> {
  if (isCommitHash(revision)) return revision;
  const info = await hubCall(repoId, `revision ${revision}`, signal, () =>
    modelInfo({ ...client, name: repoId, revision, additionalFields: ['sha'] }),
  );
  if (!isCommitHash(info.sha)) {
    const problem = `revision ${revision} resolved to "${info.sha}", not a commit`;
    throw new HubRequestError(repoId, client.hubUrl, undefined, problem);
  }
  return info.sha;
}

/** Every file of the repository at `commit`, with its size and hash. */
async function listRepoFiles(
  repoId: string,
  commit: string,
  client: ClientParams,
  signal: AbortSignal | undefined,
): Promise<SnapshotFile[]> {
  return hubCall(repoId, `the files at ${commit}`, signal, async () => {
    const files: SnapshotFile[] = [];
    const repo = { type: 'model' as const, name: repoId };
    for await (const entry of listFiles({ ...client, repo, revision: commit, recursive: true })) {
      if (entry.type !== 'file') continue;
      checkRelativePath(repoId, entry.path);
      files.push(snapshotFileOf(repoId, entry));
    }
    return files;
  });
}

/** One pull of one commit: brings files into the blob store, links them, and reports progress. */
class SnapshotPull {
  readonly snapshot: string;
  readonly outcomes = new Map<string, TransferOutcome>();
  downloadedBytes = 0;
  private filesDone = 0;
  private bytesDone = 0;
  private totalBytes = 0;
  private fileCount = 0;

  constructor(
    private readonly repoId: string,
    private readonly commit: string,
    private readonly paths: RepoCachePaths,
    private readonly hub: ResolvedHubOptions,
    private readonly options: PullOptions,
  ) {
    this.snapshot = join(paths.snapshots, commit);
  }

  /** Fixes the files the progress reports count. */
  plan(files: readonly SnapshotFile[]): void {
    this.fileCount = files.length;
    this.totalBytes = files.reduce((sum, file) => sum + file.size, 0);
  }

  /** Brings one file into the cache (unless there) and counts it done. */
  async take(file: SnapshotFile): Promise<void> {
    if (!this.outcomes.has(file.path)) await this.fetch(file, true);
    this.filesDone++;
    this.bytesDone += file.size;
    this.report(file, file.size, this.bytesDone);
  }

  /** Brings one file into the blob store and links it into the snapshot; progress only if `report`. */
  async fetch(file: SnapshotFile, report: boolean): Promise<void> {
    const { repoId, commit, hub, options } = this;
    const pointer = join(this.snapshot, file.path);
    const blob = join(this.paths.blobs, file.hash);
    if ((await exists(pointer)) && (await exists(blob))) {
      this.outcomes.set(file.path, 'cached');
      return;
    }
    const encodedPath = file.path.split('/').map(encodeURIComponent).join('/');
    const outcome = await transferBlob({
      repoId,
      file,
      url: `${hub.hubUrl}/${repoId}/resolve/${commit}/${encodedPath}`,
      blob,
      token: hub.token,
      signal: options.signal,
      retries: options.retries ?? 3,
      retryDelayMs: options.retryDelayMs ?? 1000,
      onBytes: (fileBytes, chunkBytes) => {
        this.downloadedBytes += chunkBytes;
        if (report) this.report(file, fileBytes, this.bytesDone + fileBytes);
      },
    });
    await linkSnapshotFile(blob, pointer);
    this.outcomes.set(file.path, outcome);
  }

  private report(file: SnapshotFile, fileBytes: number, bytes: number): void {
    this.options.onProgress?.({
      file: file.path,
      fileBytes,
      fileSize: file.size,
      bytes,
      totalBytes: this.totalBytes,
      filesDone: this.filesDone,
      files: this.fileCount,
    });
  }
}

async function pullOnline(
  repoId: string,
  revision: string,
  hub: ResolvedHubOptions,
  options: PullOptions,
): Promise<PulledModel> {
  const { signal } = options;
  const client: ClientParams = {
    hubUrl: hub.hubUrl,
    fetch: (input, init) => fetch(input, { ...init, signal }),
    accessToken: hub.token,
  };
  const commit = await resolveCommit(repoId, revision, client, signal);
  const listing = await listRepoFiles(repoId, commit, client, signal);
  const paths = repoCachePaths(hub.cacheDir, repoId);
  const pull = new SnapshotPull(repoId, commit, paths, hub, options);
  const chosen = await chooseFiles(listing, options.include, async (indexFile) => {
    // Fetched before the totals are known, so without progress reports; it is small.
    await pull.fetch(indexFile, false);
    try {
      const index = JSON.parse(await readFile(join(pull.snapshot, indexFile.path), 'utf8')) as {
        weight_map?: Record<string, string>;
      };
      return index.weight_map;
    } catch {
      return undefined;
    }
  });
  if (options.include === undefined && !chosen.some((file) => file.path.endsWith('.safetensors'))) {
    const weights = listing.filter((file) => /\.(bin|pth|pt|ckpt|gguf|h5|msgpack|onnx)$/.test(file.path));
    const found = weights.length > 0 ? ` (it has ${weights.map((file) => file.path).join(', ')})` : '';
    const problem = `has no safetensors weights at ${commit}${found}; rrt reads safetensors only`;
    throw new HubRequestError(repoId, `${hub.hubUrl}/${repoId}/tree/${commit}`, undefined, problem);
  }
  pull.plan(chosen);
  // Written before the first byte, so that offline mode can name what an interrupted pull lacks.
  await writeManifest(paths, { repoId, commit, files: chosen });
  await writeRef(paths, revision, commit);
  for (const file of chosen) await pull.take(file);
  return {
    directory: pull.snapshot,
    repoId,
    revision,
    commit,
    files: chosen.map((file) => ({ ...file, outcome: pull.outcomes.get(file.path) ?? 'cached' })),
    downloadedBytes: pull.downloadedBytes,
  };
}
