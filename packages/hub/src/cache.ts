/**
 * The local cache, in the layout of the Python `huggingface_hub` (so either tool finds what the other
 * pulled):
 *
 * ```text
 * <cacheDir>/models--<owner>--<name>/
 *   blobs/<hash>                 file contents, named by their SHA-256 (LFS) or git blob SHA-1
 *   blobs/<hash>.incomplete      a download in progress or interrupted; resumed from its length
 *   refs/<revision>              the commit a branch or tag pointed to when it was last pulled
 *   snapshots/<commit>/<path>    the repository at that commit: relative symlinks into blobs/
 *   rrt-manifests/<commit>.json  rrt's own: the files a pull of that commit chose, with sizes and hashes
 * ```
 *
 * The manifest is written before the first byte is downloaded, so an interrupted pull can still say,
 * offline, exactly which files are missing.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { copyFile, lstat, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';
import { HubOfflineError } from './errors.js';
import { isCommitHash } from './reference.js';

/** How a file's contents are checked: the Hub lists SHA-256 for LFS files and the git blob SHA-1 for the rest. */
export type HashAlgorithm = 'sha256' | 'git-sha1';

/** One file of a snapshot as the Hub listed it. */
export interface SnapshotFile {
  /** Path inside the repository. */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /** Hex digest of the contents under {@link SnapshotFile.algorithm}; names the blob. */
  readonly hash: string;
  /** Which digest {@link SnapshotFile.hash} is. */
  readonly algorithm: HashAlgorithm;
}

/** What rrt records about a pulled (or partly pulled) commit. */
export interface SnapshotManifest {
  /** The repository. */
  readonly repoId: string;
  /** The commit pulled. */
  readonly commit: string;
  /** The files the pull chose, in the order it fetches them. */
  readonly files: readonly SnapshotFile[];
}

/** The paths of one repository in the cache. */
export interface RepoCachePaths {
  /** `<cacheDir>/models--owner--name`. */
  readonly root: string;
  /** `blobs/`: contents by hash, and `.incomplete` partials. */
  readonly blobs: string;
  /** `refs/`: branch or tag → commit. */
  readonly refs: string;
  /** `snapshots/`: one directory per commit. */
  readonly snapshots: string;
  /** `rrt-manifests/`: rrt's record of what a pull of each commit chose. */
  readonly manifests: string;
}

/** The cache paths of model repository `repoId` under `cacheDir`. */
export function repoCachePaths(cacheDir: string, repoId: string): RepoCachePaths {
  const root = join(cacheDir, getRepoFolderName({ type: 'model', name: repoId }));
  return {
    root,
    blobs: join(root, 'blobs'),
    refs: join(root, 'refs'),
    snapshots: join(root, 'snapshots'),
    manifests: join(root, 'rrt-manifests'),
  };
}

/** Writes `contents` to `path` through a temporary file and a rename, so no reader sees half of it. */
export async function writeFileAtomically(path: string, contents: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.tmp-${randomUUID()}`;
  try {
    await writeFile(temporary, contents);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** Whether `path` exists, following symlinks (a dangling snapshot link counts as absent). */
export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The commit `revision` pointed to when last pulled, or `undefined` when it never was. */
export async function readRef(paths: RepoCachePaths, revision: string): Promise<string | undefined> {
  if (isCommitHash(revision)) return revision;
  try {
    return (await readFile(join(paths.refs, revision), 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Records that `revision` now points to `commit` (nothing to record when it is that commit). */
export async function writeRef(paths: RepoCachePaths, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  await writeFileAtomically(join(paths.refs, revision), commit);
}

/** The manifest of `commit`, or `undefined` when rrt never started a pull of it. */
export async function readManifest(
  paths: RepoCachePaths,
  commit: string,
): Promise<SnapshotManifest | undefined> {
  try {
    return JSON.parse(await readFile(join(paths.manifests, `${commit}.json`), 'utf8')) as SnapshotManifest;
  } catch {
    return undefined;
  }
}

/** Writes the manifest of a pull, before its downloads start. */
export async function writeManifest(paths: RepoCachePaths, manifest: SnapshotManifest): Promise<void> {
  await writeFileAtomically(
    join(paths.manifests, `${manifest.commit}.json`),
    `${JSON.stringify(manifest, null, 2)}\n`,
  );
}

/**
 * Makes `snapshots/<commit>/<path>` point at `blob`: a relative symlink, as huggingface_hub makes, or a
 * copy where the file system refuses symlinks (Windows without developer mode). Made under a temporary
 * name and renamed, so the snapshot never holds a half-made entry.
 */
export async function linkSnapshotFile(blob: string, pointer: string): Promise<void> {
  await mkdir(dirname(pointer), { recursive: true });
  const temporary = `${pointer}.tmp-${randomUUID()}`;
  try {
    try {
      await symlink(relative(dirname(pointer), blob), temporary);
    } catch {
      await copyFile(blob, temporary);
    }
    await rename(temporary, pointer);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** The files a snapshot needs when rrt has no manifest of it (it was pulled by another tool). */
async function inferredRequiredFiles(snapshot: string): Promise<string[]> {
  const required = ['config.json'];
  try {
    const index = JSON.parse(await readFile(join(snapshot, 'model.safetensors.index.json'), 'utf8')) as {
      weight_map?: Record<string, string>;
    };
    required.push('model.safetensors.index.json', ...new Set(Object.values(index.weight_map ?? {})));
  } catch {
    required.push('model.safetensors');
  }
  return required;
}

/** Describes a missing file, with the partial download that exists of it, if any. */
async function describeMissing(paths: RepoCachePaths, file: SnapshotFile | string): Promise<string> {
  if (typeof file === 'string') return file;
  const partial = await lstat(join(paths.blobs, `${file.hash}.incomplete`)).catch(() => undefined);
  return partial
    ? `${file.path} (partial: ${partial.size} of ${file.size} bytes)`
    : `${file.path} (${file.size} bytes)`;
}

/**
 * The snapshot of `repoId@revision` in the cache, read without any network access: its directory, its
 * commit and the files it holds. Used for offline mode, and to skip the Hub when a pinned commit is
 * already complete.
 *
 * @throws {@link HubOfflineError} naming the ref, snapshot or files that are missing
 */
export async function findCachedSnapshot(
  cacheDir: string,
  repoId: string,
  revision: string,
): Promise<{ directory: string; commit: string; files: readonly SnapshotFile[] | undefined }> {
  const paths = repoCachePaths(cacheDir, repoId);
  const commit = await readRef(paths, revision);
  if (commit === undefined) {
    throw new HubOfflineError(repoId, revision, cacheDir, [
      (await exists(paths.root))
        ? `refs/${revision} (this revision was never pulled)`
        : `${relative(cacheDir, paths.root)} (this repository was never pulled)`,
    ]);
  }
  const directory = join(paths.snapshots, commit);
  if (!(await exists(directory))) {
    throw new HubOfflineError(repoId, revision, cacheDir, [`snapshots/${commit}`]);
  }
  const manifest = await readManifest(paths, commit);
  const wanted: (SnapshotFile | string)[] = manifest
    ? [...manifest.files]
    : await inferredRequiredFiles(directory);
  const missing: string[] = [];
  for (const file of wanted) {
    const path = typeof file === 'string' ? file : file.path;
    if (!(await exists(join(directory, path)))) missing.push(await describeMissing(paths, file));
  }
  if (missing.length > 0) throw new HubOfflineError(repoId, revision, cacheDir, missing);
  return { directory, commit, files: manifest?.files };
}
