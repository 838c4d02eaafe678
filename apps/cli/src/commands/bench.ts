import { createBackend } from '@rrt/backend-tfjs';
import {
  exitProfile,
  generateTrace,
  runServingSuite,
  type ServingSuiteResult,
  type SuiteModel,
  servingTables,
} from '@rrt/batching';
import { type Decoder, loadModel, loadTokenizer } from '@rrt/core';
import { encodeDocuments } from '@rrt/eval';
import { type CliIO, type Command, UsageError } from '../cli-io.js';
import { backendFlag, numberFlag, parseFlags, readTextFlag } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

const servingHelp = `rrt bench serving <model-dir> [--baseline <vanilla-model-dir>] [--text <held-out file>]
         [--requests 256] [--slots 8] [--rate 2000] [--seed 7] [--max-change 0.01] [--contrast 0.9]
         [--calibration-tokens 4096] [--no-simulate] [--json] [--backend auto|...]

Runs one seeded request trace (Poisson arrivals at --rate per second, prompts of 4–32 tokens, outputs of
8–48, no stop tokens) through the serving engine, in one run: the baseline (when given) in static and
sequence mode; the model in static and sequence mode, and (when recursive) in depth mode without exits,
with confidence exits calibrated on --text at --max-change (see rrt calibrate-exit) checked at every loop,
and checked only at the loops chosen for the measured readout cost (--readout-cost auto there; again with
FREE completion of exited tokens' KV), at τ --contrast, with exits replaying the oracle's exit shares
(the speed of exits that change nothing), and with every decode token leaving after loop 0 (the ceiling
of exits on this trace: prompts and first tokens run every loop; again under recursive KV sharing, with
nothing to propagate). Prints tokens/s, TTFT and TPOT
p50/p90/p99, mean exit loop, depth/static and depth/sequence, the share of tokens that differ from the
model's no-exit run, the teacher-forced changed share and perplexity with exits; then the paper-style
simulation of the same trace (measured step times × exit trajectories: none, oracle, and each measured
row's). Wall clock: run it on a quiet machine.

Options:
  --baseline <dir>          a vanilla model to serve beside it (e.g. the original of a converted model)
  --text <file>             held-out text: calibrates the exits, and the prompts are cut from it
                            (without it: random prompt ids and no calibrated row)
  --requests <n>            requests in the trace (default 256)
  --slots <n>               requests served at once (default 8)
  --rate <x>                mean arrivals per second (default 2000: faster than the engine serves,
                            so tokens/s measures the engine rather than the arrivals)
  --seed <n>                seed of the trace (default 7)
  --max-change <f>          changed-token budget of the calibration, 0…1 (default 0.01)
  --contrast <τ>            also serve at this uncalibrated threshold (default 0.9)
  --calibration-tokens <n>  held-out positions the calibration scores (default 4096)
  --kv-mib <n>              KV pool per engine, MiB (default 64)
  --no-simulate             skip the step-time measurement and the simulation
  --json                    print the whole result as JSON

Example:
  rrt bench serving models/stories260K-1x5 --baseline models/stories260K --text held-out.txt --requests 64`;

