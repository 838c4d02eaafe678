/**
 * One file's transfer into the blob store: resumable, verified, renamed into place only when whole.
 *
 * NOTE: the bytes are fetched here rather than through `@huggingface/hub`'s `downloadFile` /
 * `downloadFileToCacheDir`. Those give a `Blob` whose `slice(offset).stream()` does send a Range request,
 * but it never checks that the answer is a 206 starting at `offset` (a server or proxy that ignores Range
 * answers 200 with the whole file, which appended to a partial corrupts it), it reports failures as bare
 * strings through `stream.abort(message)`, and it takes no AbortSignal; `downloadFileToCacheDir` writes
 * `.incomplete` files but neither resumes nor verifies them. The client still does the Hub's API
 * (revision → commit, file listing with hashes); see pull.ts.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { HashAlgorithm, SnapshotFile } from './cache.js';
import { HubChecksumError, HubRequestError, HubTransferError } from './errors.js';

/** How a blob came to be in the cache. */
export type TransferOutcome = 'downloaded' | 'resumed' | 'cached';

/** What {@link transferBlob} needs. */
export interface TransferRequest {
  readonly repoId: string;
  readonly file: SnapshotFile;
  /** The URL of the file's bytes (the Hub's `resolve` URL; redirects are followed). */
  readonly url: string;
  /** The blob path; the partial download is `<blob>.incomplete`. */
  readonly blob: string;
  readonly token: string | undefined;
  readonly signal: AbortSignal | undefined;
  /** Further attempts after a dropped connection or a 5xx answer, each resuming from the partial. */
  readonly retries: number;
  /** The wait before the first retry, doubled for each further one. */
  readonly retryDelayMs: number;
  /** Called after each chunk written with the file's bytes on disk and the chunk's length. */
  readonly onBytes: (bytesOnDisk: number, chunkBytes: number) => void;
}

/** A failure worth another attempt from where the partial ends. */
class RetryableTransfer extends Error {}

/** Hex digest of a file, the way the Hub names it: plain SHA-256, or git's SHA-1 of `blob <size>\0<bytes>`. */
export async function hashFile(path: string, algorithm: HashAlgorithm, size: number): Promise<string> {
  const hash = createHash(algorithm === 'sha256' ? 'sha256' : 'sha1');
  if (algorithm === 'git-sha1') hash.update(`blob ${size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function sizeOf(path: string): Promise<number | undefined> {
  return stat(path).then(
    (stats) => stats.size,
    () => undefined,
  );
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Fetches the bytes from `offset` on and appends them to `partial`. A 200 answer to a Range request
 * (the server ignored it) starts the partial over.
 */
async function fetchInto(request: TransferRequest, partial: string, offset: number): Promise<void> {
  const { repoId, file, url, token, signal } = request;
  const headers: Record<string, string> = {};
  if (token) headers['Authorization'] = `Bearer ${token}`;
  if (offset > 0) headers['Range'] = `bytes=${offset}-`;
  let response: Response;
  try {
    response = await fetch(url, { headers, signal, redirect: 'follow' });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new RetryableTransfer(`cannot reach ${url}: ${(error as Error).message}`, { cause: error });
  }
  let start = offset;
  if (offset > 0 && response.status === 206) {
    const range = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
    if (!range || Number(range[1]) !== offset) {
      await response.body?.cancel();
      throw new HubRequestError(
        repoId,
        url,
        206,
        `asked for bytes from ${offset} of ${file.path}, got Content-Range "${response.headers.get('content-range')}"`,
      );
    }
  } else if (response.status === 200) {
    start = 0;
  } else if (response.status === 416 && offset > 0) {
    // The partial is not a prefix of this file (a longer file of the same name once?): start over.
    await response.body?.cancel();
    await rm(partial, { force: true });
    throw new RetryableTransfer(`the server refused resuming ${file.path} at byte ${offset}`);
  } else {
    await response.body?.cancel();
    const problem = `downloading ${file.path} failed`;
    if (response.status >= 500) throw new RetryableTransfer(`${problem}: HTTP ${response.status}`);
    throw new HubRequestError(repoId, url, response.status, problem);
  }

  const handle = await open(partial, start === 0 ? 'w' : 'a');
  const reader = response.body?.getReader();
  let onDisk = start;
  let tooLong = false;
  try {
    for (let next = await reader?.read(); next && !next.done; next = await reader?.read()) {
      if (onDisk + next.value.byteLength > file.size) {
        tooLong = true;
        await reader?.cancel();
        break;
      }
      await handle.write(next.value);
      onDisk += next.value.byteLength;
      request.onBytes(onDisk, next.value.byteLength);
    }
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new RetryableTransfer(`the connection was lost: ${(error as Error).message}`, { cause: error });
  } finally {
    await handle.close();
  }
  if (tooLong) {
    await rm(partial, { force: true });
    throw new HubChecksumError(
      repoId,
      file.path,
      'size',
      `${file.size} bytes`,
      `more than ${file.size} bytes`,
    );
  }
  if (onDisk < file.size) throw new RetryableTransfer('the server closed the response early');
}

/**
 * Brings `request.file` into the blob store at `request.blob`: resumes `<blob>.incomplete` with a Range
 * request when one exists, retries dropped connections from where they stopped, checks size and hash,
 * and renames the partial to the blob only when both match.
 *
 * @throws {@link HubChecksumError} when the finished bytes are wrong (the partial is deleted);
 * {@link HubTransferError} when the retries run out (the partial is kept for the next pull);
 * {@link HubRequestError} for an HTTP error; `signal.reason` when aborted (the partial is kept)
 */
export async function transferBlob(request: TransferRequest): Promise<TransferOutcome> {
  const { repoId, file, blob, signal } = request;
  if ((await sizeOf(blob)) !== undefined) return 'cached';
  const partial = `${blob}.incomplete`;
  await mkdir(dirname(blob), { recursive: true });
  const resumedFrom = (await sizeOf(partial)) ?? 0;
  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    let onDisk = await sizeOf(partial);
    if (onDisk !== undefined && onDisk > file.size) {
      await rm(partial, { force: true });
      onDisk = undefined;
    }
    try {
      // A partial as long as the file is only left to verify (a pull stopped between the two).
      if (onDisk === undefined || onDisk < file.size) await fetchInto(request, partial, onDisk ?? 0);
      break;
    } catch (error) {
      if (!(error instanceof RetryableTransfer)) throw error;
      const now = (await sizeOf(partial)) ?? 0;
      if (attempt >= request.retries) {
        throw new HubTransferError(repoId, file.path, now, file.size, error.message, { cause: error.cause });
      }
      await sleep(request.retryDelayMs * 2 ** attempt, signal);
    }
  }

  const size = (await sizeOf(partial)) ?? 0;
  if (size !== file.size) {
    await rm(partial, { force: true });
    throw new HubChecksumError(repoId, file.path, 'size', `${file.size} bytes`, `${size} bytes`);
  }
  // Hashing what is on disk, after the transfer, covers a resumed partial and any write fault alike.
  const actual = await hashFile(partial, file.algorithm, file.size);
  if (actual !== file.hash) {
    await rm(partial, { force: true });
    throw new HubChecksumError(repoId, file.path, file.algorithm, file.hash, actual);
  }
  await rename(partial, blob);
  return resumedFrom > 0 ? 'resumed' : 'downloaded';
}
