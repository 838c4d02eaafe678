import { KVCapacityError, type PagedKVCache, type PagedSequence } from '@rrt/kv-cache';
import { RequestError } from './errors.js';
import type { ExitRule, LoopReadout } from './exit.js';
import type { ExitKVRule } from './exit-kv.js';
import type { ModeRule } from './modes.js';
import type { Propagation, StepOutput, StepPlan, StepRow } from './plan.js';

/** Why a request ended. */
export type FinishReason = 'eos' | 'max-tokens' | 'aborted' | 'error';

/** A request as the scheduler tracks it. */
export interface Request {
  id: number;
  prompt: readonly number[];
  /** Most tokens to emit (already clamped to the model's positions). */
  maxTokens: number;
  stopTokens: ReadonlySet<number>;
  /**
   * Picks each token from its exit loop's logits (one draw per emitted token, in order); without one the
   * token is the exit loop's argmax.
   */
  sampler?: (logits: Float32Array) => number;
  signal?: AbortSignal;
  /** Called with each emitted token and the loop it exited at. */
  onToken(token: number, exitLoop: number): void;
  /** Called once when it ends (its pages are already free). */
  onFinish(reason: FinishReason, error?: unknown): void;
}

interface Running {
  request: Request;
  sequence: PagedSequence;
  /** Positions fed through every loop (or propagated). */
  fed: number;
  /** The chunk in flight and the loop it reached. */
  chunk: readonly number[];
  loop: number;
  history: LoopReadout[];
  emitted: number;
  last: number | undefined;
  propagation: Propagation | undefined;
  /**
   * Tokens that exited early and still run their remaining loops in the background (FREE-style
   * completion): one single-token row each, at most one per loop, oldest first.
   */
  completions: Completion[];
}

/** A token that exited and keeps running its deeper loops (its KV exact, its token already emitted). */
interface Completion {
  tokens: readonly number[];
  offset: number;
  /** The loop it runs next. */
  loop: number;
}

/** Options of the {@link Scheduler}. */
export interface SchedulerOptions {
  maxSlots: number;
  /** L, the model's loops. */
  loops: number;
  /** Longest prompt chunk of one request in one step. */
  chunkSize: number;
  /**
   * Most tokens (rows) in one step across every request: rows in flight first (chunks between loops,
   * background completions), then new decode tokens, then prompt chunks fill what is left (vLLM's chunked
   * prefill). Default unlimited. Propagations are not counted (K/V projections only, no attention).
   */
  maxStepTokens?: number;
}

/**
 * Decides each step's rows as plain data ({@link schedule}) and applies the step's result
 * ({@link update}): admission, prompt chunks, exits, emits and frees. The mode and exit rule are values it
 * calls; its loop does not branch on which were chosen.
 */
export class Scheduler {
  private readonly waiting: Request[] = [];
  private readonly running = new Map<number, Running>();

  constructor(
    private readonly cache: PagedKVCache,
    private readonly mode: ModeRule,
    private readonly exit: ExitRule,
    private readonly options: SchedulerOptions,
    private readonly exitKV: ExitKVRule = { propagates: true, completes: false },
  ) {
    const budget = options.maxStepTokens ?? Number.POSITIVE_INFINITY;
    if (!(budget === Number.POSITIVE_INFINITY || (Number.isInteger(budget) && budget >= 1))) {
      throw new RequestError(`maxStepTokens must be a positive integer (got ${options.maxStepTokens})`);
    }
  }

  /** Queues a request (the engine bounds the queue). */
  enqueue(request: Request): void {
    this.waiting.push(request);
  }

  /** Requests queued, not yet admitted. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Requests holding a slot. */
  get active(): number {
    return this.running.size;
  }

  /** The KV sequence of a running request. */
  sequenceOf(id: number): PagedSequence {
    return this.running.get(id)!.sequence;
  }

  /** Whether anything is queued or running. */
  hasWork(): boolean {
    return this.waiting.length > 0 || this.running.size > 0;
  }

