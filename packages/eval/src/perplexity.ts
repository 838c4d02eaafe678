/**
 * Perplexity of a decoder on token ids, in two protocols, optionally read out after every loop.
 *
 * Both protocols reduce to scoring *spans*: a run of ids fed to the model from position 0, of which the
 * ids from some position on are targets, each predicted by the logits of the position before it. Spans of
 * different lengths share a batch right-padded: under the causal mask a position never sees the ones
 * after it, so padding changes no scored logit (exact in the arithmetic; rounding may differ in the last
 * bits where kernels sum rows of different lengths).
 *
 * @module
 */
import { type Decoder, exitDepths, InterruptedError, yieldToEventLoop } from '@rrt/core';
import type { Tensor } from '@rrt/tensor';
import { EvalOptionError } from './errors.js';

/** Options shared by {@link documentsPerplexity} and {@link windowPerplexity}. */
export interface PerplexityOptions {
  /** Also read out perplexity after every loop (what an early exit there would give). Default false. */
  perLoop?: boolean;
  /**
   * Score at most this many tokens, taken in text order (the last document or window is cut so that
   * exactly this many are scored when the text has that many).
   */
  maxTokens?: number;
  /**
   * Padded tokens per batch (batch size × longest span). Default: 1024, fewer for large vocabularies so
   * that a batch's logits stay under 2²⁴ values per readout. A span longer than this runs alone.
   * NOTE: on tfjs-wasm batching gains little (bench/eval.ts: 1024 scored stories260K 1.15–1.26× faster
   * per CPU second than one document per pass; 4096 0.98–1.07×, 16384 0.61×).
   */
  batchTokens?: number;
  /** Called after every batch. */
  onProgress?: (progress: PerplexityProgress) => void;
  /** Stops scoring before the next batch, with an `InterruptedError` of `@rrt/core`. */
  signal?: AbortSignal;
}

/** Options of {@link documentsPerplexity}. */
export interface DocumentsOptions extends PerplexityOptions {
  /** Longest span fed to the model, BOS included; default (and at most) `max_position_embeddings`. */
  context?: number;
}

/** Options of {@link windowPerplexity}. */
export interface WindowOptions extends PerplexityOptions {
  /** Tokens per window; default (and at most) `max_position_embeddings`. */
  window?: number;
  /** Tokens the window moves by, `1 ≤ stride < window`; default half the window. */
  stride?: number;
}

/** Passed to {@link PerplexityOptions.onProgress} after every batch. */
export interface PerplexityProgress {
  /** Tokens scored so far. */
  scoredTokens: number;
  /** Tokens the run will score. */
  totalTokens: number;
  /** Spans (documents or windows) done. */
  spans: number;
  /** Spans in the run. */
  totalSpans: number;
}

/** Perplexity read out at one exit depth. */
export interface ReadoutPerplexity {
  /** Which pass over the block it follows (see `LoopOutput.loopIndex` of `@rrt/core`). */
  loopIndex: number;
  /** Effective depth of the last layer before the readout. */
  depth: number;
  /** Whether this is the model's own, full-depth output. */
  final: boolean;
  /** Sum of −log p(target) over the scored tokens, in nats. */
  negativeLogLikelihood: number;
  /** `exp(negativeLogLikelihood / tokens)`. */
  perplexity: number;
}

/** Result of {@link documentsPerplexity} and {@link windowPerplexity}. */
export interface PerplexityResult {
  protocol: 'documents' | 'window';
  /** Full-depth perplexity, `exp(negativeLogLikelihood / tokens)`. */
  perplexity: number;
  /** Sum of −log p(target) over the scored tokens at full depth, in nats. */
  negativeLogLikelihood: number;
  /** Tokens scored (BOS is never a target). */
  tokens: number;
  /** Documents or windows scored. */
  spans: number;
  /** Documents protocol: tokens past the context in the documents scored, left unscored. Window: 0. */
  truncatedTokens: number;
  /** Longest span fed to the model (documents: the context; window: the window). */
  context: number;
  /** Window protocol: the stride. */
  stride?: number;
  /** With `perLoop`: one entry per exit depth, the last being the full-depth one. */
  loops?: ReadoutPerplexity[];
}

/** A run of ids fed from position 0, whose ids from `firstTarget` on are scored. */
interface Span {
  ids: readonly number[];
  firstTarget: number;
}

/**
 * Documents protocol: each document (BOS first, as {@link encodeDocuments} makes them) is scored from its
 * start, truncated at the context; every token after BOS is a target.
 *
 * @example
 * ```ts
 * const documents = encodeDocuments(tokenizer, await readFile('val.txt', 'utf8'));
 * const { perplexity, tokens } = await documentsPerplexity(model, documents, { perLoop: true });
 * ```
 */
