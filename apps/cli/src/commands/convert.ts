import { createBackend } from '@rrt/backend-tfjs';
import {
  type ConversionResult,
  type ConvertOptions,
  convertToRecursive,
  type RankOption,
} from '@rrt/convert';
import type { InitMethod, SharingStrategy } from '@rrt/core';
import { type CliIO, type Command, formatTable, progressReporter, UsageError } from '../cli-io.js';
import { backendFlag, dtypeFlag, numberFlag, oneOf, outputDirFlag, parseFlags } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';
import { asFlagError, clearStaleOutputs } from '../output.js';

/** The flag behind each option name that `@rrt/convert`'s errors use. */
const convertFlags: Record<string, string> = {
  loops: '--loops',
  blockSize: '--block-size',
  'ranks.default': '--rank',
  'ranks.q': '--rank-q',
  'ranks.kv': '--rank-kv',
  'ranks.o': '--rank-o',
  'ranks.ffn': '--rank-ffn',
  alpha: '--alpha',
  seed: '--seed',
  outputDtype: '--dtype',
  loraDtype: '--lora-dtype',
  strategy: '--strategy',
  init: '--init',
  overwrite: '--overwrite',
};

const integer = new Intl.NumberFormat('en-US');

/** The closing report: parameters saved, and reconstruction error per module group. */
function report(result: ConversionResult): string {
  const { original, recursive, relaxed } = result.parameters;
  const saved = (count: number) => `${((100 * (original - count)) / original).toFixed(1)}%`;
  const parameters = formatTable(
    ['model', 'parameters', 'saved'],
    [
      ['original', integer.format(original), '-'],
      ['recursive', integer.format(recursive), saved(recursive)],
      // At rank 0 there is no LoRA: the output is the recursive model.
      ...(relaxed > recursive ? [['relaxed', integer.format(relaxed), saved(relaxed)]] : []),
    ],
  );
  const error = (value: number | null) => (value === null ? '-' : value.toFixed(4));
  const errors = formatTable(
    ['group', 'rank', 'recursive error', 'relaxed error'],
    result.reconstruction.map((group) => [
      group.group,
      [...new Set(group.ranks)].join('/'),
      error(group.recursiveError),
      error(group.relaxedError),
    ]),
  );
  const { blockSize, loops, strategy, init } = result.recursion;
  const layout = `${blockSize}×${loops} ${strategy}, ${init} init, ${result.outputDtype}`;
  if (!result.written) {
    return [`dry run: would write ${result.outDir}: ${layout}; nothing written`, '', parameters].join('\n');
  }
  const loopNorms = result.recursion.loopNorms ?? [];
  return [
    `wrote ${result.outDir}: ${layout}, in ${result.seconds.toFixed(1)} s`,
    // Norms after a projection (q/k norms, Gemma's post-sublayer norms) cannot fold into it: kept per loop.
    ...(loopNorms.length > 0 ? [`norms kept per loop (not foldable): ${loopNorms.join(', ')}`] : []),
    '',
    parameters,
    '',
    result.foldNorms
      ? // The target is each loop's weight with its own norm gains moved onto the shared norm's.
        'relative reconstruction error ‖T − (W_shared + ΔW)‖_F / ‖T‖_F over shared layers, T = W·diag(g_l/g_s) (loop norm gains folded in):'
      : 'relative reconstruction error ‖W − (W_shared + ΔW)‖_F / ‖W‖_F over shared layers:',
    errors,
  ].join('\n');
}