  /**
   * The next step: cancels what was aborted, admits what fits, and lists the rows under the step's token
   * budget: rows in flight (they must continue now: their hidden states last one step), then decode
   * tokens, then prompt chunks in what is left.
   */
  schedule(): StepPlan {
    for (const state of [...this.running.values()]) {
      if (state.request.signal?.aborted) this.finish(state, 'aborted');
    }
    this.admit();
    const { loops, chunkSize } = this.options;
    let budget = this.options.maxStepTokens ?? Number.POSITIVE_INFINITY;
    const perStep = this.mode.loopsPerStep(loops);
    const rows: StepRow[] = [];
    const propagations: Propagation[] = [];
    const row = (state: Running): StepRow => {
      const emits = state.fed + state.chunk.length >= state.request.prompt.length;
      // A plain loop: `Array.from({ length })` takes V8's generic array-like path, which cost ~1 µs a
      // row (measurable in a depth-wise step, one pass per loop of every token).
      const readouts = new Array<boolean>(perStep);
      for (let pass = 0; pass < perStep; pass++) {
        readouts[pass] = emits && this.exit.readsOut(state.loop + pass, loops);
      }
      budget -= state.chunk.length;
      return {
        id: state.request.id,
        tokens: state.chunk,
        offset: state.fed,
        loop: state.loop,
        readouts,
        keepsLogits: state.request.sampler !== undefined,
      };
    };
    // In flight: every row continues a row of the previous step with as many tokens, so these alone never
    // exceed the budget that step kept to.
    for (const state of this.running.values()) {
      if (state.propagation) propagations.push(state.propagation);
      state.propagation = undefined;
      for (const completion of state.completions) {
        budget -= completion.tokens.length;
        rows.push({
          id: state.request.id,
          tokens: completion.tokens,
          offset: completion.offset,
          loop: completion.loop,
          readouts: new Array<boolean>(perStep).fill(false),
        });
      }
      if (state.chunk.length > 0) rows.push(row(state));
    }
    const start = (state: Running, chunk: readonly number[]) => {
      state.chunk = chunk;
      state.loop = 0;
      state.history = [];
      rows.push(row(state));
    };
    const idle = [...this.running.values()].filter((state) => state.chunk.length === 0);
    for (const state of idle) {
      if (budget < 1) break;
      if (state.fed >= state.request.prompt.length) start(state, [state.last!]);
    }
    for (const state of idle) {
      if (budget < 1) break;
      const { prompt } = state.request;
      if (state.fed < prompt.length && state.chunk.length === 0) {
        start(state, prompt.slice(state.fed, state.fed + Math.min(chunkSize, budget)));
      }
    }
    return { rows, loops: perStep, propagations };
  }

  /** Applies a step's readouts: advances loops, decides exits, emits tokens, ends requests. */
  update(plan: StepPlan, output: StepOutput): void {
    const { loops } = this.options;
    for (const row of plan.rows) {
      const state = this.running.get(row.id);
      if (!state) continue;
      const completion = state.completions.find((c) => c.offset === row.offset);
      if (completion) {
        completion.loop += plan.loops;
        if (completion.loop >= loops) state.completions.splice(state.completions.indexOf(completion), 1);
        continue;
      }
      state.loop += plan.loops;
      let exited = false;
      for (const readout of output.readouts.get(row.id) ?? []) {
        state.history.push(readout);
        // Only a single-token chunk may exit: propagation fills one position's skipped depths.
        if (state.chunk.length === 1 && readout.loop < loops - 1 && this.exit.exits(state.history, loops)) {
          exited = true;
          break;
        }
      }
      if (!exited && state.loop < loops) continue;
      const position = state.fed + state.chunk.length - 1;
      const chunk = state.chunk;
      state.fed += state.chunk.length;
      state.chunk = [];
      if (state.fed < state.request.prompt.length) continue; // a prompt chunk that emits nothing
      // Loops this step ran past the exit (sequence-wise batching runs them all) have exact KV already.
      if (exited && state.loop < loops) {
        if (this.exitKV.propagates) state.propagation = { id: row.id, position, fromLoop: state.loop };
        if (this.exitKV.completes)
          state.completions.push({ tokens: chunk, offset: position, loop: state.loop });
      }
      this.emit(state);
    }
  }

  /** Ends every request with an error (the step failed). */
  fail(error: unknown): void {
    for (const state of [...this.running.values()]) this.finish(state, 'error', error);
    for (const request of this.waiting.splice(0)) request.onFinish('error', error);
  }

  private emit(state: Running): void {
    const readout = state.history.at(-1)!;
    const token = state.request.sampler ? state.request.sampler(readout.logits!) : readout.argmax;
    if (state.request.stopTokens.has(token)) {
      this.finish(state, 'eos');
      return;
    }
    state.request.onToken(token, this.exit.exitLoop(state.history));
    state.emitted++;
    state.last = token;
    if (state.emitted >= state.request.maxTokens) this.finish(state, 'max-tokens');
  }

  private admit(): void {
    if (!this.mode.admits(this.running.size)) return;
    while (this.waiting.length > 0 && this.running.size < this.options.maxSlots) {
      const request = this.waiting[0]!;
      if (request.signal?.aborted || request.maxTokens === 0) {
        this.waiting.shift();
        request.onFinish(request.maxTokens === 0 ? 'max-tokens' : 'aborted');
        continue;
      }
      const sequence = this.cache.open();
      try {
        // The last token is emitted, never fed: prompt + maxTokens − 1 positions.
        sequence.reserve(request.prompt.length + request.maxTokens - 1);
      } catch (error) {
        sequence.free();
        if (!(error instanceof KVCapacityError)) throw error;
        if (this.running.size > 0) return; // wait for pages
        this.waiting.shift();
        request.onFinish(
          'error',
          new RequestError(`request ${request.id} does not fit the KV pool: ${error.message}`, {
            cause: error,
          }),
        );
        continue;
      }
      this.waiting.shift();
      this.running.set(request.id, {
        request,
        sequence,
        fed: 0,
        chunk: [],
        loop: 0,
        history: [],
        emitted: 0,
        last: undefined,
        propagation: undefined,
        completions: [],
      });
    }
  }

  private finish(state: Running, reason: FinishReason, error?: unknown): void {
    state.sequence.free();
    this.running.delete(state.request.id);
    state.request.onFinish(reason, error);
  }
}
