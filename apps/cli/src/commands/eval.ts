import { mkdir, rename, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, loadTokenizer, openCheckpoint, readConfig } from '@rrt/core';
import {
  checkpointStorage,
  documentsPerplexity,
  type EvalReport,
  encodeDocuments,
  encodeStream,
  modelCost,
  type PerplexityResult,
  reportCharts,
  reportJson,
  reportMarkdown,
  windowPerplexity,
} from '@rrt/eval';
import { type Command, formatTable, progressReporter, UsageError } from '../cli-io.js';
import { backendFlag, numberFlag, oneOf, parseFlags, readTextFlag } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

const protocols = ['documents', 'window'] as const;

export const evalCommand: Command = {
  name: 'eval',
  summary: 'perplexity of a model on a text file (documents or sliding window, per loop) and its cost',
  help: `rrt eval <model-dir> --text <file> [--protocol documents|window] [--window N] [--stride N]
         [--per-loop] [--max-tokens N] [--batch-tokens N] [--report <dir>] [--json]
         [--backend auto|node-gpu|node|wasm|webgpu|cpu]

Scores every token of the text once and prints the perplexity, with the model's parameters by group,
FLOPs and KV-cache bytes per token. The text is encoded as raw text (special-token strings such as
WikiText's "<unk>" are plain text).

  --protocol documents  (default) the text is split into documents at blank lines; each is scored from
                        BOS, truncated at the model's context (max_position_embeddings).
  --protocol window     the whole text is one stream (BOS first); windows of --window ids (default the
                        context) move by --stride (default half the window, at most window − 1), each
                        scoring the ids no earlier window scored.
  --per-loop            also the perplexity read out after every loop (what an early exit there gives).
  --max-tokens N        score only the first N tokens of the text (documents in order, the last one cut).
  --batch-tokens N      padded tokens per forward pass (default 1024, fewer for large vocabularies).
  --report <dir>        also write report.json, report.md and SVG charts there.
  --offline, --hub-url, --cache-dir   when <model-dir> is a Hub repo id (see rrt pull)

Example:
  rrt eval models/stories260K --text ../shared/assets/text/tinystories_val.txt --per-loop`,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<model-dir>'],
      options: {
        text: { type: 'string' },
        protocol: { type: 'string', default: 'documents' },
        window: { type: 'string' },
        stride: { type: 'string' },
        'per-loop': { type: 'boolean', default: false },
        'max-tokens': { type: 'string' },
        'batch-tokens': { type: 'string' },
        report: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    if (!values.text) throw new UsageError('missing --text <file>');
    const protocol = oneOf('protocol', values.protocol, protocols);
    const backendKind = backendFlag(values.backend);
    const positiveInteger = { integer: true, min: 1 };
    const window = numberFlag('window', values.window, positiveInteger);
    const stride = numberFlag('stride', values.stride, positiveInteger);
    if (protocol === 'documents' && (window !== undefined || stride !== undefined)) {
      throw new UsageError('--window and --stride belong to --protocol window');
    }
    const maxTokens = numberFlag('max-tokens', values['max-tokens'], positiveInteger);
    const batchTokens = numberFlag('batch-tokens', values['batch-tokens'], positiveInteger);
    const perLoop = values['per-loop'];

    const text = await readTextFlag(values.text);
    const dir = await modelArgument(positionals[0]!, values, io);
    const config = await readConfig(dir);
    const checkpoint = await openCheckpoint(dir);
    const storage = checkpointStorage(checkpoint.entries, config);
    await checkpoint.close();
    const cost = modelCost(config);
    const tokenizer = await loadTokenizer(dir);

    const { backend, kind, reason } = await createBackend(backendKind);
    if (!values.json) io.stderr(`backend: ${kind} — ${reason}\n`);
    const model = await loadModel(dir, backend, {
      onIgnoredKey: (key) => io.stderr(`warning: config.json key "${key}" is not used by the model\n`),
      onUnusedTensor: (name) =>
        io.stderr(`warning: tensor "${name}" is not used by the model (does config.json describe it?)\n`),
    });
    const started = performance.now();
    const report = progressReporter(io, 'eval');
    const onProgress = values.json
      ? undefined
      : ({ scoredTokens, totalTokens }: { scoredTokens: number; totalTokens: number }) => {
          const rate = scoredTokens / ((performance.now() - started) / 1000);
          report(scoredTokens, totalTokens, `tokens, ${rate.toFixed(0)} tokens/s`);
        };
    let result: PerplexityResult;
    try {
      result =
        protocol === 'documents'
          ? await documentsPerplexity(model, encodeDocuments(tokenizer, text), {
              perLoop,
              maxTokens,
              batchTokens,
              onProgress,
              signal: io.signal,
            })
          : await windowPerplexity(model, encodeStream(tokenizer, text), {
              window,
              stride,
              perLoop,
              maxTokens,
              batchTokens,
              onProgress,
              signal: io.signal,
            });
    } finally {
      model.dispose();
    }
    const seconds = (performance.now() - started) / 1000;
    const name = basename(resolve(dir));
    const recursion = config.recursion;
    const rank = recursion ? Math.max(...Object.values(recursion.loraRanks)) : undefined;

    if (values.report) {
      const evalReport: EvalReport = {
        title: `${name} on ${basename(values.text)}`,
        text: `${values.text}, ${describeProtocol(result)}${maxTokens === undefined ? '' : `, first ${maxTokens} tokens`}`,
        backend: kind,
        entries: [{ model: name, ...(rank === undefined ? {} : { rank }), perplexity: result, cost }],
      };
      await writeReport(values.report, evalReport);
    }

    if (values.json) {
      io.stdout(
        `${JSON.stringify({ model: dir, text: values.text, backend: kind, seconds, result, cost, storage })}\n`,
      );
      return 0;
    }
    const lines = [
      `${name} on ${values.text} (${describeProtocol(result)}):`,
      `  perplexity ${result.perplexity.toFixed(4)} over ${count(result.tokens)} tokens in ${count(result.spans)} ` +
        `${result.protocol === 'documents' ? 'documents' : 'windows'}` +
        (result.protocol === 'documents'
          ? `, ${count(result.truncatedTokens)} tokens past the context not scored`
          : '') +
        `; ${seconds.toFixed(1)} s, ${(result.tokens / seconds).toFixed(0)} tokens/s`,
    ];
    if (result.loops) {
      lines.push(
        '',
        formatTable(
          ['after loop', 'depth', 'perplexity'],
          result.loops.map((loop, index) => [
            `${index + 1}${loop.final ? ' (final)' : ''}`,
            loop.depth + 1,
            loop.perplexity.toFixed(4),
          ]),
        ),
      );
    }
    const p = cost.parameters;
    lines.push(
      '',
      formatTable(
        ['embedding', 'shared block', 'unique layers', 'LoRA', 'norms', 'head', 'total', 'non-embedding'],
        [
          [p.embedding, p.sharedBlock, p.uniqueLayers, p.lora, p.norms, p.head, p.total, p.nonEmbedding].map(
            count,
          ),
        ],
      ),
      `  stored: ${Object.entries(storage.byDtype)
        .map(([dtype, tally]) => `${count(tally.bytes)} bytes ${dtype}`)
        .join(
          ', ',
        )}; ${count(cost.flopsPerToken.total)} FLOPs/token at ${cost.flopsPerToken.context} keys; ` +
        `KV cache ${count(cost.kvBytesPerToken)} bytes/token`,
    );
    if (values.report) lines.push(`  report: ${values.report}/report.md`);
    io.stdout(`${lines.join('\n')}\n`);
    return 0;
  },
};

function describeProtocol(result: PerplexityResult): string {
  return result.protocol === 'documents'
    ? `documents protocol, context ${result.context}`
    : `window protocol, window ${result.context}, stride ${result.stride}`;
}

/** Writes report.json, report.md and the charts into `dir`, each to a temporary name first. */
async function writeReport(dir: string, report: EvalReport): Promise<void> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, string> = {
    'report.json': reportJson(report),
    'report.md': reportMarkdown(report),
  };
  for (const [stem, svg] of Object.entries(await reportCharts(report))) files[`${stem}.svg`] = svg;
  for (const [file, content] of Object.entries(files)) {
    const target = join(dir, file);
    const temporary = `${target}.tmp-${process.pid}`;
    await writeFile(temporary, content);
    await rename(temporary, target);
  }
}

function count(value: number): string {
  return value.toLocaleString('en-US');
}
