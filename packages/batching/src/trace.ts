/**
 * Request traces for benchmarks: a seeded trace (Poisson arrivals, prompt and output lengths from seeded
 * uniform distributions) and {@link runTrace}, which replays one through an {@link Engine} in wall-clock
 * time and records what each request saw.
 *
 * @module
 */
import { seededRandom } from '@rrt/core';
import type { Engine } from './engine.js';
import { CalibrationError } from './errors.js';

/** One request of a trace. */
export interface TraceRequest {
  /** Milliseconds after the trace's start at which the request arrives. */
  arrivalMs: number;
  /** Prompt token ids (BOS first when the trace was given one). */
  prompt: number[];
  /** Tokens to generate (traces run without stop tokens, so every request generates exactly this many). */
  maxTokens: number;
}

/** Options of {@link generateTrace}. */
export interface TraceOptions {
  /** Number of requests (e.g. 256). */
  requests: number;
  seed: number;
  /** Mean arrivals per second (Poisson: exponential gaps). */
  ratePerSecond: number;
  /** Prompt length range, BOS included, both ends inclusive. */
  promptLength: readonly [number, number];
  /** Output length range, both ends inclusive. */
  outputLength: readonly [number, number];
  /** Vocabulary size: prompt ids are drawn from `3 … vocabSize − 1` when no `text` is given. */
  vocabSize: number;
  /** Token ids of real text: each prompt is a slice of it at a seeded offset (after BOS). */
  text?: readonly number[];
  /** Prepended to every prompt when given. */
  bosId?: number;
}

function checkRange(name: string, [low, high]: readonly [number, number], min: number): void {
  if (!Number.isInteger(low) || !Number.isInteger(high) || low < min || high < low) {
    throw new CalibrationError(name, `integers min ≤ max, min ≥ ${min} (got ${low}…${high})`);
  }
}

/**
 * A seeded request trace: the same options give the same trace.
 *
 * @example
 * ```ts
 * const trace = generateTrace({ requests: 256, seed: 7, ratePerSecond: 200, promptLength: [4, 32], outputLength: [8, 48], vocabSize: 512, bosId: 1 });
 * ```
 */
export function generateTrace(options: TraceOptions): TraceRequest[] {
  const { requests, seed, ratePerSecond, vocabSize, text, bosId } = options;
  if (!Number.isInteger(requests) || requests < 1) {
    throw new CalibrationError('requests', `a positive integer (got ${requests})`);
  }
  if (!(ratePerSecond > 0)) throw new CalibrationError('ratePerSecond', `positive (got ${ratePerSecond})`);
  checkRange('promptLength', options.promptLength, bosId === undefined ? 1 : 2);
  checkRange('outputLength', options.outputLength, 1);
  const body = bosId === undefined ? 0 : 1;
  if (text && text.length < options.promptLength[1] - body) {
    throw new CalibrationError(
      'text',
      `at least ${options.promptLength[1] - body} tokens (got ${text.length})`,
    );
  }
  const random = seededRandom(seed);
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  let arrivalMs = 0;
  return Array.from({ length: requests }, () => {
    arrivalMs += (-Math.log(1 - random()) / ratePerSecond) * 1000;
    const length = int(options.promptLength[0], options.promptLength[1]) - body;
    const start = text ? int(0, text.length - length) : 0;
    const tokens = text
      ? text.slice(start, start + length)
      : Array.from({ length }, () => int(Math.min(3, vocabSize - 1), vocabSize - 1));
    return {
      arrivalMs,
      prompt: bosId === undefined ? [...tokens] : [bosId, ...tokens],
      maxTokens: int(options.outputLength[0], options.outputLength[1]),
    };
  });
}

/** What one request of a trace saw (measured by {@link runTrace} or simulated). */
export interface RequestResult {
  /** Tokens generated (empty in a simulation). */
  tokens: number[];
  /** Exit loop of each token (0-based). */
  exitLoops: number[];
  /** Milliseconds from arrival to the first token. */
  ttftMs: number;
  /** Mean milliseconds between tokens after the first (NaN with fewer than two). */
  tpotMs: number;
}

/** A whole trace's run. */
export interface TraceRun {
  requests: RequestResult[];
  /** Seconds from the trace's start to its last request's end. */
  seconds: number;
}

/**
 * Replays `trace` through `engine` in wall-clock time: each request is submitted at its arrival time
 * (no stop tokens), and the run ends when every request has finished. Measures wall time; for benchmarks.
 */
export async function runTrace(engine: Engine, trace: readonly TraceRequest[]): Promise<TraceRun> {
  const started = performance.now();
  const runs: Promise<RequestResult>[] = [];
  for (const request of trace) {
    const wait = request.arrivalMs - (performance.now() - started);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const stream = engine.generate(request.prompt, { maxTokens: request.maxTokens, stopTokens: [] });
    runs.push(
      (async () => {
        const tokens: number[] = [];
        while (true) {
          const next = await stream.next();
          if (next.done) {
            const stats = next.value;
            return {
              tokens,
              exitLoops: stats.exitLoops,
              ttftMs: stats.timeToFirstTokenMs,
              tpotMs: stats.timePerOutputTokenMs,
            };
          }
          tokens.push(next.value);
        }
      })(),
    );
  }
  const requests = await Promise.all(runs);
  return { requests, seconds: (performance.now() - started) / 1000 };
}