/** `rrt convert`: a pretrained checkpoint into a recursive / relaxed recursive model. */
export const convertCommand: Command = {
  name: 'convert',
  summary: 'turn a pretrained checkpoint into a recursive (shared layers) or relaxed (plus LoRA) model',
  help: `rrt convert <source> --out <dir> (--loops L | --block-size K) [options]

Shares one block of K layers, looped L times (K·L = N layers; N − 2 for middle-cycle), and with
--rank adds a LoRA per loop, layer and module initialised by truncated SVD of W_orig − W_shared, so that
a full-rank LoRA reproduces the original exactly. Streams layer by layer; the output appears only
when complete. A model may also be a Hub repo id (owner/name[@revision]), pulled into the cache first;
--offline, --hub-url and --cache-dir work as for rrt pull.

Options:
  --out <dir>              output directory (must not exist unless --overwrite)
  --loops <L>              times the shared block runs
  --block-size <K>         shared layers (default N / L)
  --strategy <s>           cycle (default) | sequence | middle-cycle
  --init <m>               stepwise (default) | average | lower | upper | random
  --subsample              drop layers (evenly, keeping first and last) when K·L does not tile N
  --rank <r>               LoRA rank of every module (default 0: recursive model, no LoRA)
  --rank-q, --rank-kv, --rank-o, --rank-ffn <r>   rank per module group (default --rank)
  --alpha <a>              LoRA scaling numerator, scale = a / r (default: the largest rank)
  --dtype <d>              f32 | f16 | bf16 output weights (default: the source's)
  --lora-dtype <d>         dtype of the LoRA factors (default: --dtype)
  --no-fold-norms          factor W_orig − W_shared as the paper does, not the norm-folded target
  --svd <m>                auto (default) | exact | randomized
  --backend <b>            tensor backend for the randomized SVD: auto (default) | node-gpu | node | wasm | cpu
  --seed <n>               seed of the random init and the randomized SVD (default 0)
  --overwrite              replace an existing output directory
  --dry-run                check and print the layout and parameter counts; compute and write nothing
  --json                   print the result as JSON

Example:
  rrt convert models/tinyllama --out models/tinyllama-rrt --loops 2 --init average --rank 64 --rank-ffn 128`,
  async run(args: string[], io: CliIO): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<source>'],
      options: {
        out: { type: 'string' },
        loops: { type: 'string' },
        'block-size': { type: 'string' },
        strategy: { type: 'string', default: 'cycle' },
        init: { type: 'string', default: 'stepwise' },
        subsample: { type: 'boolean', default: false },
        rank: { type: 'string' },
        'rank-q': { type: 'string' },
        'rank-kv': { type: 'string' },
        'rank-o': { type: 'string' },
        'rank-ffn': { type: 'string' },
        alpha: { type: 'string' },
        dtype: { type: 'string' },
        'lora-dtype': { type: 'string' },
        'no-fold-norms': { type: 'boolean', default: false },
        svd: { type: 'string', default: 'auto' },
        backend: { type: 'string', default: 'auto' },
        seed: { type: 'string' },
        overwrite: { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    const source = await modelArgument(positionals[0]!, values, io);
    const out = await outputDirFlag(values.out, values.overwrite);
    const count = { integer: true, min: 1 };
    const loops = numberFlag('loops', values.loops, count);
    const blockSize = numberFlag('block-size', values['block-size'], count);
    if (loops === undefined && blockSize === undefined) throw new UsageError('give --loops or --block-size');
    const rank = { integer: true, min: 0 };
    const ranks: RankOption = { default: numberFlag('rank', values.rank, rank) ?? 0 };
    for (const group of ['q', 'kv', 'o', 'ffn'] as const) {
      const groupRank = numberFlag(`rank-${group}`, values[`rank-${group}`], rank);
      if (groupRank !== undefined) ranks[group] = groupRank;
    }
    const wantsLora = Object.values(ranks).some((value) => value !== 0);
    if (values.alpha !== undefined && !wantsLora) {
      throw new UsageError(
        '--alpha scales the LoRA, and there is none: give --rank (or a --rank-<group>) too',
      );
    }
    const backendKind = backendFlag(values.backend);
    const svdMethod = oneOf('svd', values.svd, ['auto', 'exact', 'randomized'] as const);
    const options: ConvertOptions = {
      strategy: oneOf<SharingStrategy>('strategy', values.strategy, ['cycle', 'sequence', 'middle-cycle']),
      init: oneOf<InitMethod>('init', values.init, ['stepwise', 'average', 'lower', 'upper', 'random']),
      subsample: values.subsample,
      ranks,
      foldNorms: !values['no-fold-norms'],
      overwrite: values.overwrite,
      dryRun: values['dry-run'],
      signal: io.signal,
    };
    if (loops !== undefined) options.loops = loops;
    if (blockSize !== undefined) options.blockSize = blockSize;
    const alpha = numberFlag('alpha', values.alpha, { above: 0 });
    if (alpha !== undefined) options.alpha = alpha;
    const seed = numberFlag('seed', values.seed, { integer: true });
    if (seed !== undefined) options.seed = seed;
    const outputDtype = dtypeFlag('dtype', values.dtype);
    if (outputDtype) options.outputDtype = outputDtype;
    const loraDtype = dtypeFlag('lora-dtype', values['lora-dtype']);
    if (loraDtype) options.loraDtype = loraDtype;

    let backendLine: string | undefined;
    options.svd = { method: svdMethod };
    if (wantsLora && !values['dry-run']) {
      const created = await createBackend(backendKind);
      options.svd.backend = created.backend;
      backendLine = `${created.kind}: ${created.reason}`;
    }
    if (!values.json && backendLine) io.stderr(`backend: ${backendLine}\n`);
    await clearStaleOutputs(out, io);
    const progress = progressReporter(io, 'convert');
    options.onProgress = ({ done, total, tensor }) => progress(done, total, tensor);
    options.onWarning = (message) => io.stderr(`warning: ${message}\n`);

    let result: ConversionResult;
    try {
      result = await convertToRecursive(source, out, options);
    } catch (error) {
      throw asFlagError(error, convertFlags);
    }
    if (values.json) {
      const { layout, ...rest } = result;
      io.stdout(`${JSON.stringify({ ...rest, layout: { ...layout }, backend: backendLine }, null, 2)}\n`);
    } else {
      io.stdout(`${report(result)}\n`);
    }
    return 0;
  },
};
