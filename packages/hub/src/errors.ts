/**
 * Typed errors of `@rrt/hub`. Each names the repository, file or cache path concerned and what was
 * expected, in the style of `@rrt/core`'s errors (they all extend its {@link RrtError}).
 *
 * @module
 */
import { RrtError } from '@rrt/core';

/**
 * A model reference is neither an existing directory nor a valid Hub repo id (`owner/name` or `name`,
 * optionally `@revision`).
 *
 * @example
 * ```ts
 * try { parseRepoReference('a/b/c'); } catch (error) { if (error instanceof RepoReferenceError) console.error(error.message); }
 * ```
 */
export class RepoReferenceError extends RrtError {
  constructor(
    /** The reference as given. */
    readonly reference: string,
    /** What was expected of it. */
    readonly problem: string,
  ) {
    super(`"${reference}": ${problem}`);
  }
}

/**
 * The Hub answered a request with an error status (repository or revision not found, gated or private
 * without a token, server error), or the request could not be made.
 */
export class HubRequestError extends RrtError {
  constructor(
    /** The repository concerned. */
    readonly repoId: string,
    /** The URL requested. */
    readonly url: string,
    /** The HTTP status, when the Hub answered. */
    readonly status: number | undefined,
    /** What went wrong, in words. */
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`${repoId}: ${problem} (${url}${status === undefined ? '' : `, HTTP ${status}`})`, options);
  }
}

/**
 * A transfer stopped before the whole file arrived (the connection was cut, the server sent fewer bytes
 * than it announced). The partial download is kept, and pulling again resumes it.
 */
export class HubTransferError extends RrtError {
  constructor(
    /** The repository concerned. */
    readonly repoId: string,
    /** The file in the repository. */
    readonly file: string,
    /** The bytes now in the partial file. */
    readonly receivedBytes: number,
    /** The file's size. */
    readonly expectedBytes: number,
    /** What went wrong, in words. */
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${repoId}: ${file}: ${problem} after ${receivedBytes} of ${expectedBytes} bytes; ` +
        'the partial download is kept and pulling again resumes it',
      options,
    );
  }
}

/**
 * A downloaded file's bytes do not hash to what the Hub's file listing says (SHA-256 for LFS files, the
 * git blob SHA-1 for the others), or its size differs. The bad download is deleted, never cached.
 */
export class HubChecksumError extends RrtError {
  constructor(
    /** The repository concerned. */
    readonly repoId: string,
    /** The file in the repository. */
    readonly file: string,
    /** `sha256`, `git-sha1` or `size`. */
    readonly check: 'sha256' | 'git-sha1' | 'size',
    /** The expected hash (hex) or size. */
    readonly expected: string,
    /** What the download gave. */
    readonly actual: string,
  ) {
    super(
      `${repoId}: ${file}: ${check} of the download is ${actual}, expected ${expected}; the download was discarded`,
    );
  }
}

/**
 * Offline mode (`HF_HUB_OFFLINE=1` or `--offline`) was asked for and the cache cannot serve the request.
 * {@link HubOfflineError.missing} lists what is absent, so the message says exactly what to pull.
 */
export class HubOfflineError extends RrtError {
  constructor(
    /** The repository concerned. */
    readonly repoId: string,
    /** The revision asked for. */
    readonly revision: string,
    /** The cache directory that was searched. */
    readonly cacheDir: string,
    /** What is missing: a ref, a snapshot, or files of a snapshot. */
    readonly missing: readonly string[],
  ) {
    super(
      `${repoId}@${revision}: offline mode is on and the cache at ${cacheDir} lacks ${missing.join(', ')}; ` +
        `pull it with network access first (rrt pull ${repoId}@${revision})`,
    );
  }
}
