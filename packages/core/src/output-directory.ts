/**
 * Where outputs go, and how they get there: every importer, converter and exporter writes into a hidden
 * temporary directory beside its output path and renames it into place only when complete. This module
 * checks that the output path is apart from the inputs (with symbolic links followed), makes the
 * temporary directory, and clears temporaries that crashed runs left behind.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, realpath, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { OutputLocationError } from './errors.js';

/** Marks the pattern of temporary directories: `.<output name>.rrt-tmp-<pid>-<random>`. */
const tempInfix = '.rrt-tmp-';

/**
 * The real path of `path`: symbolic links of its existing part resolved, the part that does not exist
 * yet appended as given.
 */
async function realPathOf(path: string): Promise<string> {
  const absolute = resolve(path);
  let existing = absolute;
  const missing: string[] = [];
  for (;;) {
    try {
      return join(await realpath(existing), ...missing.reverse());
    } catch {
      const parent = dirname(existing);
      if (parent === existing) return absolute;
      missing.push(basename(existing));
      existing = parent;
    }
  }
}

function isInside(inner: string, outer: string): boolean {
  const path = relative(outer, inner);
  return path !== '' && path !== '..' && !path.startsWith(`..${sep}`) && !isAbsolute(path);
}

/** One input of a command, for {@link assertOutputApart}. */
export interface OutputInput {
  /** The input's path (a directory or a file). */
  path: string;
}

/**
 * Throws unless `outDir` is apart from every input: not the same path, not inside one, not containing
 * one — compared as real paths, so a symbolic link to the source counts as the source.
 *
 * @throws {@link OutputLocationError}
 *
 * @example
 * ```ts
 * await assertOutputApart('models/out', [{ path: 'models/stories260K' }]);
 * ```
 */
export async function assertOutputApart(outDir: string, inputs: readonly OutputInput[]): Promise<void> {
  const output = await realPathOf(outDir);
  for (const input of inputs) {
    const real = await realPathOf(input.path);
    if (real === output) throw new OutputLocationError(outDir, input.path, 'same');
    if (isInside(output, real)) throw new OutputLocationError(outDir, input.path, 'output-inside-input');
    if (isInside(real, output)) throw new OutputLocationError(outDir, input.path, 'input-inside-output');
  }
}

/**
 * Creates the hidden temporary directory `.<name>.rrt-tmp-<pid>-<random>` beside `outDir` (same
 * filesystem, so the final rename is atomic). The name holds this process's id so that a later run can
 * tell a crashed run's leftovers from a live one's.
 *
 * @example
 * ```ts
 * const tempDir = await createTempDirectory('models/out');
 * ```
 */
export async function createTempDirectory(outDir: string): Promise<string> {
  const target = resolve(outDir);
  await mkdir(dirname(target), { recursive: true });
  const name = `.${basename(target)}${tempInfix}${process.pid}-${randomBytes(6).toString('hex')}`;
  const tempDir = join(dirname(target), name);
  await mkdir(tempDir);
  return tempDir;
}

/** A temporary directory that {@link removeStaleTemporaries} removed. */
export interface StaleTemporary {
  /** Its path. */
  path: string;
  /** Bytes it held. */
  bytes: number;
}

/**
 * Removes the temporary directories of `outDir` (see {@link createTempDirectory}) whose writing process
 * is gone: a run killed with SIGKILL, or a crash, cannot clean up after itself. A temporary whose owner is
 * still running is left alone. Returns what was removed, for the caller to report.
 *
 * @example
 * ```ts
 * for (const stale of await removeStaleTemporaries('models/out')) console.warn(`removed ${stale.path}`);
 * ```
 */
export async function removeStaleTemporaries(outDir: string): Promise<StaleTemporary[]> {
  const target = resolve(outDir);
  const prefix = `.${basename(target)}${tempInfix}`;
  let names: string[];
  try {
    names = await readdir(dirname(target));
  } catch {
    return [];
  }
  const removed: StaleTemporary[] = [];
  for (const name of names) {
    // `…-old` holds a previous output that a failed replacement could not move back: never removed.
    if (!name.startsWith(prefix) || name.endsWith('-old')) continue;
    const path = join(dirname(target), name);
    const owner = /^(\d+)-[0-9a-f]+$/.exec(name.slice(prefix.length));
    if (owner && processAlive(Number(owner[1]))) continue;
    const bytes = await directoryBytes(path);
    await rm(path, { recursive: true, force: true });
    removed.push({ path, bytes });
  }
  return removed;
}

/** Whether a process of that id runs. */
function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function directoryBytes(path: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(path, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}
