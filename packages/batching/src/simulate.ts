/**
 * The paper-style serving simulation (Bae et al., ICLR 2025, appendix on depth-wise batching): measured
 * step times at each batch size × exit trajectories, in virtual time. {@link measureStepTimes} times the
 * engine's own executor on the model; {@link simulateTrace} plays a trace through the same batching
 * rules ({@link modeRule}) and chunked prefill as the scheduler, charging each step its measured time and
 * letting each decode token leave at its given exit loop. What it leaves out: KV capacity (every request
 * fits), CALM propagation's cost, and the host work between steps beyond what the step timings include.
 *
 * @module
 */
import type { Decoder } from '@rrt/core';
import { createPagedKVCache } from '@rrt/kv-cache';
import { CalibrationError } from './errors.js';
import { Executor } from './executor.js';
import { type BatchingMode, modeRule } from './modes.js';
import type { StepPlan } from './plan.js';
import type { RequestResult, TraceRequest, TraceRun } from './trace.js';

/** Measured step times of one model (milliseconds), by batch size (decode rows, one per sequence). */
export interface StepTimes {
  /** Loops of the model. */
  loops: number;
  /** Batch sizes measured, ascending. */
  batchSizes: number[];
  /** One pass of the block (embed, K layers, readout of every row) at each batch size: a depth-wise step. */
  passMs: number[];
  /** The same pass without the readout (a loop at which no exit is checked). */
  passWithoutReadoutMs: number[];
  /** Every loop (embed, L passes, readout after the last): a sequence-wise or static step. */
  fullMs: number[];
  /** Extra milliseconds per prefill token beyond a chunk's first, per pass over the block. */
  prefillTokenPassMs: number;
}

/** Options of {@link measureStepTimes}. */
export interface MeasureOptions {
  /** Batch sizes to time (default 1, 2, 4, 8). */
  batchSizes?: readonly number[];
  /** Positions of history each sequence holds while timed (default 32). */
  context?: number;
  /** Timed repetitions per point; the fastest counts (default 7). */
  rounds?: number;
  /** Chunk length used to time prefill tokens (default 32). */
  chunk?: number;
}

// The fastest sample: on a shared machine the others carry preemptions by other processes.
const best = (values: number[]) => Math.min(...values);

/**
 * Times the engine's executor on `model` (wall clock, the fastest of `rounds`): decode steps of `b` rows at
 * loop 0 running one pass (read out, as confidence exits need) and all loops (read out after the last, as
 * exit `none` does), and one prefill chunk.
 */