export async function documentsPerplexity(
  model: Decoder,
  documents: readonly (readonly number[])[],
  options: DocumentsOptions = {},
): Promise<PerplexityResult> {
  const context = lengthOption('context', options.context, model.config.maxPositionEmbeddings, 2);
  const maxTokens = maxTokensOption(options.maxTokens);
  const spans: Span[] = [];
  let truncatedTokens = 0;
  let budget = maxTokens;
  for (const document of documents) {
    if (budget <= 0) break;
    let ids = document.slice(0, context);
    if (ids.length - 1 > budget) ids = ids.slice(0, budget + 1);
    else truncatedTokens += document.length - ids.length;
    if (ids.length < 2) continue;
    spans.push({ ids, firstTarget: 1 });
    budget -= ids.length - 1;
  }
  const scores = await scoreSpans(model, spans, options);
  return result('documents', scores, spans.length, truncatedTokens, context, undefined);
}

/**
 * Sliding-window protocol, as Hugging Face's perplexity guide: windows of `window` ids start every
 * `stride` ids; each scores only the ids no earlier window scored, so every id after the first is
 * scored exactly once, with at least `window − stride` ids of context (except in the first window).
 *
 * @throws {@link EvalOptionError} for a window over the model's context or a stride outside `[1, window)`.
 *
 * @example
 * ```ts
 * const ids = encodeStream(tokenizer, text);
 * const { perplexity } = await windowPerplexity(model, ids, { window: 512, stride: 256 });
 * ```
 */
export async function windowPerplexity(
  model: Decoder,
  ids: readonly number[],
  options: WindowOptions = {},
): Promise<PerplexityResult> {
  const window = lengthOption('window', options.window, model.config.maxPositionEmbeddings, 2);
  const stride = options.stride ?? Math.floor(window / 2);
  if (!Number.isInteger(stride) || stride < 1 || stride >= window) {
    throw new EvalOptionError(
      'stride',
      `an integer in [1, ${window - 1}] (below the window, so that every token is scored; got ${stride})`,
    );
  }
  const maxTokens = maxTokensOption(options.maxTokens);
  const stream = ids.slice(0, maxTokens + 1);
  const spans: Span[] = [];
  let scoredUpTo = 1; // ids before this are scored (id 0 has nothing to be predicted from)
  for (let begin = 0; scoredUpTo < stream.length; begin += stride) {
    const end = Math.min(begin + window, stream.length);
    spans.push({ ids: stream.slice(begin, end), firstTarget: scoredUpTo - begin });
    scoredUpTo = end;
  }
  const scores = await scoreSpans(model, spans, options);
  return result('window', scores, spans.length, 0, window, stride);
}

interface Readout {
  loopIndex: number;
  depth: number;
  final: boolean;
}

interface Scores {
  tokens: number;
  /** −log-likelihood sums, one per readout (one when not per loop). */
  sums: Float64Array;
  /** Per loop: what each readout is, as the forward pass reported it. */
  readouts: Readout[] | undefined;
}

function result(
  protocol: PerplexityResult['protocol'],
  scores: Scores,
  spans: number,
  truncatedTokens: number,
  context: number,
  stride: number | undefined,
): PerplexityResult {
  const perplexity = (nll: number) => Math.exp(nll / scores.tokens);
  const negativeLogLikelihood = scores.sums[scores.sums.length - 1]!;
  return {
    protocol,
    perplexity: perplexity(negativeLogLikelihood),
    negativeLogLikelihood,
    tokens: scores.tokens,
    spans,
    truncatedTokens,
    context,
    ...(stride === undefined ? {} : { stride }),
    ...(scores.readouts === undefined
      ? {}
      : {
          loops: scores.readouts.map((readout, r) => ({
            ...readout,
            negativeLogLikelihood: scores.sums[r]!,
            perplexity: perplexity(scores.sums[r]!),
          })),
        }),
  };
}

