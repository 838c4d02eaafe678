/**
 * `@rrt/hub/testing`: a local stand-in for the Hugging Face Hub, for tests that must not reach the
 * internet. It serves repositories made in the test in the Hub's URL layout and with the headers its
 * clients read, counts connections, logs requests and can stall, cut or corrupt a transfer on demand.
 *
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A repository the fake Hub serves. */
export interface FakeRepo {
  /** `owner/name`. */
  readonly repoId: string;
  /** Path → contents. */
  readonly files: Readonly<Record<string, Uint8Array | string>>;
  /** Which files are stored in LFS (listed with a SHA-256, served through a redirect). Default: `*.safetensors`. */
  readonly lfs?: (path: string) => boolean;
  /** Branch and tag names besides `main`, each pointing to this repo's single commit. */
  readonly refs?: readonly string[];
}

/** One request the fake Hub received. */
export interface FakeHubRequest {
  readonly method: string;
  /** Path and query. */
  readonly url: string;
  readonly range: string | undefined;
  readonly authorization: string | undefined;
}

/** One response that carried (or began to carry) a file's bytes. */
export interface FakeHubTransfer {
  /** The file's path in its repository. */
  readonly path: string;
  /** The Range header of the request. */
  readonly range: string | undefined;
  /** 200 or 206. */
  readonly status: number;
  /** The bytes the response was to carry (before any fault). */
  readonly bytes: number;
}

interface StoredFile {
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly lfs: boolean;
  /** SHA-256 for LFS files, the git blob SHA-1 otherwise: what the listing says. */
  readonly oid: string;
  readonly sha256: string;
}

interface StoredRepo {
  readonly repoId: string;
  readonly commit: string;
  readonly refs: ReadonlySet<string>;
  readonly files: ReadonlyMap<string, StoredFile>;
}

/** A one-shot fault for the next transfer of a file's bytes. */
type Fault =
  /** Send this many bytes, then hold the response open until the client goes away or it is cut. */
  | { readonly kind: 'stall'; readonly afterBytes: number }
  /** Send the file with one byte flipped. */
  | { readonly kind: 'corrupt' };

/** The fake Hub; see {@link startFakeHub}. */
export interface FakeHub {
  /** The base URL to pass as `hubUrl`. */
  readonly url: string;
  /** Every request so far, in order. */
  readonly requests: FakeHubRequest[];
  /** TCP connections accepted so far. */
  connections(): number;
  /** The commit `repoId` is at. */
  commit(repoId: string): string;
  /**
   * The next transfer of `path` sends `afterBytes` bytes and then stalls until the client leaves or
   * {@link FakeHub.cutStalledTransfers} is called.
   */
  stallNextTransfer(path: string, afterBytes: number): void;
  /**
   * Destroys the sockets of the stalled transfers: a connection cut mid-file. Call it once the client
   * has reported the bytes sent, so that the cut point is exact (a fetch body errored by a cut drops
   * the chunks it had queued but not yet handed out).
   */
  cutStalledTransfers(): void;
  /** The next transfer of `path` serves it with one byte changed (the listing keeps the true hash). */
  corruptNextTransfer(path: string): void;
  /** Whether Range headers are ignored (answered 200 with the whole file), as some proxies do. */
  ignoreRanges: boolean;
  /** Every response that carried a file's bytes (after the LFS redirect, for LFS files), in order. */
  readonly transfers: FakeHubTransfer[];
  close(): Promise<void>;
}

