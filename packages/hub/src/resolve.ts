import { stat } from 'node:fs/promises';
import { HubRequestError, RepoReferenceError } from './errors.js';
import { type PullOptions, pullModel } from './pull.js';
import { parseRepoReference, type RepoReference } from './reference.js';

/** Where {@link resolveModelReference} found a model. */
export type ModelSource =
  /** An existing local path, returned as given. */
  | { readonly kind: 'path' }
  /** A Hub repo, served from the cache (offline) or pulled (online; cached files are not fetched again). */
  | { readonly kind: 'hub'; readonly repoId: string; readonly revision: string; readonly commit: string };

/** A model reference resolved to a local directory. */
export interface ResolvedModel {
  /** The local model directory. */
  readonly directory: string;
  /** Where it came from. */
  readonly source: ModelSource;
}

/**
 * Turns what a user typed where a model directory is expected into a local directory: an existing path
 * is used as it is; otherwise the text must be a Hub repo id (`owner/name[@revision]`), which is served
 * from the cache offline, or pulled (only what the cache lacks) online. This is how every command that
 * takes a model directory also takes a repo id.
 *
 * @throws {@link RepoReferenceError} when the text is neither an existing path nor a valid repo id, or
 * names a repo the Hub does not have; the errors of {@link pullModel} otherwise
 * @example
 * ```ts
 * const { directory } = await resolveModelReference('HuggingFaceTB/SmolLM2-135M', { offline: true });
 * const config = await readConfig(directory);
 * ```
 */
export async function resolveModelReference(
  reference: string,
  options: PullOptions = {},
): Promise<ResolvedModel> {
  if (
    await stat(reference).then(
      () => true,
      () => false,
    )
  ) {
    return { directory: reference, source: { kind: 'path' } };
  }
  let parsed: RepoReference;
  try {
    parsed = parseRepoReference(reference);
  } catch (error) {
    if (!(error instanceof RepoReferenceError)) throw error;
    throw new RepoReferenceError(
      reference,
      `no such file or directory, and not a Hub repo id: ${error.problem}`,
    );
  }
  try {
    const pulled = await pullModel(parsed, options);
    return {
      directory: pulled.directory,
      source: { kind: 'hub', repoId: pulled.repoId, revision: pulled.revision, commit: pulled.commit },
    };
  } catch (error) {
    // "models/llama" is a valid repo id too: when the Hub has no such repo, say both readings failed.
    if (error instanceof HubRequestError && (error.status === 401 || error.status === 404)) {
      throw new RepoReferenceError(
        reference,
        `no such file or directory, and the Hub has no model repo ${parsed.repoId}@${parsed.revision} ` +
          `that this token can read (HTTP ${error.status})`,
      );
    }
    throw error;
  }
}
