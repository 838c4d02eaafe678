/**
 * Typed errors of `@rrt/core`. Every error says which file, tensor or field is wrong and what was
 * expected, so that a message alone is enough to find the problem.
 *
 * @module
 */

/**
 * Base class of every error that rrt raises on purpose. Catch it to tell rrt's own, explained failures
 * from bugs and from errors of the platform.
 *
 * @example
 * ```ts
 * try { await openCheckpoint(dir); } catch (error) { if (error instanceof RrtError) console.error(error.message); else throw error; }
 * ```
 */
export class RrtError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    // Subclasses get their own name without repeating it.
    this.name = new.target.name;
  }
}

/** Where in a safetensors file or checkpoint a {@link SafetensorsError} was found. */
export interface SafetensorsErrorLocation {
  /** The tensor concerned, when there is one. */
  readonly tensor?: string;
  /** The header field concerned (`dtype`, `shape`, `data_offsets`, `__metadata__`, `weight_map`, ...). */
  readonly field?: string;
  /** The underlying error (an I/O or JSON error), kept for debugging. */
  readonly cause?: unknown;
}

/**
 * A safetensors file, checkpoint index or write request is invalid, or an I/O step on one failed. The
 * message reads `<file>: tensor "<name>" field "<field>": <what was expected>`, with the parts that
 * apply.
 *
 * @example
 * ```ts
 * try { await openSafetensors('model.safetensors'); }
 * catch (error) { if (error instanceof SafetensorsError) console.error(error.file, error.tensor, error.message); }
 * ```
 */
export class SafetensorsError extends RrtError {
  /** The file (or directory) concerned. */
  readonly file: string;
  /** The tensor concerned, when there is one. */
  readonly tensor: string | undefined;
  /** The header field concerned, when there is one. */
  readonly field: string | undefined;

  constructor(file: string, detail: string, location: SafetensorsErrorLocation = {}) {
    const tensorPart = location.tensor === undefined ? '' : `: tensor ${JSON.stringify(location.tensor)}`;
    const fieldPart = location.field === undefined ? '' : ` field "${location.field}"`;
    const where = tensorPart === '' && fieldPart !== '' ? `:${fieldPart}` : `${tensorPart}${fieldPart}`;
    super(`${file}${where}: ${detail}`, location.cause === undefined ? undefined : { cause: location.cause });
    this.file = file;
    this.tensor = location.tensor;
    this.field = location.field;
  }
}

/** A `config.json` (or its `recursion` section) is missing a field or holds a bad value. */
export class ConfigError extends RrtError {
  constructor(
    /** The config file. */
    readonly file: string,
    /** The field at fault (dotted path). */
    readonly field: string,
    /** What was expected there. */
    readonly expected: string,
  ) {
    super(`${file}: field "${field}" must be ${expected}`);
  }
}

/** A checkpoint lacks a tensor the config needs, or holds one of the wrong shape or dtype. */
export class WeightError extends RrtError {
  constructor(
    /** The checkpoint directory or file. */
    readonly file: string,
    /** The tensor at fault. */
    readonly tensor: string,
    /** What is wrong. */
    readonly problem: string,
  ) {
    super(`${file}: tensor "${tensor}" ${problem}`);
  }
}

/**
 * Replacing an output directory failed, and moving the previous one back failed too: the previous
 * output is kept at {@link OutputRestoreError.aside}. `cause` is the failure of the replacement.
 */
export class OutputRestoreError extends RrtError {
  /** The output path. */
  readonly path: string;
  /** Where the previous output now is. */
  readonly aside: string;
  /** Why moving it back failed. */
  readonly restoreError: unknown;

  constructor(path: string, aside: string, options: { cause: unknown; restoreError: unknown }) {
    const text = (error: unknown) => (error instanceof Error ? error.message : String(error));
    super(
      `${path}: replacing the output failed (${text(options.cause)}) and restoring the previous one failed too ` +
        `(${text(options.restoreError)}); the previous output is at ${aside}`,
      { cause: options.cause },
    );
    this.path = path;
    this.aside = aside;
    this.restoreError = options.restoreError;
  }
}

/**
 * A tokenizer file is missing, malformed or inconsistent, or a tokenizer was used outside its vocabulary.
 * The message names the file and says what was wrong.
 */
export class TokenizerError extends RrtError {
  constructor(
    /** The file at fault (or the tokenizer's source, when no single file is). */
    readonly file: string,
    /** What was wrong with it. */
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

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

/**
 * An output path would overwrite or sit inside one of the command's inputs (or contain one), once
 * symbolic links are followed: writing there would destroy the input. Nothing was written.
 *
 * @example
 * ```ts
 * try { await assertOutputApart('models/link', [{ path: 'models/stories260K', role: 'source' }]); }
 * catch (error) { if (error instanceof OutputLocationError) console.error(error.message); }
 * ```
 */
export class OutputLocationError extends RrtError {
  constructor(
    /** The output path as given. */
    readonly path: string,
    /** The input it collides with, as given. */
    readonly input: string,
    /** How they collide. */
    readonly relation: 'same' | 'output-inside-input' | 'input-inside-output',
  ) {
    const how = {
      same: `is the same directory as the input ${input}`,
      'output-inside-input': `lies inside the input ${input}`,
      'input-inside-output': `contains the input ${input}`,
    }[relation];
    super(`${path}: the output ${how} (symbolic links followed); choose an output path outside it`);
  }
}

/** A long operation was stopped through its `AbortSignal`; whatever it was writing was removed. */
export class InterruptedError extends RrtError {
  constructor(
    /** What was stopped (`conversion`, `export`, `import`). */
    readonly operation: string,
    options?: { cause?: unknown },
  ) {
    super(`${operation} interrupted; nothing written`, options);
  }
}
