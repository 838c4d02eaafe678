/**
 * Text to token ids for the two perplexity protocols. Raw corpora are encoded with special-token
 * parsing off: WikiText holds a literal `<unk>`, which is text there, not the unknown token.
 *
 * @module
 */
import type { Tokenizer } from '@rrt/core';
import { EvalOptionError } from './errors.js';

/**
 * Splits a text into documents at blank lines (lines holding only whitespace), each trimmed; empty
 * documents are dropped.
 *
 * @example
 * ```ts
 * splitDocuments('One.\n\n  \nTwo\nlines.\n'); // ['One.', 'Two\nlines.']
 * ```
 */
export function splitDocuments(text: string): string[] {
  return text
    .split(/\r?\n[^\S\n]*\r?\n/)
    .map((document) => document.trim())
    .filter((document) => document.length > 0);
}

/**
 * Encodes each document of {@link splitDocuments} as BOS followed by its ids, special-token parsing off:
 * the input of {@link documentsPerplexity}.
 *
 * @throws {@link EvalOptionError} when the tokenizer has no BOS token.
 */
export function encodeDocuments(tokenizer: Tokenizer, text: string): number[][] {
  const bos = requireBos(tokenizer);
  return splitDocuments(text).map((document) => [
    bos,
    ...tokenizer.encode(document, { addBos: false, parseSpecialTokens: false }),
  ]);
}

/**
 * Encodes a whole text as one stream, BOS first (when the tokenizer has one), special-token parsing off:
 * the input of {@link windowPerplexity}.
 */
export function encodeStream(tokenizer: Tokenizer, text: string): number[] {
  const ids = tokenizer.encode(text, { addBos: false, parseSpecialTokens: false });
  return tokenizer.bosId === undefined ? ids : [tokenizer.bosId, ...ids];
}

function requireBos(tokenizer: Tokenizer): number {
  if (tokenizer.bosId === undefined) {
    throw new EvalOptionError(
      'tokenizer',
      `${tokenizer.source} has no BOS token; the documents protocol scores each document from BOS (use the window protocol)`,
    );
  }
  return tokenizer.bosId;
}
