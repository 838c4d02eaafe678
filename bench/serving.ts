/**
 * The serving benchmark of issue 7, in one run on one backend (default wasm): one seeded trace (Poisson
 * arrivals, prompt and output lengths uniform from a seeded stream, prompts cut from held-out text)
 * through
 * - stories260K (imported from ../shared/assets) in `static` and `sequence` mode;
 * - its relaxed 1×5 conversion (Average init, LoRA rank 16, not uptrained) in `static`, `sequence`,
 *   `depth` without exits, `depth` with confidence exits calibrated on held-out text at `--max-change`,
 *   and `depth` at τ `--contrast` (uncalibrated);
 * - a synthetic 10-layer, width-512 model (random weights, relaxed 5×2: a block of K = 2 layers looped
 *   L = 5 times, LoRA rank 8) in the same modes, its exit loops replayed from the exit-loop shares
 *   measured on the early-exit-trained model's calibrated row (the converted one's when that model is
 *   skipped; 10 layers rather than 12 so that its 5 loops replay stories260K's loop for loop);
 * - the early-exit-trained relaxed 1×5 model (rank 16): loaded from `--early-exit-model <dir>`, or trained
 *   in this run for `--early-exit-steps` steps (default 60; 0 skips it) with `@rrt/train`'s early-exit loss
 *   and distillation from stories260K on the other 90 % of tinystories_val.txt's documents.
 *
 * Prints tokens/s, TTFT and TPOT p50/p90/p99, mean exit loop, depth/static and depth/sequence, the
 * changed-token share against the model's own no-exit run, the teacher-forced changed share and
 * perplexity with exits, and the paper-style simulation of the same trace. `--json <file>` writes the
 * whole result.
 *
 *   node --import tsx bench/serving.ts [--backend wasm] [--requests 256] [--slots 8] [--rate 2000] [--seed 7]
 *        [--attention paged|gather]
 *        [--max-change 0.01] [--contrast 0.9] [--calibration-tokens 4096] [--early-exit-model <dir>]
 *        [--early-exit-steps 60] [--no-synthetic] [--synthetic-requests N] [--no-simulate] [--json <file>]
 *        [--prompt-length 4-32] [--output-length 8-48]
 *
 * `--prompt-length` and `--output-length` set the trace's uniform length ranges (tokens). Prompt chunks
 * and each request's first token run every loop whatever the exits, so the prompt share bounds what exits
 * can gain (the suite's ceiling row: every decode token after loop 0).
 *
 * `--attention gather` runs the paged cache's earlier path (a gathered copy of each sequence's history and
 * one attention call per sequence per layer) instead of `Backend.pagedAttention`.
 *
 * `--synthetic-requests N` serves the synthetic model only the trace's first N requests (a wide model on
 * wasm is slow; the synthetic rows then have their own request count, printed above their table).
 *
 * Held-out text: tinystories_val.txt split into documents at blank lines; the last 10 % of the documents
 * calibrate the exits and give the prompts, the first 90 % train the early-exit model.
 */
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import {
  exitProfile,
  generateTrace,
  runServingSuite,
  type ServingSuiteOptions,
  type ServingSuiteResult,
  servingTables,
} from '@rrt/batching';
import { convertToRecursive } from '@rrt/convert';
import { loadModel, loadTokenizer } from '@rrt/core';
import { splitDocuments, TextDataset, train, writeRandomModel } from '@rrt/train';
import { importStories260K, stories260KAssetsOrExit } from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    requests: { type: 'string', default: '256' },
    slots: { type: 'string', default: '8' },
    rate: { type: 'string', default: '2000' },
    seed: { type: 'string', default: '7' },
    attention: { type: 'string', default: 'paged' },
    'max-change': { type: 'string', default: '0.01' },
    contrast: { type: 'string', default: '0.9' },
    'calibration-tokens': { type: 'string', default: '4096' },
    'early-exit-model': { type: 'string' },
    'early-exit-steps': { type: 'string', default: '60' },
    'no-synthetic': { type: 'boolean', default: false },
    'synthetic-requests': { type: 'string' },
    'no-simulate': { type: 'boolean', default: false },
    'prompt-length': { type: 'string', default: '4-32' },
    'output-length': { type: 'string', default: '8-48' },
    json: { type: 'string' },
  },
});
/** `--prompt-length` / `--output-length`: `low-high`, integers, 1 ≤ low ≤ high. */
function lengthRange(flag: string, value: string): [number, number] {
  const match = /^(\d+)-(\d+)$/.exec(value);
  const [low, high] = match ? [Number(match[1]), Number(match[2])] : [0, -1];
  if (!(low >= 1 && low <= high)) {
    console.error(`bench/serving: --${flag} expects low-high with 1 ≤ low ≤ high (e.g. 8-48), got ${value}`);
    process.exit(2);
  }
  return [low, high];
}
const promptLength = lengthRange('prompt-length', values['prompt-length']!);
const outputLength = lengthRange('output-length', values['output-length']!);
const assets = stories260KAssetsOrExit('serving');
const started = performance.now();
const log = (message: string) =>
  console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${message}`);

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-serving-'));
try {
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  console.log(`backend ${kind}: ${reason}`);
  const originalDir = await importStories260K(assets, workDir);
  const relaxedDir = join(workDir, 'relaxed-1x5');
  await convertToRecursive(originalDir, relaxedDir, { loops: 5, init: 'average', ranks: 16 });
  const tokenizer = await loadTokenizer(originalDir);
  const documents = splitDocuments(await readFile(resolve(assets, '../text/tinystories_val.txt'), 'utf8'));
  const heldOutStart = Math.floor(documents.length * 0.9);
  const encode = (text: string) => tokenizer.encode(text, { addBos: false, parseSpecialTokens: false });
  const heldOut = documents.slice(heldOutStart).map((text) => [tokenizer.bosId!, ...encode(text)]);
  const calibrationTokens = Number(values['calibration-tokens']);

  const original = await loadModel(originalDir, backend);
  const relaxed = await loadModel(relaxedDir, backend);
  const trace = generateTrace({
    requests: Number(values.requests),
    seed: Number(values.seed),
    ratePerSecond: Number(values.rate),
    promptLength,
    outputLength,
    vocabSize: original.config.vocabSize,
    text: heldOut.flatMap((ids) => ids.slice(1)),
    bosId: tokenizer.bosId!,
  });
  const suiteOptions: ServingSuiteOptions = {
    trace,
    maxSlots: Number(values.slots),
    kvBytes: 64 << 20,
    maxChange: Number(values['max-change']),
    simulate: !values['no-simulate'],
    engine: { attention: values.attention === 'gather' ? 'gather' : 'paged' },
    onRow: (row) =>
      log(`${row.model}, ${row.mode}, exit ${row.exit}: ${row.summary.tokensPerSecond.toFixed(1)} tokens/s`),
  };
  console.log(
    `trace: ${trace.length} requests (seed ${values.seed}, Poisson ${values.rate}/s), prompts ${promptLength.join('–')} tokens, outputs ${outputLength.join('–')}\n`,
  );
  log('calibrating the relaxed model');
  const relaxedProfile = await exitProfile(relaxed, heldOut, { maxTokens: calibrationTokens });
  const results: ServingSuiteResult[] = [];
  results.push(
    await runServingSuite(
      [
        { name: 'original', model: original },
        {
          name: 'relaxed 1×5',
          model: relaxed,
          profile: relaxedProfile,
          contrastThresholds: [Number(values.contrast)],
        },
      ],
      suiteOptions,
    ),
  );
  original.dispose();
  relaxed.dispose();

  let earlyExitDir = values['early-exit-model'];
  const steps = Number(values['early-exit-steps']);
  if (!earlyExitDir && steps > 0) {
    log(`training the early-exit model (${steps} steps)`);
    const dataset = TextDataset.create({
      documents: documents.slice(0, heldOutStart),
      encode,
      bosId: tokenizer.bosId!,
      heldOutFraction: 0.1,
      seed: 0,
      source: 'tinystories_val.txt (first 90 % of documents)',
    });
    earlyExitDir = join(workDir, 'relaxed-1x5-early-exit');
    const trained = await train(backend, {
      modelDir: relaxedDir,
      outDir: earlyExitDir,
      dataset,
      steps,
      batchSize: 4,
      sequenceLength: 128,
      learningRate: 1e-3,
      warmupSteps: Math.max(1, Math.round(steps / 10)),
      teacherDir: originalDir,
      earlyExit: true,
      seed: 1,
    });
    const losses = trained.heldOutLosses.map(([step, loss]) => `step ${step}: ${loss.toFixed(4)}`).join(', ');
    log(`trained in ${trained.seconds.toFixed(0)} s; held-out loss ${losses}`);
  }
  if (earlyExitDir) {
    const earlyExit = await loadModel(earlyExitDir, backend);
    log('calibrating the early-exit model');
    const profile = await exitProfile(earlyExit, heldOut, { maxTokens: calibrationTokens });
    results.push(
      await runServingSuite(
        [
          {
            name: 'relaxed 1×5, early-exit trained',
            model: earlyExit,
            profile,
            contrastThresholds: [Number(values.contrast)],
          },
        ],
        suiteOptions,
      ),
    );
    earlyExit.dispose();
  }

  if (!values['no-synthetic']) {
    // Replay the exit loops a relaxed stories260K model took under its calibrated exits: the early-exit
    // trained one when it ran (its exits mean something), else the converted one.
    const source = earlyExitDir ? 'relaxed 1×5, early-exit trained' : 'relaxed 1×5';
    const calibrated = results
      .flatMap((result) => result.rows)
      .find((row) => row.model === source && row.exit.includes('calibrated'));
    const shares = calibrated?.exitLoopShares ?? [0, 0, 0, 0, 1];
    log(
      `synthetic model: replaying the exit-loop shares of ${source}'s calibrated row: ${shares.map((s) => s.toFixed(3)).join(', ')}`,
    );
    const plainDir = join(workDir, 'synthetic');
    await writeRandomModel(
      plainDir,
      {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        vocab_size: original.config.vocabSize,
        hidden_size: 512,
        intermediate_size: 1376,
        num_hidden_layers: 10,
        num_attention_heads: 8,
        num_key_value_heads: 8,
        max_position_embeddings: 512,
        rms_norm_eps: 1e-5,
        rope_theta: 10000,
        tie_word_embeddings: false,
        bos_token_id: 1,
        eos_token_id: 2,
      },
      { seed: 5 },
    );
    const syntheticDir = join(workDir, 'synthetic-5x2');
    await convertToRecursive(plainDir, syntheticDir, {
      loops: 5,
      init: 'average',
      ranks: 8,
      svd: { backend },
      onWarning: () => {},
    });
    const synthetic = await loadModel(syntheticDir, backend);
    // On a loaded machine the wide model serves a few tokens per second: it may take the trace's first
    // requests only (the table says how many).
    const syntheticRequests = Number(values['synthetic-requests'] ?? trace.length);
    log(`synthetic model: the trace's first ${syntheticRequests} requests`);
    results.push(
      await runServingSuite([{ name: 'synthetic 10L·512 (5×2)', model: synthetic, replayShares: shares }], {
        ...suiteOptions,
        trace: trace.slice(0, syntheticRequests),
        replaySeed: Number(values.seed),
      }),
    );
    synthetic.dispose();
  }

  const merged: ServingSuiteResult = {
    ...results[0]!,
    rows: results.flatMap((r) => r.rows),
    simulated: results.flatMap((r) => r.simulated),
    models: results.flatMap((r) => r.models),
  };
  // One table per distinct request count (the synthetic model may serve a prefix of the trace).
  const groups = new Map<number, ServingSuiteResult[]>();
  for (const result of results) groups.set(result.requests, [...(groups.get(result.requests) ?? []), result]);
  for (const group of groups.values()) {
    console.log(
      `${servingTables({
        ...group[0]!,
        rows: group.flatMap((r) => r.rows),
        simulated: group.flatMap((r) => r.simulated),
        models: group.flatMap((r) => r.models),
      })}\n`,
    );
  }
  if (values.json) {
    await writeFile(
      values.json,
      `${JSON.stringify({ backend: kind, args: values, ...merged, parts: results.map((r) => ({ requests: r.requests, outputTokens: r.outputTokens, models: r.models.map((m) => m.name) })) }, null, 2)}\n`,
    );
    console.log(`\nwrote ${values.json}`);
  }
  log('done');
} finally {
  await rm(workDir, { recursive: true, force: true });
}
