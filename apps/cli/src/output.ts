/** What the commands that write a model directory share: leftovers of crashed runs, and library errors told as flags. */
import { IncompatibleLayoutError, InvalidOptionError, OutputExistsError } from '@rrt/convert';
import { ImportError, OutputLocationError, removeStaleTemporaries } from '@rrt/core';
import { type CliIO, UsageError } from './cli-io.js';

/** Removes the temporary outputs that crashed or killed runs left beside `out`, and says so. */
export async function clearStaleOutputs(out: string, io: CliIO): Promise<void> {
  for (const stale of await removeStaleTemporaries(out)) {
    const megabytes = (stale.bytes / 2 ** 20).toFixed(1);
    io.stderr(`removed ${stale.path} (${megabytes} MiB), left by an earlier run that did not finish\n`);
  }
}

/**
 * A library error that the user fixes with a flag, as a {@link UsageError} naming that flag (exit 2);
 * any other error unchanged. `flags` maps the library's option names (`ranks.default`) to flags (`--rank`).
 */
export function asFlagError(error: unknown, flags: Readonly<Record<string, string>>): unknown {
  if (error instanceof InvalidOptionError) {
    const flag = flags[error.option] ?? `option ${error.option}`;
    return new UsageError(error.message.replace(/^option "[^"]*"/, flag));
  }
  if (error instanceof IncompatibleLayoutError) {
    return new UsageError(error.message.replace('pass subsample: true / --subsample', 'pass --subsample'));
  }
  if (
    error instanceof OutputExistsError ||
    (error instanceof ImportError && error.reason === 'output-exists')
  ) {
    const path = error instanceof OutputExistsError ? error.path : error.file;
    return new UsageError(`--out ${path}: exists; pass --overwrite to replace it`);
  }
  if (error instanceof OutputLocationError) return new UsageError(`--out ${error.message}`);
  return error;
}
