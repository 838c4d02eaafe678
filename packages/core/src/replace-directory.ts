import { rename, rm } from 'node:fs/promises';
import { OutputRestoreError } from './errors.js';

/**
 * Renames the finished directory `from` to `target`, which exists: `target` is first moved aside to
 * `aside` and removed only once `from` is in its place, so that a failure in between restores it and
 * loses nothing. Importers and converters write into a temporary directory and finish with this (or a
 * plain rename when `target` does not exist), so an output path never holds half an output.
 *
 * @throws the error of the failed rename once `target` is restored; {@link OutputRestoreError} when the
 * restore fails too (the old output is then at `aside`)
 */
export async function replaceDirectory(from: string, target: string, aside: string): Promise<void> {
  await rename(target, aside);
  try {
    await rename(from, target);
  } catch (error) {
    try {
      await rename(aside, target);
    } catch (restoreError) {
      throw new OutputRestoreError(target, aside, { cause: error, restoreError });
    }
    throw error;
  }
  await rm(aside, { recursive: true, force: true });
}
