import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { buildLlamaTokenizerConfig, buildLlamaTokenizerJson, loadTokenizer, type Tokenizer } from '@rrt/core';
import {
  defaultLossWeights,
  learnBpeVocab,
  splitDocuments,
  TextDataset,
  type TrainResult,
  train,
  writeRandomModel,
} from '@rrt/train';
import {
  type CliIO,
  type Command,
  formatTable,
  Interruption,
  progressReporter,
  UsageError,
} from '../cli-io.js';
import { backendFlag, numberFlag, oneOf, outputDirFlag, parseFlags, readTextFlag } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

const positiveInteger = { integer: true, min: 1 };
const nonNegativeInteger = { integer: true, min: 0 };
const positive = { above: 0 };

/** `3m 20s` / `45s`. */
function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const whole = Math.round(seconds);
  return whole >= 60 ? `${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, '0')}s` : `${whole}s`;
}

/** The closing summary: held-out loss and perplexity before and after, and what the run cost. */
function report(result: TrainResult, outDir: string): string {
  const rows = result.heldOutLosses.map(([step, loss]) => [step, loss.toFixed(4), Math.exp(loss).toFixed(2)]);
  return [
    `wrote ${outDir}: ${result.stepsDone} steps${result.resumedFrom > 0 ? ` (resumed from step ${result.resumedFrom})` : ''}, ` +
      `${result.tokens} tokens in ${duration(result.seconds)} (${(result.tokens / result.seconds).toFixed(0)} tokens/s)`,
    '',
    formatTable(['step', 'held-out loss (nats/token)', 'held-out perplexity'], rows),
  ].join('\n');
}

/**
 * A pretraining run's starting directory: the config with seeded random weights, and a tokenizer —
 * copied from `--tokenizer`, or a BPE vocabulary of the config's size learned from the training text.
 */
async function initialModel(
  configPath: string,
  tokenizerDir: string | undefined,
  documents: string[],
  seed: number,
): Promise<{ dir: string; tokenizer: Tokenizer }> {
  const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  const dir = await mkdtemp(join(tmpdir(), 'rrt-init-'));
  await writeRandomModel(dir, config, { seed });
  if (tokenizerDir) {
    for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
      await copyFile(join(tokenizerDir, name), join(dir, name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT' || name === 'tokenizer.json') throw error;
      });
    }
  } else {
    const vocabSize = config.vocab_size;
    if (typeof vocabSize !== 'number') throw new UsageError(`${configPath}: vocab_size must be a number`);
    const vocab = learnBpeVocab(documents, { vocabSize });
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(buildLlamaTokenizerJson(vocab)));
    const positions =
      typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings : 2048;
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify(buildLlamaTokenizerConfig(vocab, positions)),
    );
  }
  return { dir, tokenizer: await loadTokenizer(dir) };
}

