import { createSampler, type Decoder, type SamplingOptions, yieldToEventLoop } from '@rrt/core';
import {
  createPagedKVCache,
  type KVSharing,
  type PagedAttentionPath,
  type PagedKVCache,
} from '@rrt/kv-cache';
import { QueueFullError, RequestError } from './errors.js';
import { type ExitPolicy, exitRule } from './exit.js';
import { type ExitKV, exitKVRule } from './exit-kv.js';
import { Executor } from './executor.js';
import { type BatchingMode, modeRule } from './modes.js';
import { type FinishReason, Scheduler } from './scheduler.js';

/** Options of {@link createEngine}. */
export interface EngineOptions {
  mode: BatchingMode;
  /** Most requests running at once. */
  maxSlots: number;
  /** Byte budget of the paged KV cache. */
  kvBytes: number;
  /** Exit rule per token (default `none`). */
  exit?: ExitPolicy;
  /** Positions per KV page (default 16). */
  pageSize?: number;
  /** Longest prompt chunk a step prefills per request (default 32). */
  chunkSize?: number;
  /** Most requests waiting for a slot; more are refused with {@link QueueFullError} (default 1024). */
  maxQueue?: number;
  /** KV sharing across loops (default `per-loop`). */
  sharing?: KVSharing;
  /**
   * How attention reads the paged history (default `paged`: one `Backend.pagedAttention` call per layer
   * over all rows; `gather`: a gathered copy and one attention call per sequence, the earlier path).
   */
  attention?: PagedAttentionPath;
  /**
   * Most tokens one step runs across every request (default unlimited): rows in flight first, then
   * decode tokens, then prompt chunks (each at most `chunkSize`) in what is left, as vLLM's chunked
   * prefill does. A token counts once per step, however many loops it runs in it.
   */
  maxStepTokens?: number;
  /**
   * What fills an early-exited token's skipped depths under per-loop KV (default `propagate`, CALM state
   * propagation; `complete` runs the token's remaining loops in the background, FREE-style). Recursive
   * sharing needs neither and refuses `complete`.
   */
  exitKV?: ExitKV;
}

/** Options of {@link Engine.generate}. */
export interface EngineGenerateOptions {
  /** Most tokens to generate. */
  maxTokens: number;
  /** Ids that end generation (not yielded); defaults to the config's `eos_token_id`. */
  stopTokens?: readonly number[];
  /** Cancels the request: its slot and pages are freed at the next step. */
  signal?: AbortSignal;
  /** Called as each token is decided, before it is yielded, with the loop it exited at (0-based). */
  onToken?: (token: number, exitLoop: number) => void;
  /**
   * How each token is picked from its exit loop's logits (default greedy). The same options and seed
   * give, with exit policy `none`, the tokens `generateTokens` gives: one draw per token, in order.
   * Exit rules still read the loop's unscaled max probability.
   */
  sampling?: SamplingOptions;
}

/** What a finished request reports. */
export interface RequestStats {
  reason: FinishReason;
  /** Tokens emitted. */
  tokens: number;
  /** The loop each token exited at (0-based). */
  exitLoops: number[];
  /** Milliseconds from the call to the first token (NaN when none came). */
  timeToFirstTokenMs: number;
  /** Mean milliseconds between tokens after the first (NaN with fewer than two). */
  timePerOutputTokenMs: number;
}

/** What the engine has done so far. */
export interface EngineStats {
  steps: number;
  /** Mean rows per step (a slot's row, plus its background completion rows under `exitKV: 'complete'`). */
  meanOccupancy: number;
  /** Most KV bytes held at once. */
  peakKVBytes: number;
  /** Most tokens (rows of every request) one step ran. */
  peakStepTokens: number;
  /** Tokens run by all steps together (a token counts once per step it runs in; propagations not counted). */
  stepTokens: number;
}

/**
 * A serving engine over one model: requests queue, take slots, and run in steps that the scheduler plans
 * and the executor runs; tokens stream back per request.
 */
export interface Engine {
  /**
   * Generates after `prompt` (token ids); yields tokens as they are decided and returns the request's
   * stats. Throws {@link QueueFullError} at once when the queue is full.
   */
  generate(prompt: readonly number[], options: EngineGenerateOptions): AsyncGenerator<number, RequestStats>;
  /** Counters of the steps run. */
  stats(): EngineStats;
  /** The paged KV cache (for byte accounting). */
  readonly cache: PagedKVCache;
  /** Frees the KV pools; call when no request is running. */
  dispose(): void;
}

/**
 * Creates an engine. The model must be vanilla or a `cycle` recursive model (loop `l` runs depths
 * `l·K … l·K + K − 1`).
 *
 * @example
 * ```ts
 * const engine = createEngine(model, { mode: 'depth', maxSlots: 8, kvBytes: 64 << 20, exit: { kind: 'confidence', threshold: 0.9 } });
 * for await (const token of engine.generate([1, 42], { maxTokens: 32 })) console.log(token);
 * ```
 */