async function serving(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseFlags(args, {
    positionals: ['<model-dir>'],
    options: {
      baseline: { type: 'string' },
      text: { type: 'string' },
      requests: { type: 'string', default: '256' },
      slots: { type: 'string', default: '8' },
      rate: { type: 'string', default: '2000' },
      seed: { type: 'string', default: '7' },
      'max-change': { type: 'string', default: '0.01' },
      contrast: { type: 'string', default: '0.9' },
      'calibration-tokens': { type: 'string', default: '4096' },
      'kv-mib': { type: 'string', default: '64' },
      'no-simulate': { type: 'boolean', default: false },
      backend: { type: 'string', default: 'auto' },
      json: { type: 'boolean', default: false },
      ...hubFlags,
    },
  });
  const positiveInteger = { integer: true, min: 1 };
  const requests = numberFlag('requests', values.requests, positiveInteger)!;
  const slots = numberFlag('slots', values.slots, positiveInteger)!;
  const rate = numberFlag('rate', values.rate, { above: 0 })!;
  const seed = numberFlag('seed', values.seed, { integer: true, min: 0 })!;
  const maxChange = numberFlag('max-change', values['max-change'], { min: 0, max: 1 })!;
  const contrast = numberFlag('contrast', values.contrast, { min: 0, max: 1 })!;
  const calibrationTokens = numberFlag('calibration-tokens', values['calibration-tokens'], positiveInteger)!;
  const kvMiB = numberFlag('kv-mib', values['kv-mib'], positiveInteger)!;
  const backendKind = backendFlag(values.backend);
  const text = values.text ? await readTextFlag(values.text) : undefined;
  const dir = await modelArgument(positionals[0]!, values, io);
  const baselineDir = values.baseline ? await modelArgument(values.baseline, values, io) : undefined;
  const { backend, kind, reason } = await createBackend(backendKind);
  if (!values.json) io.stderr(`backend: ${kind} — ${reason}\n`);
  const loaded: Decoder[] = [];
  try {
    const model = await loadModel(dir, backend);
    loaded.push(model);
    const baseline = baselineDir ? await loadModel(baselineDir, backend) : undefined;
    if (baseline) {
      loaded.push(baseline);
      if (baseline.config.vocabSize !== model.config.vocabSize) {
        throw new UsageError(
          `--baseline ${baselineDir} has ${baseline.config.vocabSize} tokens, the model ${model.config.vocabSize}: one trace cannot serve both`,
        );
      }
    }
    const tokenizer = text ? await loadTokenizer(dir) : undefined;
    const documents = text && tokenizer ? encodeDocuments(tokenizer, text) : undefined;
    const bosId = model.config.bosTokenId;
    const trace = generateTrace({
      requests,
      seed,
      ratePerSecond: rate,
      promptLength: [4, 32],
      outputLength: [8, 48],
      vocabSize: model.config.vocabSize,
      ...(documents ? { text: documents.flatMap((ids) => ids.slice(1)) } : {}),
      ...(bosId === undefined ? {} : { bosId }),
    });
    const recursive = (model.config.recursion?.loops ?? 1) > 1;
    const profile =
      documents && recursive
        ? await exitProfile(model, documents, { maxTokens: calibrationTokens, signal: io.signal })
        : undefined;
    const entries: SuiteModel[] = [
      ...(baseline ? [{ name: `baseline (${values.baseline})`, model: baseline }] : []),
      {
        name: positionals[0]!,
        model,
        ...(profile ? { profile } : {}),
        contrastThresholds: recursive ? [contrast] : [],
      },
    ];
    const result: ServingSuiteResult = await runServingSuite(entries, {
      trace,
      maxSlots: slots,
      kvBytes: kvMiB * 2 ** 20,
      maxChange,
      simulate: !values['no-simulate'],
      onRow: values.json
        ? undefined
        : (row) =>
            io.stderr(
              `${row.model}, ${row.mode}, exit ${row.exit}: ${row.summary.tokensPerSecond.toFixed(1)} tokens/s\n`,
            ),
    });
    if (values.json) {
      const models = result.models.map((entry) =>
        entry.calibration && !Number.isFinite(entry.calibration.threshold)
          ? { ...entry, calibration: { ...entry.calibration, threshold: null } }
          : entry,
      );
      io.stdout(
        `${JSON.stringify({ model: dir, baseline: baselineDir, backend: kind, ...result, models })}\n`,
      );
    } else {
      io.stdout(`${servingTables(result)}\n`);
    }
    return 0;
  } finally {
    for (const model of loaded) model.dispose();
  }
}

/** `rrt bench`: benchmarks of a user's model; `serving` is the one so far. */
export const benchCommand: Command = {
  name: 'bench',
  summary: 'benchmarks: `bench serving` runs a request trace through the serving engine’s modes',
  help: `rrt bench <benchmark> [options]

Benchmarks:
  serving   a seeded request trace through the serving engine (static, sequence, depth; early exits)

${servingHelp}`,
  async run(args, io) {
    const [benchmark, ...rest] = args;
    if (benchmark === 'serving') return serving(rest, io);
    if (benchmark === undefined || benchmark.startsWith('-'))
      throw new UsageError('missing <benchmark> (serving)');
    throw new UsageError(`unknown benchmark "${benchmark}" (serving)`);
  },
};