/** `rrt train`: uptrain a (converted) model, or pretrain one from a config. */
export const trainCommand: Command = {
  name: 'train',
  summary: 'uptrain a model (distillation, early exit) or pretrain one from a config, resumably',
  help: `rrt train <model-dir> --text <file> --out <dir> [options]
rrt train --init-config <config.json> --text <file> --out <dir> [--tokenizer <dir>] [options]

Trains every weight (shared block, LoRA, norms, embeddings unless frozen) with AdamW, linear warmup and
cosine decay, and global-norm clipping, on the text split into documents at blank lines; a seeded
fraction of the documents is held out and the held-out loss is reported. <out> becomes a model
directory (model.safetensors + config and tokenizer) with the resumable state train-state.safetensors,
split.json and train-log.json beside it. With --init-config the model starts from seeded random weights
(pretraining); its tokenizer is copied from --tokenizer, or learned from the text (BPE, byte fallback,
the config's vocab_size).

Options:
  --text <file>            training text (required)
  --out <dir>              output directory (required)
  --steps <n>              optimizer steps (default 200)
  --batch <n>              sequences per step (default 8)
  --seq <n>                tokens per sequence (default 128)
  --lr <x>                 peak learning rate (default 1e-3)
  --warmup <n>             warmup steps (default 10% of --steps)
  --weight-decay <x>       AdamW weight decay of matrices and LoRA (default 0.01)
  --clip <x>               gradient global-norm clip (default 1)
  --teacher <dir>          distil from this model (forward KL to its logits), e.g. the original
  --early-exit             train every loop's exit (weight 1 on the last loop, 0.1 on earlier ones,
                           plus KL from the detached last loop)
  --early-exit-weight <x>  weight of each earlier loop's loss with --early-exit (default 0.1)
  --freeze-embeddings      leave the embedding (and a tied head) untrained
  --held-out <f>           fraction of documents held out (default 0.1)
  --seed <n>               seed of the split, the batches and the init (default 0)
  --checkpoint-every <n>   write the resumable state every n steps (default steps / 10)
  --eval-every <n>         measure the held-out loss every n steps (default: start and end)
  --resume                 continue from <out>/train-state.safetensors (same settings required)
  --dtype <d>              f32 (default) | f16 weights of the written model
  --init-config <file>     pretrain: a config.json to initialise randomly instead of <model-dir>
  --tokenizer <dir>        pretrain: the tokenizer to use (default: learn one from the text)
  --backend <b>            auto (default) | node-gpu | node | wasm | webgpu | cpu
  --json                   print the result as JSON

Examples:
  rrt train models/stories260K-1x5 --text tinystories.txt --out models/uptrained --teacher models/stories260K --steps 300
  rrt train --init-config tiny-config.json --text corpus.txt --out models/tiny --steps 1000 --lr 3e-3`,
  async run(args: string[], io: CliIO): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<model-dir>'],
      required: 0,
      options: {
        text: { type: 'string' },
        out: { type: 'string' },
        steps: { type: 'string', default: '200' },
        batch: { type: 'string' },
        seq: { type: 'string' },
        lr: { type: 'string' },
        warmup: { type: 'string' },
        'weight-decay': { type: 'string' },
        clip: { type: 'string' },
        teacher: { type: 'string' },
        'early-exit': { type: 'boolean', default: false },
        'early-exit-weight': { type: 'string' },
        'freeze-embeddings': { type: 'boolean', default: false },
        'held-out': { type: 'string' },
        seed: { type: 'string' },
        'checkpoint-every': { type: 'string' },
        'eval-every': { type: 'string' },
        resume: { type: 'boolean', default: false },
        dtype: { type: 'string', default: 'f32' },
        'init-config': { type: 'string' },
        tokenizer: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    const initConfig = values['init-config'];
    const [modelArg] = positionals;
    if (initConfig && modelArg) throw new UsageError('give a <model-dir> or --init-config, not both');
    if (!initConfig && !modelArg)
      throw new UsageError('expected a <model-dir> (or --init-config <config.json>)');
    if (values.tokenizer && !initConfig) throw new UsageError('--tokenizer goes with --init-config');
    if (!values.text) throw new UsageError('--text <file> is required');
    const out = await outputDirFlag(values.out, true); // a run writes into its --out, and --resume reads it
    const dtype = oneOf('dtype', values.dtype.toLowerCase(), ['f32', 'f16'] as const);
    const backendKind = backendFlag(values.backend);
    const seed = numberFlag('seed', values.seed, { integer: true }) ?? 0;
    const steps = numberFlag('steps', values.steps, positiveInteger)!;
    const hyper = {
      batchSize: numberFlag('batch', values.batch, positiveInteger),
      sequenceLength: numberFlag('seq', values.seq, positiveInteger),
      learningRate: numberFlag('lr', values.lr, positive),
      warmupSteps: numberFlag('warmup', values.warmup, nonNegativeInteger),
      weightDecay: numberFlag('weight-decay', values['weight-decay'], { min: 0 }),
      maxGradNorm: numberFlag('clip', values.clip, positive),
      checkpointEvery: numberFlag('checkpoint-every', values['checkpoint-every'], positiveInteger),
      evalEvery: numberFlag('eval-every', values['eval-every'], nonNegativeInteger),
    };
    const earlierLoops = numberFlag('early-exit-weight', values['early-exit-weight'], { min: 0 });
    if (earlierLoops !== undefined && !values['early-exit'])
      throw new UsageError('--early-exit-weight goes with --early-exit');
    const heldOutFraction = numberFlag('held-out', values['held-out'], { above: 0, max: 0.5 });

    const documents = splitDocuments(await readTextFlag(values.text));
    let modelDir = initConfig ? '' : await modelArgument(modelArg!, values, io);
    let initDir: string | undefined;
    let tokenizer: Tokenizer;
    if (initConfig) {
      const init = await initialModel(initConfig, values.tokenizer, documents, seed);
      modelDir = initDir = init.dir;
      tokenizer = init.tokenizer;
    } else {
      tokenizer = await loadTokenizer(modelDir);
    }
    try {
      const dataset = TextDataset.create({
        documents,
        // Raw text: special-token text in it is plain text, and BOS is put before each document here.
        encode: (text) => tokenizer.encode(text, { addBos: false, parseSpecialTokens: false }),
        bosId: tokenizer.bosId,
        heldOutFraction,
        seed,
        source: values.text,
      });
      const { backend, kind, reason } = await createBackend(backendKind);
      if (!values.json) {
        io.stderr(`backend: ${kind} — ${reason}\n`);
        io.stderr(
          `${basename(values.text)}: ${dataset.split.documentCount} documents, ${dataset.split.heldOutDocuments.length} held out; ` +
            `${dataset.split.trainTokens} training tokens, ${dataset.split.heldOutTokens} held-out tokens\n`,
        );
      }
      const progress = progressReporter(io, 'train');
      const result = await train(backend, {
        modelDir,
        outDir: out,
        dataset,
        steps,
        ...hyper,
        teacherDir:
          values.teacher === undefined ? undefined : await modelArgument(values.teacher, values, io),
        earlyExit: values['early-exit'],
        ...(earlierLoops === undefined ? {} : { lossWeights: { ...defaultLossWeights, earlierLoops } }),
        freezeEmbeddings: values['freeze-embeddings'],
        seed,
        resume: values.resume,
        signal: io.signal,
        saveDtype: dtype === 'f16' ? 'F16' : 'F32',
        onProgress: (p) => {
          if (values.json) return;
          const heldOut = p.heldOutLoss === undefined ? '' : ` held-out ${p.heldOutLoss.toFixed(3)}`;
          progress(
            p.step,
            p.totalSteps,
            `loss ${p.loss.toFixed(3)}${heldOut} ${p.tokensPerSecond.toFixed(0)} tok/s ETA ${duration(p.etaSeconds)}`,
          );
        },
      });
      if (values.json)
        io.stdout(`${JSON.stringify({ backend: kind, outDir: out, split: dataset.split, ...result })}\n`);
      else if (!result.interrupted) io.stdout(`${report(result, out)}\n`);
      if (!result.interrupted) return 0;
      io.stderr(
        `\nrrt train: interrupted after step ${result.stepsDone}; the last checkpoint in ${out} stays, ` +
          'and the same command with --resume continues from it\n',
      );
      return io.signal?.reason instanceof Interruption ? io.signal.reason.exitCode : 130;
    } finally {
      if (initDir) await rm(initDir, { recursive: true, force: true });
    }
  },
};