export function createEngine(model: Decoder, options: EngineOptions): Engine {
  const { config } = model;
  const recursion = config.recursion;
  if (recursion && recursion.strategy !== 'cycle') {
    throw new RequestError(`the engine runs cycle models; this one shares by ${recursion.strategy}`);
  }
  const blockSize = recursion?.blockSize ?? config.numHiddenLayers;
  const loops = recursion?.loops ?? 1;
  if (!Number.isInteger(options.maxSlots) || options.maxSlots < 1) {
    throw new RequestError(`maxSlots must be a positive integer (got ${options.maxSlots})`);
  }
  // Every option is checked before the pool is allocated, so that a refusal leaves nothing behind.
  const rules = {
    mode: modeRule(options.mode),
    exit: exitRule(options.exit ?? { kind: 'none' }),
    exitKV: exitKVRule(options.exitKV ?? 'propagate'),
  };
  const cache = createPagedKVCache(model.backend, {
    depths: config.numHiddenLayers,
    blockSize,
    kvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    pageSize: options.pageSize ?? 16,
    bytes: options.kvBytes,
    ...(options.sharing ? { sharing: options.sharing } : {}),
    ...(options.attention ? { attention: options.attention } : {}),
  });
  if (options.exitKV === 'complete' && cache.sharing === 'recursive') {
    cache.dispose();
    throw new RequestError(
      "exitKV 'complete' fills per-loop KV; under recursive sharing loop 0's entries serve every loop",
    );
  }
  let scheduler: Scheduler;
  try {
    scheduler = new Scheduler(
      cache,
      rules.mode,
      rules.exit,
      {
        maxSlots: options.maxSlots,
        loops,
        chunkSize: options.chunkSize ?? 32,
        ...(options.maxStepTokens === undefined ? {} : { maxStepTokens: options.maxStepTokens }),
      },
      rules.exitKV,
    );
  } catch (error) {
    cache.dispose(); // a bad maxStepTokens
    throw error;
  }
  const executor = new Executor(
    model,
    blockSize,
    (id) => scheduler.sequenceOf(id),
    cache.sharing === 'per-loop',
  );
  const maxQueue = options.maxQueue ?? 1024;
  const counters = { steps: 0, rows: 0, peakKVBytes: 0, peakStepTokens: 0, stepTokens: 0 };
  let nextId = 0;
  /** Whether the step loop runs (one loop serves every request). */
  let driving = false;

  async function drive(): Promise<void> {
    try {
      while (scheduler.hasWork()) {
        await yieldToEventLoop();
        const plan = scheduler.schedule();
        if (plan.rows.length === 0 && plan.propagations.length === 0) continue;
        counters.peakKVBytes = Math.max(counters.peakKVBytes, cache.usedBytes());
        const output = await executor.run(plan);
        counters.steps++;
        counters.rows += plan.rows.length;
        const tokens = plan.rows.reduce((total, row) => total + row.tokens.length, 0);
        counters.peakStepTokens = Math.max(counters.peakStepTokens, tokens);
        counters.stepTokens += tokens;
        scheduler.update(plan, output);
      }
    } catch (error) {
      scheduler.fail(error);
    } finally {
      executor.clear();
      driving = false;
    }
  }

  async function* generate(
    prompt: readonly number[],
    generateOptions: EngineGenerateOptions,
  ): AsyncGenerator<number, RequestStats> {
    if (prompt.length === 0) throw new RequestError('a request needs at least one prompt token (e.g. BOS)');
    if (prompt.length >= config.maxPositionEmbeddings) {
      throw new RequestError(
        `the prompt has ${prompt.length} tokens; the model runs at most ${config.maxPositionEmbeddings} positions`,
      );
    }
    // Greedy stays the engine's own argmax; a temperature above 0 samples (createSampler checks them all).
    let sampler: ((logits: Float32Array) => number) | undefined;
    if (generateOptions.sampling) {
      let created: (logits: Float32Array) => number;
      try {
        created = createSampler(generateOptions.sampling);
      } catch (error) {
        throw new RequestError(`sampling: ${(error as Error).message}`);
      }
      if ((generateOptions.sampling.temperature ?? 0) > 0) sampler = created;
    }
    if (scheduler.queued >= maxQueue) {
      throw new QueueFullError(`the request queue is full (${maxQueue} waiting)`);
    }
    const started = performance.now();
    const times: number[] = [];
    const exitLoops: number[] = [];
    const pending: number[] = [];
    let finished: { reason: FinishReason; error?: unknown } | undefined;
    let wake: (() => void) | undefined;
    const controller = new AbortController();
    const signal = generateOptions.signal
      ? AbortSignal.any([generateOptions.signal, controller.signal])
      : controller.signal;
    scheduler.enqueue({
      id: nextId++,
      prompt,
      maxTokens: Math.min(generateOptions.maxTokens, config.maxPositionEmbeddings - prompt.length),
      stopTokens: new Set(generateOptions.stopTokens ?? config.eosTokenIds),
      ...(sampler ? { sampler } : {}),
      signal,
      onToken: (token, exitLoop) => {
        times.push(performance.now());
        exitLoops.push(exitLoop);
        pending.push(token);
        generateOptions.onToken?.(token, exitLoop);
        wake?.();
      },
      onFinish: (reason, error) => {
        finished = { reason, error };
        wake?.();
      },
    });
    if (!driving) {
      driving = true;
      void drive();
    }
    try {
      while (true) {
        while (pending.length > 0) yield pending.shift()!;
        if (finished) break;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
      if (finished.reason === 'error') throw finished.error;
      const first = times[0] ?? Number.NaN;
      return {
        reason: finished.reason,
        tokens: exitLoops.length,
        exitLoops,
        timeToFirstTokenMs: first - started,
        timePerOutputTokenMs:
          times.length > 1 ? (times[times.length - 1]! - first) / (times.length - 1) : Number.NaN,
      };
    } finally {
      // A consumer that stops early cancels the request (its slot and pages free at the next step).
      if (!finished) controller.abort();
    }
  }

  return {
    generate,
    cache,
    stats: () => ({
      steps: counters.steps,
      meanOccupancy: counters.steps > 0 ? counters.rows / counters.steps : 0,
      peakKVBytes: counters.peakKVBytes,
      peakStepTokens: counters.peakStepTokens,
      stepTokens: counters.stepTokens,
    }),
    dispose: () => cache.dispose(),
  };
}
