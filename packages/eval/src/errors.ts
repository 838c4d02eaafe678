/** Typed errors of `@rrt/eval`. @module */
import { RrtError } from '@rrt/core';

/**
 * An evaluation was asked for something it cannot do: a bad window or stride, a text with nothing to
 * score. The message names the option and what was expected.
 *
 * @example
 * ```ts
 * try { await windowPerplexity(model, ids, { window: 64, stride: 64 }); }
 * catch (error) { if (error instanceof EvalOptionError) console.error(error.option, error.message); }
 * ```
 */
export class EvalOptionError extends RrtError {
  constructor(
    /** The option (or input) concerned: `window`, `stride`, `maxTokens`, `text`, ... */
    readonly option: string,
    detail: string,
  ) {
    super(`${option}: ${detail}`);
  }
}
