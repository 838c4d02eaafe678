/** Node front end: reads a model directory's tokenizer files. @module */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TokenizerError } from '../errors.js';
import { type Tokenizer, tokenizerFromJson } from './tokenizer.js';

/**
 * Reads `tokenizer.json` from a model directory (the canonical Hugging Face layout), with
 * `tokenizer_config.json`, `generation_config.json` and `config.json` when present for the BOS / EOS ids.
 *
 * @throws {@link TokenizerError} naming the file when `tokenizer.json` is missing, or any of the files
 *   is not valid JSON or not a valid tokenizer.
 *
 * @example
 * ```ts
 * const tokenizer = await loadTokenizer('models/stories260K');
 * const ids = tokenizer.encode('Once upon a time', { addBos: true });
 * const stream = tokenizer.createDecodeStream();
 * for (const id of ids) process.stdout.write(stream.push(id));
 * ```
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokenizerJson = await readJson(join(dir, 'tokenizer.json'), true);
  return tokenizerFromJson(tokenizerJson, {
    source: dir,
    tokenizerConfig: await readJson(join(dir, 'tokenizer_config.json'), false),
    generationConfig: await readJson(join(dir, 'generation_config.json'), false),
    modelConfig: await readJson(join(dir, 'config.json'), false),
  });
}

/** Parses a JSON file; `undefined` when an optional one is absent. */
async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    if (code === 'ENOENT') throw new TokenizerError(file, 'not found');
    throw new TokenizerError(file, `could not be read: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TokenizerError(file, `is not valid JSON: ${(error as Error).message}`);
  }
}
