import { RepoReferenceError } from './errors.js';

/** A Hub model repository and the revision (branch, tag or commit) asked for. */
export interface RepoReference {
  /** `owner/name` (or a bare `name` for the few repos without an owner). */
  readonly repoId: string;
  /** A branch, tag or 40-hex commit; `main` when the reference named none. */
  readonly revision: string;
}

/** The revision a reference without `@revision` means, as on the Hub. */
export const DEFAULT_REVISION = 'main';

// The Hub's own rule (huggingface_hub's validate_repo_id): an optional `owner/`, then a name of word
// characters, dots and dashes, at most 96 characters, starting and ending on a word character.
const repoIdPattern = /^(?:[\w.-]+\/)?[\w.-]{1,96}$/;
const commitPattern = /^[0-9a-f]{40}$/;

/** Whether `revision` is a full commit hash (and so needs no ref to be resolved). */
export function isCommitHash(revision: string): boolean {
  return commitPattern.test(revision);
}

/**
 * Why `repoId` is not a valid Hub repo id, or `undefined` when it is. The rule is the Hub's: an optional
 * owner, a name of letters, digits, `_`, `.` and `-`, no `--` or `..`, not starting or ending with `.`
 * or `-`.
 */
export function repoIdProblem(repoId: string): string | undefined {
  if (!repoIdPattern.test(repoId)) {
    return 'a Hub repo id is "owner/name" (letters, digits, "_", "." and "-", at most 96 characters in the name)';
  }
  if (repoId.includes('--') || repoId.includes('..')) return 'a Hub repo id cannot contain "--" or ".."';
  for (const part of repoId.split('/')) {
    if (/^[.-]|[.-]$/.test(part)) return 'a Hub repo id part cannot start or end with "." or "-"';
  }
  return undefined;
}

/**
 * Parses `owner/name[@revision]`, the way `rrt pull` and every command that takes a model name one.
 *
 * @throws {@link RepoReferenceError} when the repo id or the revision is malformed
 * @example
 * ```ts
 * parseRepoReference('Qwen/Qwen3-0.6B@main'); // { repoId: 'Qwen/Qwen3-0.6B', revision: 'main' }
 * ```
 */
export function parseRepoReference(reference: string): RepoReference {
  // Repo ids cannot hold "@", so the first one starts the revision (which may itself hold "/": refs/pr/1).
  const at = reference.indexOf('@');
  const repoId = at < 0 ? reference : reference.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : reference.slice(at + 1);
  const problem = repoIdProblem(repoId);
  if (problem) throw new RepoReferenceError(reference, problem);
  // The revision becomes a path under refs/ in the cache: keep it inside.
  if (
    revision === '' ||
    revision.split('/').some((part) => part === '' || part === '.' || part === '..') ||
    /[\\\0]/.test(revision)
  ) {
    throw new RepoReferenceError(reference, 'the revision after "@" must be a branch, tag or commit hash');
  }
  return { repoId, revision };
}