/** Scores every span, in batches of spans of similar length; sums −log p per readout in float64. */
async function scoreSpans(
  model: Decoder,
  spans: readonly Span[],
  options: PerplexityOptions,
): Promise<Scores> {
  const perLoop = options.perLoop === true;
  const totalTokens = spans.reduce((sum, span) => sum + span.ids.length - span.firstTarget, 0);
  if (totalTokens === 0) {
    throw new EvalOptionError('text', 'has no token to score (it needs at least one token after the first)');
  }
  const readoutCount = perLoop ? exitDepths(model.config.recursion, model.config.numHiddenLayers).length : 1;
  const batchTokens =
    options.batchTokens ??
    Math.max(1, Math.min(1024, Math.floor(2 ** 24 / (model.config.vocabSize * readoutCount))));
  if (!Number.isInteger(batchTokens) || batchTokens < 1) {
    throw new EvalOptionError('batchTokens', `a positive integer (got ${batchTokens})`);
  }
  const sums = new Float64Array(readoutCount);
  let readouts: Readout[] | undefined;
  let scoredTokens = 0;
  let spansDone = 0;
  for (const batch of batchesBySize(spans, batchTokens)) {
    await yieldToEventLoop();
    if (options.signal?.aborted) throw new InterruptedError('evaluation', { cause: options.signal.reason });
    const scored = await scoreBatch(model, batch, perLoop);
    if (perLoop) readouts = scored.readouts;
    const perReadout = scored.logProbs.length / readoutCount;
    for (let r = 0; r < readoutCount; r++) {
      // Summed per batch, then across batches, in float64.
      let sum = 0;
      for (let i = r * perReadout; i < (r + 1) * perReadout; i++) sum -= scored.logProbs[i]!;
      sums[r]! += sum;
    }
    scoredTokens += perReadout;
    spansDone += batch.length;
    options.onProgress?.({ scoredTokens, totalTokens, spans: spansDone, totalSpans: spans.length });
  }
  return { tokens: scoredTokens, sums, readouts };
}

/**
 * Groups spans, longest first, into batches whose padded size (count × longest) stays within
 * `batchTokens`; a span longer than that runs alone.
 */
function batchesBySize(spans: readonly Span[], batchTokens: number): Span[][] {
  const sorted = [...spans].sort((a, b) => b.ids.length - a.ids.length);
  const batches: Span[][] = [];
  let current: Span[] = [];
  for (const span of sorted) {
    const longest = current[0]?.ids.length ?? span.ids.length;
    if (current.length > 0 && (current.length + 1) * longest > batchTokens) {
      batches.push(current);
      current = [];
    }
    current.push(span);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * One forward pass over a right-padded batch; returns log p(target) of every target, readout after
 * readout (all of the first readout's targets, then the second's, ...), read back in one transfer.
 */
async function scoreBatch(
  model: Decoder,
  spans: readonly Span[],
  perLoop: boolean,
): Promise<{ logProbs: Float32Array; readouts: Readout[] }> {
  const { backend, config } = model;
  const length = spans[0]!.ids.length; // spans come longest first
  const input = new Int32Array(spans.length * length); // padding: id 0, never a target, never attended to
  const rows: number[] = []; // flat row [b·T + position] whose logits predict each target
  const targets: number[] = [];
  spans.forEach((span, b) => {
    input.set(span.ids, b * length);
    for (let position = span.firstTarget; position < span.ids.length; position++) {
      rows.push(b * length + position - 1);
      targets.push(span.ids[position]!);
    }
  });
  const vocab = config.vocabSize;
  const ids = backend.fromArray(input, [spans.length, length], 'int32');
  const output = model.forward(ids, { loopOutputs: perLoop });
  const readoutLogits = perLoop ? output.loops.map((loop) => loop.logits) : [output.logits];
  const picked = backend.tidy(() => {
    const rowIndex = backend.fromArray(Int32Array.from(rows), [rows.length], 'int32');
    // Target k sits at k·vocab + target in the flattened [targets, vocab] log-probabilities.
    const flatIndex = backend.fromArray(
      Int32Array.from(targets, (target, k) => k * vocab + target),
      [targets.length],
      'int32',
    );
    const perReadout = readoutLogits.map((logits) => {
      const scored = backend.gather(backend.reshape(logits, [-1, vocab]), rowIndex); // [targets, vocab]
      const logProbs = backend.reshape(backend.logSoftmax(scored, -1), [-1]);
      return backend.gather(logProbs, flatIndex); // [targets]
    });
    return perReadout.length === 1 ? perReadout[0]! : backend.concat(perReadout, 0);
  });
  const readouts = output.loops.map(({ loopIndex, depth, final }) => ({ loopIndex, depth, final }));
  backend.dispose([
    ids,
    output.logits,
    ...output.loops.flatMap((loop): Tensor[] => [loop.hidden, loop.logits]),
  ]);
  try {
    return { logProbs: (await backend.read(picked)) as Float32Array, readouts };
  } finally {
    backend.dispose(picked);
  }
}

function lengthOption(name: string, value: number | undefined, max: number, min: number): number {
  const length = value ?? max;
  if (!Number.isInteger(length) || length < min || length > max) {
    throw new EvalOptionError(
      name,
      `an integer in [${min}, ${max}] (max_position_embeddings bounds it; got ${length})`,
    );
  }
  return length;
}

function maxTokensOption(value: number | undefined): number {
  if (value === undefined) return Number.POSITIVE_INFINITY;
  if (!Number.isInteger(value) || value < 1) {
    throw new EvalOptionError('maxTokens', `a positive integer (got ${value})`);
  }
  return value;
}
