import { createKVCache } from '@rrt/kv-cache';
import type { Decoder } from '../model/decoder.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { createSampler, type SamplingOptions } from './sampling.js';

/**
 * Why a generation ended: a stop token (`eos`), a stop string (`stop`), the token budget (`max-tokens`),
 * the model's last position (`context`), or the abort signal (`aborted`).
 */
export type StopReason = 'eos' | 'stop' | 'max-tokens' | 'context' | 'aborted';

/** Options of {@link generateTokens}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate. */
  maxTokens: number;
  /** Ids that end generation (not yielded); defaults to the config's `eos_token_id`. */
  stopTokens?: readonly number[];
  /** Stops generation (quietly, after the token in flight) when aborted. */
  signal?: AbortSignal;
  /** Called once, when the generation ends, with why. */
  onStop?: (reason: StopReason) => void;
}

/**
 * Lets the event loop run: timers, I/O and signal handlers (Ctrl-C) wait for a macrotask, and a compute
 * loop whose backend reads settle as microtasks would otherwise never give them one. Await it once per
 * step of any long loop (decoding, scoring, training).
 *
 * @example
 * ```ts
 * for (const batch of batches) { await yieldToEventLoop(); if (signal?.aborted) break; score(batch); }
 * ```
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) =>
    typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0),
  );
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
  let reason: StopReason = maxTokens < options.maxTokens ? 'context' : 'max-tokens';
  try {
    let input = promptIds;
    for (let step = 0; step < maxTokens; step++) {
      await yieldToEventLoop();
      if (options.signal?.aborted) {
        reason = 'aborted';
        return;
      }
      const logits = await nextTokenLogits(decoder, input, cache);
      const next = sample(logits);
      if (stopTokens.has(next)) {
        reason = 'eos';
        return;
      }
      yield next;
      input = [next];
    }
  } finally {
    cache.dispose();
    options.onStop?.(reason);
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
  /**
   * Texts that end generation where they first appear in the new text; they are not yielded (reason
   * `stop`). Text that could be the start of one is held back until it is known not to be.
   */
  stopStrings?: readonly string[];
}

/**
 * The token ids {@link generateText} starts from: `prompt` encoded (with BOS as the tokenizer adds it, or
 * as `addBos` says), and BOS alone for an empty prompt.
 *
 * @example
 * ```ts
 * const ids = encodePrompt(tokenizer, 'Once upon a time');
 * if (ids.length >= model.config.maxPositionEmbeddings) throw new Error('prompt too long');
 * ```
 */
export function encodePrompt(tokenizer: Tokenizer, prompt: string, addBos?: boolean): number[] {
  const promptIds = tokenizer.encode(prompt, addBos === undefined ? {} : { addBos });
  if (promptIds.length === 0 || (prompt === '' && promptIds[0] !== tokenizer.bosId)) {
    if (tokenizer.bosId === undefined)
      throw new RangeError('an empty prompt needs a tokenizer with a BOS token');
    promptIds.unshift(tokenizer.bosId);
  }
  return promptIds;
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
  const promptIds = encodePrompt(tokenizer, prompt, options.addBos);
  const stopTokens = options.stopTokens ?? (tokenizer.eosIds.length > 0 ? tokenizer.eosIds : undefined);
  const stream = tokenizer.createDecodeStream();
  // The prompt goes through the stream unprinted, so the first new token decodes in context (a Llama
  // decoder strips the leading space of a sequence's first token, not of a continuation's).
  for (const id of promptIds) stream.push(id);
  const stops = new StopStringFilter(options.stopStrings ?? []);
  let reason: StopReason = 'max-tokens';
  const tokens = generateTokens(decoder, promptIds, {
    ...options,
    stopTokens,
    onStop: (tokenReason) => {
      reason = tokenReason;
    },
  });
  try {
    for await (const id of tokens) {
      options.onToken?.(id);
      const piece = stops.push(stream.push(id));
      if (piece) yield piece;
      if (stops.stopped) return;
    }
    const rest = stops.push(stream.flush(), true);
    if (rest) yield rest;
  } finally {
    await tokens.return(); // ends the token generator (and reports its reason) when a stop string cut it short
    options.onStop?.(stops.stopped ? 'stop' : reason);
  }
}

/** Cuts generated text at the first stop string, holding back what may be the start of one. */
class StopStringFilter {
  stopped = false;
  private pending = '';

  constructor(private readonly stops: readonly string[]) {}

  /** Adds a piece; returns the text now safe to show (all of it at the `end`). */
  push(piece: string, end = false): string {
    if (this.stopped) return '';
    if (this.stops.length === 0) return piece;
    this.pending += piece;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      return this.pending.slice(0, cut);
    }
    // Keep the longest tail that is a proper prefix of some stop string.
    let keep = 0;
    if (!end) {
      for (const stop of this.stops) {
        for (let length = Math.min(stop.length - 1, this.pending.length); length > keep; length--) {
          if (this.pending.endsWith(stop.slice(0, length))) {
            keep = length;
            break;
          }
        }
      }
    }
    const safe = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return safe;
  }
}