export async function measureStepTimes(model: Decoder, options: MeasureOptions = {}): Promise<StepTimes> {
  const { config } = model;
  const blockSize = config.recursion?.blockSize ?? config.numHiddenLayers;
  const loops = config.recursion?.loops ?? 1;
  const batchSizes = [...(options.batchSizes ?? [1, 2, 4, 8])].sort((a, b) => a - b);
  const context = options.context ?? 32;
  const rounds = options.rounds ?? 7;
  const chunk = options.chunk ?? 32;
  if (batchSizes.some((b) => !Number.isInteger(b) || b < 1)) {
    throw new CalibrationError('batchSizes', `positive integers (got ${batchSizes.join(', ')})`);
  }
  // Every decode call appends one position to each of its rows' sequences (row 0 is in every batch size);
  // the chunk sequence gets a chunk per round.
  const positions = context + Math.max(batchSizes.length * (3 * rounds + 1), chunk * rounds);
  if (positions > config.maxPositionEmbeddings) {
    throw new CalibrationError(
      'context',
      `context + appended positions (${positions}) within the model's ${config.maxPositionEmbeddings}`,
    );
  }
  const largest = batchSizes[batchSizes.length - 1]!;
  const pageSize = 16;
  const pageBytes = config.numHiddenLayers * 2 * pageSize * config.numKeyValueHeads * config.headDim * 4;
  const cache = createPagedKVCache(model.backend, {
    depths: config.numHiddenLayers,
    blockSize,
    kvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    pageSize,
    bytes: (largest + 1) * Math.ceil(positions / pageSize + 1) * pageBytes,
  });
  const sequences = Array.from({ length: largest + 1 }, () => {
    const sequence = cache.open();
    sequence.reserve(positions);
    return sequence;
  });
  const executor = new Executor(model, blockSize, (id) => sequences[id]!, false);
  const token = (i: number) => (i * 7 + 3) % config.vocabSize;
  const time = async (plan: StepPlan) => {
    const started = performance.now();
    await executor.run(plan);
    return performance.now() - started;
  };
  try {
    // History: every sequence prefilled with `context` positions at every depth.
    await executor.run({
      rows: sequences.map((_, id) => ({
        id,
        tokens: Array.from({ length: context }, (_, i) => token(i + id)),
        offset: 0,
        loop: 0,
        readouts: Array.from({ length: loops }, () => false),
      })),
      loops,
      propagations: [],
    });
    const decode = (b: number, offset: number, perStep: number, readsOut = true): StepPlan => ({
      rows: Array.from({ length: b }, (_, id) => ({
        id,
        tokens: [token(offset + id)],
        offset,
        loop: 0,
        // A depth-wise pass reads out (its exit decision needs it); a sequence-wise step, as with exit
        // `none`, reads out after its last loop only.
        readouts: Array.from({ length: perStep }, (_, pass) => readsOut && pass === perStep - 1),
      })),
      loops: perStep,
      propagations: [],
    });
    const passMs: number[] = [];
    const passWithoutReadoutMs: number[] = [];
    const fullMs: number[] = [];
    for (const b of batchSizes) {
      const pass: number[] = [];
      const bare: number[] = [];
      const full: number[] = [];
      await time(decode(b, context, 1)); // warm-up (kernels, weight packing)
      for (let r = 0; r < rounds; r++) {
        // Offsets stay near `context`; the cache appends, the timing only needs the history's size.
        pass.push(await time(decode(b, context + 1 + 3 * r, 1)));
        bare.push(await time(decode(b, context + 2 + 3 * r, 1, false)));
        full.push(await time(decode(b, context + 3 + 3 * r, loops)));
      }
      passMs.push(best(pass));
      passWithoutReadoutMs.push(best(bare));
      fullMs.push(best(full));
    }
    // One sequence's prefill chunk against one decode row, one pass each.
    const chunkTimes: number[] = [];
    const chunkRow = (r: number): StepPlan => ({
      rows: [
        {
          id: largest,
          tokens: Array.from({ length: chunk }, (_, i) => token(i + r)),
          offset: context,
          loop: 0,
          readouts: [true],
        },
      ],
      loops: 1,
      propagations: [],
    });
    for (let r = 0; r < rounds; r++) chunkTimes.push(await time(chunkRow(r)));
    const measured = { loops, batchSizes, passMs, passWithoutReadoutMs, fullMs, prefillTokenPassMs: 0 };
    const onePass = stepTimeAt(measured, 'pass', 1);
    return { ...measured, prefillTokenPassMs: Math.max(0, (best(chunkTimes) - onePass) / (chunk - 1)) };
  } finally {
    executor.clear();
    for (const sequence of sequences) sequence.free();
    cache.dispose();
  }
}

/**
 * What one readout costs at `b` rows, in passes of the block: `pass / pass without readout − 1` (at
 * least 0). The `readoutCost` of {@link chooseThreshold}.
 */
export function readoutCost(times: StepTimes, b: number): number {
  const bare = stepTimeAt(times, 'bare', b);
  return bare > 0 ? Math.max(0, stepTimeAt(times, 'pass', b) / bare - 1) : 0;
}

/**
 * Milliseconds at `b` rows, linearly inter- and extrapolated from the measured batch sizes: of a pass
 * (`pass`), a pass without readout (`bare`) or every loop (`full`).
 */
export function stepTimeAt(times: StepTimes, perStep: 'pass' | 'bare' | 'full', b: number): number {
  const values =
    perStep === 'pass' ? times.passMs : perStep === 'bare' ? times.passWithoutReadoutMs : times.fullMs;
  const sizes = times.batchSizes;
  if (sizes.length === 1) return (values[0]! * b) / sizes[0]!;
  let i = 0;
  while (i < sizes.length - 2 && b > sizes[i + 1]!) i++;
  const [x0, x1, y0, y1] = [sizes[i]!, sizes[i + 1]!, values[i]!, values[i + 1]!];
  return Math.max(0, y0 + ((b - x0) * (y1 - y0)) / (x1 - x0));
}

