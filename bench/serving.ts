/**
 * One seeded request trace through the serving engine's modes, in one run, on one backend (default
 * wasm): stories260K (imported from ../shared/assets) in `static` and `sequence` mode, and its relaxed 1×5
 * conversion (average init, LoRA rank 8, not uptrained) in `static`, `sequence` and `depth` mode with
 * exit `none` and with confidence exits at `--threshold`. Prints tokens/s, mean TTFT and TPOT, mean exit
 * loop, the share of tokens that differ from the same model's no-exit greedy tokens, and the ratios
 * depth/static and depth/sequence.
 *
 *   node --import tsx bench/serving.ts [--backend wasm] [--requests 32] [--slots 8] [--threshold 0.9]
 *     [--attention paged|gather]
 *
 * `--attention gather` runs the paged cache's earlier path (a gathered copy of each sequence's history
 * and one attention call per sequence per layer) instead of `Backend.pagedAttention`.
 *
 * NOTE: arrivals are Poisson in engine steps (a request joins after a seeded number of event-loop
 * turns), prompt lengths 4–32 and output lengths 8–48 from the same seeded stream.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { type BatchingMode, createEngine, type ExitPolicy } from '@rrt/batching';
import { convertToRecursive } from '@rrt/convert';
import { type Decoder, loadModel, seededRandom, yieldToEventLoop } from '@rrt/core';
import { importStories260K } from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    requests: { type: 'string', default: '32' },
    slots: { type: 'string', default: '8' },
    threshold: { type: 'string', default: '0.9' },
    seed: { type: 'string', default: '7' },
    attention: { type: 'string', default: 'paged' },
  },
});
const assets = resolve(import.meta.dirname, '../../shared/assets/stories260K');
if (!existsSync(join(assets, 'stories260K.bin'))) {
  console.log('bench/serving: skipped, ../shared/assets/stories260K is absent');
  process.exit(0);
}

interface TraceRequest {
  prompt: number[];
  maxTokens: number;
  /** Event-loop turns after the previous arrival. */
  gap: number;
}

/** The seeded trace: Poisson gaps (mean 2 turns), prompts of 4–32 tokens after BOS, outputs of 8–48. */
function makeTrace(count: number, seed: number, vocab: number): TraceRequest[] {
  const random = seededRandom(seed);
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  return Array.from({ length: count }, () => ({
    prompt: [1, ...Array.from({ length: int(3, 31) }, () => int(3, vocab - 1))],
    maxTokens: int(8, 48),
    gap: Math.round(-2 * Math.log(1 - random())),
  }));
}

interface RunResult {
  tokens: number[][];
  seconds: number;
  ttft: number;
  tpot: number;
  meanExitLoop: number;
}

async function runTrace(
  model: Decoder,
  trace: readonly TraceRequest[],
  mode: BatchingMode,
  exit: ExitPolicy,
): Promise<RunResult> {
  const engine = createEngine(model, {
    mode,
    maxSlots: Number(values.slots),
    kvBytes: 64 << 20,
    exit,
    maxQueue: 4096,
    attention: values.attention === 'gather' ? 'gather' : 'paged',
  });
  const started = performance.now();
  const runs: Promise<{ tokens: number[]; ttft: number; tpot: number; exits: number[] }>[] = [];
  for (const request of trace) {
    for (let turn = 0; turn < request.gap; turn++) await yieldToEventLoop();
    runs.push(
      (async () => {
        const stream = engine.generate(request.prompt, { maxTokens: request.maxTokens, stopTokens: [] });
        const tokens: number[] = [];
        while (true) {
          const next = await stream.next();
          if (next.done) {
            const stats = next.value;
            return {
              tokens,
              ttft: stats.timeToFirstTokenMs,
              tpot: stats.timePerOutputTokenMs,
              exits: stats.exitLoops,
            };
          }
          tokens.push(next.value);
        }
      })(),
    );
  }
  const results = await Promise.all(runs);
  const seconds = (performance.now() - started) / 1000;
  engine.dispose();
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const exits = results.flatMap((r) => r.exits);
  return {
    tokens: results.map((r) => r.tokens),
    seconds,
    ttft: mean(results.map((r) => r.ttft)),
    tpot: mean(results.map((r) => r.tpot).filter((x) => Number.isFinite(x))),
    meanExitLoop: mean(exits),
  };
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-serving-'));
try {
  const originalDir = await importStories260K(assets, workDir);
  const relaxedDir = join(workDir, 'relaxed-1x5');
  await convertToRecursive(originalDir, relaxedDir, { loops: 5, init: 'average', ranks: 8 });
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const original = await loadModel(originalDir, backend);
  const relaxed = await loadModel(relaxedDir, backend);
  const trace = makeTrace(Number(values.requests), Number(values.seed), original.config.vocabSize);
  const outputTokens = trace.reduce((total, r) => total + r.maxTokens, 0);
  console.log(`backend ${kind}: ${reason}; attention ${values.attention}`);
  console.log(
    `trace: ${trace.length} requests (seed ${values.seed}), ${outputTokens} output tokens, ${values.slots} slots\n`,
  );
  const none: ExitPolicy = { kind: 'none' };
  const confidence: ExitPolicy = { kind: 'confidence', threshold: Number(values.threshold) };
  const rows: [string, Decoder, BatchingMode, ExitPolicy][] = [
    ['original', original, 'static', none],
    ['original', original, 'sequence', none],
    ['relaxed 1×5', relaxed, 'static', none],
    ['relaxed 1×5', relaxed, 'sequence', none],
    ['relaxed 1×5', relaxed, 'depth', none],
    ['relaxed 1×5', relaxed, 'depth', confidence],
  ];
  const results: RunResult[] = [];
  console.log(
    '| model | mode | exit | tokens/s | mean TTFT ms | mean TPOT ms | mean exit loop | changed tokens |',
  );
  console.log('|---|---|---|---:|---:|---:|---:|---:|');
  for (const [name, model, mode, exit] of rows) {
    const result = await runTrace(model, trace, mode, exit);
    results.push(result);
    // Changed tokens: against the same model's first no-exit run (the property test makes all modes equal).
    const reference = results[name === 'original' ? 0 : 2]!.tokens;
    let changed = 0;
    result.tokens.forEach((tokens, i) => {
      tokens.forEach((token, t) => {
        if (reference[i]![t] !== token) changed++;
      });
    });
    const label = exit.kind === 'none' ? 'none' : `confidence ≥ ${values.threshold}`;
    console.log(
      `| ${name} | ${mode} | ${label} | ${(outputTokens / result.seconds).toFixed(1)} | ${result.ttft.toFixed(1)} | ` +
        `${result.tpot.toFixed(1)} | ${result.meanExitLoop.toFixed(2)} | ${((100 * changed) / outputTokens).toFixed(1)} % |`,
    );
  }
  const rate = (r: RunResult) => outputTokens / r.seconds;
  const [, , staticR, sequenceR, depthNone, depthExit] = results as [
    RunResult,
    RunResult,
    RunResult,
    RunResult,
    RunResult,
    RunResult,
  ];
  console.log(
    `\nrelaxed 1×5, depth (exit none) / static: ${(rate(depthNone) / rate(staticR)).toFixed(2)}×, ` +
      `/ sequence: ${(rate(depthNone) / rate(sequenceR)).toFixed(2)}×`,
  );
  console.log(
    `relaxed 1×5, depth (confidence) / static: ${(rate(depthExit) / rate(staticR)).toFixed(2)}×, ` +
      `/ sequence: ${(rate(depthExit) / rate(sequenceR)).toFixed(2)}×`,
  );
  original.dispose();
  relaxed.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
