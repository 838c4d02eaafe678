/**
 * Typed errors of `@rrt/convert`. Every one is a {@link ConvertError} (itself an `RrtError` of
 * `@rrt/core`), and each message names the option, file or tensor at fault and what was expected. A
 * conversion that throws one of these before writing has created nothing; one that throws later has
 * removed its temporary output, so no output directory is ever left half-written.
 *
 * @module
 */
import { RrtError } from '@rrt/core';

/**
 * Base class of every error `@rrt/convert` raises on purpose.
 *
 * @example
 * ```ts
 * try { await convertToRecursive(src, out, { loops: 2 }); }
 * catch (error) { if (error instanceof ConvertError) console.error(error.message); else throw error; }
 * ```
 */
export class ConvertError extends RrtError {}

/** An option is out of range: a non-integer or non-positive number of loops, a negative rank, an unknown init... */
export class InvalidOptionError extends ConvertError {
  /** The option at fault, as the API spells it (`loops`, `ranks.ffn`, `alpha`...). */
  readonly option: string;

  constructor(option: string, expected: string, got: unknown) {
    super(`option "${option}": expected ${expected}, got ${describe(got)}`);
    this.option = option;
  }
}

/** A (K, L) layout that the source's number of layers cannot take. */
export interface LayoutPair {
  /** K: stored (looped) block layers. */
  blockSize: number;
  /** L: how many times the block runs. */
  loops: number;
}

/**
 * The asked block size and loops do not tile the source's layers (K·L ≠ N, or K·L ≠ N − 2 for
 * middle-cycle) and subsampling was not asked for. {@link IncompatibleLayoutError.validPairs} lists the
 * layouts that would work.
 */
export class IncompatibleLayoutError extends ConvertError {
  readonly numLayers: number;
  readonly validPairs: readonly LayoutPair[];

  constructor(
    file: string,
    numLayers: number,
    asked: string,
    strategy: string,
    validPairs: readonly LayoutPair[],
  ) {
    const pairs = validPairs.map((pair) => `${pair.blockSize}×${pair.loops}`).join(', ');
    const middle =
      strategy === 'middle-cycle' ? ' (middle-cycle keeps the first and last layer, so K·L = N − 2)' : '';
    super(
      `${file}: num_hidden_layers ${numLayers} cannot be split as ${asked} with strategy ${strategy}${middle}; ` +
        `valid K×L: ${pairs || 'none'} (or pass subsample: true / --subsample to drop layers)`,
    );
    this.numLayers = numLayers;
    this.validPairs = validPairs;
  }
}

/** The source's `model_type` is not one the decoder runs, or the source is already recursive. */
export class UnsupportedArchitectureError extends ConvertError {
  readonly file: string;

  constructor(file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.file = file;
  }
}

/**
 * A source tensor is missing, has a shape that disagrees with the config (or with the other layers), or
 * has a dtype that is not F32, F16 or BF16; or the source cannot be read.
 */
export class SourceCheckpointError extends ConvertError {
  readonly file: string;
  readonly tensor: string | undefined;

  constructor(file: string, tensor: string | undefined, detail: string, options?: { cause?: unknown }) {
    super(`${file}${tensor === undefined ? '' : `: tensor "${tensor}"`}: ${detail}`, options);
    this.file = file;
    this.tensor = tensor;
  }
}

/** The source changed or vanished while it was being converted; the output was discarded. */
export class SourceChangedError extends ConvertError {
  readonly file: string;

  constructor(file: string, detail: string, options?: { cause?: unknown }) {
    super(
      `${file}: ${detail}; the source changed during the conversion, so the output was discarded`,
      options,
    );
    this.file = file;
  }
}

/** The output path exists and overwriting was not asked for. */
export class OutputExistsError extends ConvertError {
  readonly path: string;

  constructor(path: string) {
    super(`${path}: the output path exists; remove it or pass overwrite: true (--overwrite)`);
    this.path = path;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return JSON.stringify(value) ?? String(value);
}