/** Options of {@link simulateTrace}. */
export interface SimulateOptions {
  mode: BatchingMode;
  maxSlots: number;
  /** Longest prompt chunk per request per step (default 32, the engine's). */
  chunkSize?: number;
  times: StepTimes;
  /**
   * Per request, the exit loop of each generated token (e.g. an `oracle` run's); its length is the
   * request's token count. Default: every token at the last loop, `maxTokens` tokens.
   */
  exitLoops?: readonly (readonly number[])[];
}

/**
 * Plays `trace` in virtual time under `options.mode`, as the scheduler would: admission by the mode's
 * rule, chunked prefill, decode tokens leaving at their exit loop (only one-token chunks may exit early;
 * a prompt's last chunk emits the first token at full depth). Each step costs its measured time at its
 * row count, plus the prefill tokens beyond each chunk's first.
 */
export function simulateTrace(trace: readonly TraceRequest[], options: SimulateOptions): TraceRun {
  const { times } = options;
  const { loops } = times;
  const rule = modeRule(options.mode);
  const chunkSize = options.chunkSize ?? 32;
  const perStep = rule.loopsPerStep(loops);
  interface State {
    index: number;
    fed: number;
    chunk: number;
    loop: number;
    emitted: number;
    times: number[];
    exitLoops: number[];
  }
  const tokensOf = (i: number) => options.exitLoops?.[i]?.length ?? trace[i]!.maxTokens;
  const results: RequestResult[] = new Array(trace.length);
  const waiting: number[] = [];
  const running: State[] = [];
  let next = 0;
  let now = 0;
  let done = 0;
  while (done < trace.length) {
    while (next < trace.length && trace[next]!.arrivalMs <= now) waiting.push(next++);
    if (running.length === 0 && waiting.length === 0) {
      now = trace[next]!.arrivalMs;
      continue;
    }
    if (rule.admits(running.length)) {
      while (waiting.length > 0 && running.length < options.maxSlots) {
        const index = waiting.shift()!;
        if (tokensOf(index) === 0) {
          results[index] = { tokens: [], exitLoops: [], ttftMs: Number.NaN, tpotMs: Number.NaN };
          done++;
          continue;
        }
        running.push({ index, fed: 0, chunk: 0, loop: 0, emitted: 0, times: [], exitLoops: [] });
      }
    }
    if (running.length === 0) continue;
    let extraTokens = 0;
    for (const state of running) {
      const prompt = trace[state.index]!.prompt.length;
      if (state.chunk === 0) {
        state.chunk = state.fed < prompt ? Math.min(chunkSize, prompt - state.fed) : 1;
        state.loop = 0;
      }
      extraTokens += state.chunk - 1;
    }
    now +=
      stepTimeAt(times, perStep === 1 ? 'pass' : 'full', running.length) +
      extraTokens * times.prefillTokenPassMs * perStep;
    for (const state of [...running]) {
      const request = trace[state.index]!;
      state.loop += perStep;
      // Only a prompt's last chunk (or a decode token) reads out; only a one-token one may exit early.
      const final = state.fed + state.chunk >= request.prompt.length;
      const exitLoop =
        final && state.chunk === 1
          ? Math.min(options.exitLoops?.[state.index]?.[state.emitted] ?? loops - 1, loops - 1)
          : loops - 1;
      if (state.loop < exitLoop + 1) continue;
      state.fed += state.chunk;
      state.chunk = 0;
      if (!final) continue;
      state.times.push(now);
      state.exitLoops.push(exitLoop);
      state.emitted++;
      if (state.emitted >= tokensOf(state.index)) {
        const first = state.times[0]!;
        const last = state.times[state.times.length - 1]!;
        results[state.index] = {
          tokens: [],
          exitLoops: state.exitLoops,
          ttftMs: first - request.arrivalMs,
          tpotMs: state.times.length > 1 ? (last - first) / (state.times.length - 1) : Number.NaN,
        };
        running.splice(running.indexOf(state), 1);
        done++;
      }
    }
  }
  return { requests: results, seconds: now / 1000 };
}
