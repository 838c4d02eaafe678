import { createKVCache } from '@rrt/kv-cache';
import type { Decoder } from '../model/decoder.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { createSampler, type SamplingOptions } from './sampling.js';

/** Options of {@link generateTokens}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate. */
  maxTokens: number;
  /** Ids that end generation (not yielded); defaults to the config's `eos_token_id`. */
  stopTokens?: readonly number[];
  /** Stops generation (quietly, after the token in flight) when aborted. */
  signal?: AbortSignal;
}

/**
 * Generates tokens after `promptIds`, one at a time: the prompt is prefilled in one batched forward, then
 * each new token is decoded against the KV cache. Stops at a stop token, `maxTokens`, the model's last
 * position (`max_position_embeddings`), or the abort signal; everything it allocated is freed when the iteration ends, however it ends.
 *
 * @example
 * ```ts
 * for await (const id of generateTokens(model.decoder, [1], { maxTokens: 64 })) process.stdout.write(`${id} `);
 * ```
 */
export async function* generateTokens(
  decoder: Decoder,
  promptIds: readonly number[],
  options: GenerateOptions,
): AsyncGenerator<number, void, undefined> {
  const { backend, config } = decoder;
  if (promptIds.length === 0)
    throw new RangeError('generateTokens needs at least one prompt token (e.g. BOS)');
  if (!Number.isInteger(options.maxTokens) || options.maxTokens < 0) {
    throw new RangeError(`maxTokens must be a non-negative integer (got ${options.maxTokens})`);
  }
  if (promptIds.length >= config.maxPositionEmbeddings) {
    throw new RangeError(
      `the prompt has ${promptIds.length} tokens; the model runs at most ${config.maxPositionEmbeddings} positions`,
    );
  }
  // Generation ends when the positions run out, whatever maxTokens asked for.
  const capacity = Math.min(config.maxPositionEmbeddings, promptIds.length + options.maxTokens);
  const maxTokens = capacity - promptIds.length;
  const stopTokens = new Set(options.stopTokens ?? config.eosTokenIds);
  const sample = createSampler(options);
  const cache = createKVCache(backend, { depths: config.numHiddenLayers, capacity });
  try {
    let input = promptIds;
    for (let step = 0; step < maxTokens; step++) {
      if (options.signal?.aborted) return;
      const logits = await nextTokenLogits(decoder, input, cache);
      const next = sample(logits);
      if (stopTokens.has(next)) return;
      yield next;
      input = [next];
    }
  } finally {
    cache.dispose();
  }
}

/** Feeds `ids` to the model (appending to `cache`) and reads back the last position's logits. */
async function nextTokenLogits(
  decoder: Decoder,
  ids: readonly number[],
  cache: ReturnType<typeof createKVCache>,
): Promise<Float32Array> {
  const { backend } = decoder;
  const idsTensor = backend.fromArray(Int32Array.from(ids), [1, ids.length], 'int32');
  try {
    const { logits } = decoder.forward(idsTensor, { cache, lastPositionOnly: true });
    try {
      return (await backend.read(logits)) as Float32Array;
    } finally {
      backend.dispose(logits);
    }
  } finally {
    backend.dispose(idsTensor);
  }
}

/** Options of {@link generateText}. */
export interface GenerateTextOptions extends GenerateOptions {
  /** Prepend BOS to the prompt (default: what the tokenizer does by default; always when the prompt is empty). */
  addBos?: boolean;
  /** Called with each generated token id (for counting and timing). */
  onToken?: (id: number) => void;
}

/**
 * Generates text after `prompt`, yielding decoded pieces as tokens arrive (a piece may hold back bytes of
 * a character that is not complete yet); `prompt` followed by the pieces is the whole text. Stops on the tokenizer's end-of-sequence ids unless
 * `stopTokens` says otherwise.
 *
 * @example
 * ```ts
 * for await (const piece of generateText(decoder, tokenizer, 'Once upon a time', { maxTokens: 100 })) {
 *   process.stdout.write(piece);
 * }
 * ```
 */
export async function* generateText(
  decoder: Decoder,
  tokenizer: Tokenizer,
  prompt: string,
  options: GenerateTextOptions,
): AsyncGenerator<string, void, undefined> {
  const promptIds = tokenizer.encode(prompt, options.addBos === undefined ? {} : { addBos: options.addBos });
  if (promptIds.length === 0 || (prompt === '' && promptIds[0] !== tokenizer.bosId)) {
    if (tokenizer.bosId === undefined)
      throw new RangeError('an empty prompt needs a tokenizer with a BOS token');
    promptIds.unshift(tokenizer.bosId);
  }
  const stopTokens = options.stopTokens ?? (tokenizer.eosIds.length > 0 ? tokenizer.eosIds : undefined);
  const stream = tokenizer.createDecodeStream();
  // The prompt goes through the stream unprinted, so the first new token decodes in context (a Llama
  // decoder strips the leading space of a sequence's first token, not of a continuation's).
  for (const id of promptIds) stream.push(id);
  for await (const id of generateTokens(decoder, promptIds, { ...options, stopTokens })) {
    options.onToken?.(id);
    const piece = stream.push(id);
    if (piece) yield piece;
  }
  const rest = stream.flush();
  if (rest) yield rest;
}