function sha(algorithm: 'sha1' | 'sha256', ...parts: (Uint8Array | string)[]): string {
  const hash = createHash(algorithm);
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

function storeRepo(repo: FakeRepo): StoredRepo {
  const isLfs = repo.lfs ?? ((path: string) => path.endsWith('.safetensors'));
  const files = new Map<string, StoredFile>();
  for (const [path, contents] of Object.entries(repo.files)) {
    const bytes = typeof contents === 'string' ? new TextEncoder().encode(contents) : contents;
    const sha256 = sha('sha256', bytes);
    const lfs = isLfs(path);
    const oid = lfs ? sha256 : sha('sha1', `blob ${bytes.byteLength}\0`, bytes);
    files.set(path, { path, bytes, lfs, oid, sha256 });
  }
  // The commit is a hash of the contents, so a changed repo gets a new commit as on the Hub.
  const commit = sha('sha1', repo.repoId, ...[...files.values()].map((file) => `${file.path}:${file.oid}`));
  return { repoId: repo.repoId, commit, refs: new Set(['main', ...(repo.refs ?? [])]), files };
}

function json(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

function notFound(response: ServerResponse, code: string, message: string): void {
  json(response, 404, { error: message }, { 'x-error-code': code, 'x-error-message': message });
}

/**
 * Starts a fake Hub on 127.0.0.1 (a free port) serving `repos`:
 *
 * - `GET /api/models/<repo>/revision/<rev>`: `{ id, sha, siblings, ... }` as `modelInfo` reads it;
 * - `GET /api/models/<repo>/tree/<rev>?recursive=true`: entries with `oid`, `size` and `lfs`;
 * - `GET /<repo>/resolve/<rev>/<path>`: plain files directly (`ETag` = git blob SHA-1), LFS files as a
 *   302 to `/lfs-cdn/<sha256>` with `X-Linked-ETag`, `X-Linked-Size` and `X-Repo-Commit`, as the Hub
 *   does; both honour `Range: bytes=<start>-[<end>]` with 206 and `Content-Range`.
 *
 * With `token`, every request without `Authorization: Bearer <token>` gets a 401.
 *
 * @example
 * ```ts
 * const hub = await startFakeHub([{ repoId: 'tiny/model', files: { 'config.json': '{}' } }]);
 * await pullModel('tiny/model', { hubUrl: hub.url, cacheDir });
 * await hub.close();
 * ```
 */
export async function startFakeHub(
  repos: readonly FakeRepo[],
  options: { token?: string } = {},
): Promise<FakeHub> {
  const stored = new Map(repos.map((repo) => [repo.repoId, storeRepo(repo)]));
  const blobsBySha = new Map<string, StoredFile>();
  for (const repo of stored.values())
    for (const file of repo.files.values()) blobsBySha.set(file.sha256, file);
  const faults = new Map<string, Fault>();
  const requests: FakeHubRequest[] = [];
  const transfers: FakeHubTransfer[] = [];
  const stalled = new Set<ServerResponse>();
  const sockets = new Set<Socket>();
  let connections = 0;

  const revisionOf = (repo: StoredRepo, revision: string): string | undefined =>
    revision === repo.commit || repo.refs.has(revision) ? repo.commit : undefined;

  /** Serves a file's bytes, with Range and the pending fault for it. */
  const serveBytes = (
    request: IncomingMessage,
    response: ServerResponse,
    file: StoredFile,
    headers: Record<string, string>,
  ) => {
    const fault = faults.get(file.path);
    faults.delete(file.path);
    let bytes = file.bytes;
    if (fault?.kind === 'corrupt') {
      bytes = bytes.slice();
      bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0xff;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
    let status = 200;
    let start = 0;
    let end = bytes.length;
    if (range && !hub.ignoreRanges) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]) + 1, bytes.length) : bytes.length;
      if (start >= bytes.length && bytes.length > 0) {
        response.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
        response.end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${bytes.length}`;
    }
    response.writeHead(status, {
      ...headers,
      'accept-ranges': 'bytes',
      'content-type': 'application/octet-stream',
      'content-length': String(end - start),
    });
    transfers.push({ path: file.path, range: request.headers.range, status, bytes: end - start });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    const body = bytes.subarray(start, end);
    if (fault?.kind === 'stall') {
      response.write(body.subarray(0, Math.min(fault.afterBytes, body.length)));
      stalled.add(response);
      response.on('close', () => stalled.delete(response));
      return;
    }
    response.end(body);
  };

  const handle = (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    const path = decodeURIComponent(url.pathname);
    // Matched on the raw path, so that an encoded revision (refs%2Fpr%2F1) stays one segment.
    const raw = url.pathname;
    requests.push({
      method: request.method ?? 'GET',
      url: `${url.pathname}${url.search}`,
      range: request.headers.range,
      authorization: request.headers.authorization,
    });
    if (
      options.token &&
      request.headers.authorization !== `Bearer ${options.token}` &&
      !path.startsWith('/lfs-cdn/')
    ) {
      json(response, 401, { error: 'Invalid credentials in Authorization header' });
      return;
    }
    const cdn = /^\/lfs-cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn) {
      const file = blobsBySha.get(cdn[1]!);
      if (!file) return notFound(response, 'EntryNotFound', 'no such blob');
      return serveBytes(request, response, file, { etag: `"${file.sha256}"` });
    }
    const api = /^\/api\/models\/(.+)\/(revision|tree)\/([^/]+)(?:\/(.*))?$/
      .exec(raw)
      ?.map((part) => part && decodeURIComponent(part));
    if (api) {
      const repo = stored.get(api[1]!);
      if (!repo) return notFound(response, 'RepoNotFound', `Repository not found: ${api[1]}`);
      const commit = revisionOf(repo, api[3]!);
      if (!commit) return notFound(response, 'RevisionNotFound', `Invalid rev id: ${api[3]}`);
      const files = [...repo.files.values()];
      if (api[2] === 'revision') {
        return json(response, 200, {
          _id: `id-${repo.repoId}`,
          id: repo.repoId,
          sha: commit,
          private: false,
          gated: false,
          downloads: 0,
          likes: 0,
          lastModified: '2026-01-01T00:00:00.000Z',
          siblings: files.map((file) => ({ rfilename: file.path })),
        });
      }
      const directories = new Set(
        files.flatMap((file) =>
          file.path
            .split('/')
            .slice(0, -1)
            .map((_, i, parts) => parts.slice(0, i + 1).join('/')),
        ),
      );
      return json(response, 200, [
        ...[...directories].map((directory) => ({
          type: 'directory',
          oid: sha('sha1', directory),
          size: 0,
          path: directory,
        })),
        ...files.map((file) => ({
          type: 'file',
          oid: file.lfs ? sha('sha1', `pointer ${file.sha256}`) : file.oid,
          size: file.lfs ? 134 : file.bytes.length,
          path: file.path,
          ...(file.lfs ? { lfs: { oid: file.sha256, size: file.bytes.length, pointerSize: 134 } } : {}),
        })),
      ]);
    }
    const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/
      .exec(raw)
      ?.map((part) => part && decodeURIComponent(part));
    if (resolve) {
      const repo = stored.get(resolve[1]!);
      if (!repo) return notFound(response, 'RepoNotFound', `Repository not found: ${resolve[1]}`);
      const commit = revisionOf(repo, resolve[2]!);
      if (!commit) return notFound(response, 'RevisionNotFound', `Invalid rev id: ${resolve[2]}`);
      const file = repo.files.get(resolve[3]!);
      if (!file) return notFound(response, 'EntryNotFound', `Entry not found: ${resolve[3]}`);
      if (file.lfs) {
        response.writeHead(302, {
          location: `/lfs-cdn/${file.sha256}`,
          'x-repo-commit': commit,
          'x-linked-etag': `"${file.sha256}"`,
          'x-linked-size': String(file.bytes.length),
          'content-length': '0',
        });
        response.end();
        return;
      }
      return serveBytes(request, response, file, { etag: `"${file.oid}"`, 'x-repo-commit': commit });
    }
    notFound(response, 'NotFound', `no route for ${path}`);
  };

  const server: Server = createServer(handle);
  server.on('connection', (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const hub: FakeHub = {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => connections,
    commit: (repoId) => {
      const repo = stored.get(repoId);
      if (!repo) throw new Error(`the fake Hub has no repo ${repoId}`);
      return repo.commit;
    },
    stallNextTransfer: (path, afterBytes) => faults.set(path, { kind: 'stall', afterBytes }),
    cutStalledTransfers: () => {
      for (const response of stalled) response.socket?.destroy();
    },
    corruptNextTransfer: (path) => faults.set(path, { kind: 'corrupt' }),
    ignoreRanges: false,
    transfers,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      );
    },
  };
  return hub;
}
