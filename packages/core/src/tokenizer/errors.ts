/** Errors raised while reading, converting or using a tokenizer. @module */

import { RrtError } from '../errors.js';

/**
 * A tokenizer file is missing, malformed or inconsistent, or a tokenizer was used outside its vocabulary.
 * The message names the file and says what was wrong.
 */
export class TokenizerError extends RrtError {
  override name = 'TokenizerError';
  constructor(
    /** The file at fault (or the tokenizer's source, when no single file is). */
    readonly file: string,
    /** What was wrong with it. */
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}
