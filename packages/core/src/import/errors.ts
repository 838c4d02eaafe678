/** Errors raised while importing a foreign checkpoint format. @module */

import { RrtError } from '../errors.js';

/** Why an import failed; lets a caller (the CLI) react without parsing messages. */
export type ImportErrorReason =
  /** An input file does not exist or cannot be read. */
  | 'missing-file'
  /** The checkpoint's size disagrees with the size its header implies (truncated, or trailing bytes). */
  | 'size-mismatch'
  /** The checkpoint header holds impossible values. */
  | 'bad-header'
  /** The file is a variant this importer does not read (a newer llama2.c export version, say). */
  | 'unsupported-format'
  /** The tokenizer file is malformed. */
  | 'bad-tokenizer'
  /** The tokenizer's vocabulary size differs from the checkpoint's. */
  | 'vocab-mismatch'
  /** The output directory exists and is not empty, and overwriting was not asked for. */
  | 'output-exists';

/**
 * An import failed. The message names the file and says what was expected; `reason` says which kind of
 * failure it was.
 *
 * @example
 * ```ts
 * try { await importLlama2c(options); }
 * catch (error) { if (error instanceof ImportError && error.reason === 'size-mismatch') console.error(error.message); }
 * ```
 */
export class ImportError extends RrtError {
  override name = 'ImportError';
  constructor(
    /** The file at fault. */
    readonly file: string,
    /** Which kind of failure. */
    readonly reason: ImportErrorReason,
    /** What was wrong. */
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${problem}`, options);
  }
}
