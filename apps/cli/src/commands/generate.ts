import { readFile } from 'node:fs/promises';
import { createBackend } from '@rrt/backend-tfjs';
import { createEngine, type ExitPolicy } from '@rrt/batching';
import {
  type Decoder,
  encodePrompt,
  generateText,
  loadModel,
  loadTokenizer,
  type ModelConfig,
  readConfig,
  type SamplingOptions,
  type StopReason,
  type Tokenizer,
} from '@rrt/core';
import { type CliIO, type Command, Interruption, UsageError } from '../cli-io.js';
import { exitFlag, exitHistogram, exitLegend, exitMarkStyle, exitSpecs, markExit } from '../exits.js';
import { backendFlag, numberFlag, parseFlags } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

/** What the closing line says for each way a generation ends. */
const stopDescriptions: Record<StopReason, string> = {
  eos: 'end of sequence',
  stop: 'stop string',
  'max-tokens': 'max tokens reached',
  context: "the model's context is full",
  aborted: 'interrupted',
};

/** Reads the whole of standard input as text. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The prompt from `--prompt`, `--prompt-file` (`-` for stdin) or the positional, exactly one of them. */
async function promptOf(flag: string | undefined, file: string | undefined, positional: string | undefined) {
  const given = [flag, file, positional].filter((value) => value !== undefined).length;
  if (given > 1) throw new UsageError('give the prompt once: --prompt, --prompt-file or a second argument');
  if (file === undefined) return flag ?? positional ?? '';
  // A file's final newline ends its last line; it is not part of the prompt.
  const withoutFinalNewline = (text: string) => text.replace(/\r?\n$/, '');
  if (file === '-') return withoutFinalNewline(await readStdin());
  try {
    return withoutFinalNewline(await readFile(file, 'utf8'));
  } catch (error) {
    throw new UsageError(`--prompt-file ${file}: cannot read it (${(error as NodeJS.ErrnoException).code})`);
  }
}

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a model directory, streaming to stdout',
  help: `rrt generate <model-dir> [prompt] [options]

Greedy decoding by default (--temperature 0). Tokens stream to stdout as they are generated; the closing
line on stderr says why generation stopped (end of sequence, stop string, max tokens, full context,
interrupted). Ctrl-C stops after the token in flight and keeps the text so far (exit 130); a second
Ctrl-C ends at once. A model may also be a Hub repo id (owner/name[@revision]), pulled into the cache first;
--offline, --hub-url and --cache-dir work as for rrt pull.

Options:
  -p, --prompt <text>      the prompt (or give it as the second argument; default: start from BOS)
  --prompt-file <file>     read the prompt from a file (- reads standard input); its final newline is dropped
  -n, --max-tokens <n>     most tokens to generate (default 256)
  --temperature <t>        0 = greedy (default); > 0 samples
  --top-k <k>              sample from the k most likely tokens (needs --temperature > 0)
  --top-p <p>              sample from the smallest set of probability ≥ p, 0 < p ≤ 1
  --seed <n>               seed for sampling (default: a random one, printed)
  --stop <text>            stop where this text appears (repeatable)
  --stop-token <id>        stop at this token id (repeatable; replaces the model's end-of-sequence ids)
  --ignore-eos             do not stop at end-of-sequence tokens
  --backend <b>            auto (default) | node-gpu | node | wasm | webgpu | cpu
  --json                   print one JSON object at the end: text, token counts, stop reason, timings

Early exit (recursive models: rrt convert … --loops L):
  --exit <rule>            ${exitSpecs}
                           decode through the serving engine in depth-wise mode, one loop per step, each
                           token leaving at the first loop the rule allows (confidence: the loop's top
                           softmax probability ≥ τ, at every loop or only at the loops after @, as
                           rrt calibrate-exit --readout-cost prints them; agreement: two loops in a row
                           agree); skipped loops' keys and values are filled by CALM state
                           propagation. With --temperature > 0 each token is sampled from its exit loop
                           (--top-k, --top-p, --seed as above); not with --stop (use --stop-token). The
                           closing line gives the mean exit loop
  --min-loops <n>          with --exit confidence:<τ>: run at least n loops per token (default 1)
  --show-exits             mark each printed piece by the loop (0-based) its token exited at: colours on
                           a terminal (green = earliest … red = last loop; a legend goes to stderr), a
                           subscript after it when piped ("Once₀ upon₄": exited after loop 0, loop 4).
                           NO_COLOR turns colours off, FORCE_COLOR on. With --json: exitLoops (one per
                           token) and exitHistogram (tokens per loop) are in the object either way

Examples:
  rrt generate models/stories260K "Once upon a time" -n 100 --temperature 0.8 --seed 1
  rrt generate models/relaxed-1x5 "Once upon a time" -n 50 --exit confidence:0.9 --show-exits`,
  async run(args: string[], io: CliIO): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      options: {
        prompt: { type: 'string', short: 'p' },
        'prompt-file': { type: 'string' },
        'max-tokens': { type: 'string', short: 'n', default: '256' },
        temperature: { type: 'string', default: '0' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        seed: { type: 'string' },
        stop: { type: 'string', multiple: true },
        'stop-token': { type: 'string', multiple: true },
        'ignore-eos': { type: 'boolean', default: false },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        exit: { type: 'string' },
        'min-loops': { type: 'string' },
        'show-exits': { type: 'boolean', default: false },
        ...hubFlags,
      },
      positionals: ['<model-dir>', '[prompt]'],
      required: 1,
    });
    const dir = await modelArgument(positionals[0]!, values, io);
    const maxTokens = numberFlag('max-tokens', values['max-tokens'], { integer: true, min: 0 })!;
    const temperature = numberFlag('temperature', values.temperature, { min: 0 })!;
    const topK = numberFlag('top-k', values['top-k'], { integer: true, min: 1 });
    const topP = numberFlag('top-p', values['top-p'], { above: 0, max: 1 });
    let seed = numberFlag('seed', values.seed, { integer: true, min: 0 });
    const stopTokenIds = values['stop-token']?.map(
      (id) => numberFlag('stop-token', id, { integer: true, min: 0 })!,
    );
    const backendKind = backendFlag(values.backend);
    const exit = exitFlag(values.exit, values['min-loops']);
    if (values['show-exits'] && !exit)
      throw new UsageError('--show-exits needs --exit <rule> (e.g. --exit none)');
    if (exit && values.stop) throw new UsageError('--stop is not supported with --exit (use --stop-token)');
    const warn = (text: string) => io.stderr(`warning: ${text}\n`);
    if (temperature === 0) {
      for (const flag of ['top-k', 'top-p', 'seed'] as const) {
        if (values[flag] !== undefined)
          warn(`--${flag} has no effect with --temperature 0 (greedy decoding)`);
      }
    } else if (seed === undefined) {
      seed = Math.floor(Math.random() * 2 ** 31);
      if (!values.json) io.stderr(`seed: ${seed} (pass --seed ${seed} to repeat this sample)\n`);
    }
    const prompt = await promptOf(values.prompt, values['prompt-file'], positionals[1]);
    if (exit) exitLoopsOf(await readConfig(dir), dir, exit);

    const loadStarted = performance.now();
    const { backend, kind, reason } = await createBackend(backendKind);
    if (!values.json) io.stderr(`backend: ${kind} — ${reason}\n`);
    const tokenizer = await loadTokenizer(dir);
    const model = await loadModel(dir, backend, {
      onIgnoredKey: (key) => warn(`config.json key "${key}" is not used by the model`),
      onUnusedTensor: (name) =>
        warn(`tensor "${name}" is not used by the model (does config.json describe it?)`),
    });
    try {
      const promptIds = encodePrompt(tokenizer, prompt);
      const positions = model.config.maxPositionEmbeddings;
      if (promptIds.length >= positions) {
        throw new UsageError(
          `the prompt is ${promptIds.length} tokens, and ${dir} runs at most ${positions} positions ` +
            '(prompt and new tokens together): shorten the prompt',
        );
      }
      const loadSeconds = (performance.now() - loadStarted) / 1000;
      const stopTokens = values['ignore-eos'] ? (stopTokenIds ?? []) : stopTokenIds;
      if (exit) {
        return await generateWithExits(model, tokenizer, io, {
          dir,
          prompt,
          promptIds,
          maxTokens,
          stopTokens,
          exit,
          exitSpec: values.exit!,
          sampling: temperature > 0 ? { temperature, topK, topP, seed } : undefined,
          showExits: values['show-exits'],
          json: values.json,
          backend: kind,
          loadSeconds,
        });
      }
      const started = performance.now();
      let text = '';
      let tokens = 0;
      let firstTokenSeconds: number | undefined;
      let stopReason = 'max-tokens' as StopReason; // set by onStop
      if (!values.json) io.stdout(prompt);
      for await (const piece of generateText(model, tokenizer, prompt, {
        maxTokens,
        temperature,
        topK,
        topP,
        seed,
        stopTokens,
        stopStrings: values.stop,
        signal: io.signal,
        onToken: () => {
          tokens++;
          firstTokenSeconds ??= (performance.now() - started) / 1000;
        },
        onStop: (why) => {
          stopReason = why;
        },
      })) {
        text += piece;
        if (!values.json) io.stdout(piece);
      }
      const seconds = (performance.now() - started) / 1000;
      const interruption = io.signal?.reason instanceof Interruption ? io.signal.reason : undefined;
      if (interruption?.trigger === 'EPIPE') return 0; // the reader has what it wanted
      const tokensPerSecond = seconds > 0 ? tokens / seconds : 0;
      if (values.json) {
        io.stdout(
          `${JSON.stringify({
            backend: kind,
            prompt,
            text,
            stopReason,
            promptTokens: promptIds.length,
            completionTokens: tokens,
            seed: temperature > 0 ? seed : undefined,
            loadSeconds,
            seconds,
            firstTokenSeconds,
            tokensPerSecond,
          })}\n`,
        );
      } else {
        io.stdout('\n');
        io.stderr(
          `${tokens} tokens in ${seconds.toFixed(2)} s (${tokensPerSecond.toFixed(1)} tokens/s); ` +
            `stopped: ${stopDescriptions[stopReason]}\n`,
        );
        if (tokens === 0 && stopReason === 'eos') {
          io.stderr('(the first new token ended the sequence; --ignore-eos generates past it)\n');
        }
      }
      return interruption ? interruption.exitCode : 0;
    } finally {
      model.dispose();
    }
  },
};

/**
 * The loops of a model that `--exit` can run (a recursive `cycle` model); usage errors otherwise, and for a
 * `--min-loops` beyond them. Checked before anything loads, so that the error is the only line.
 */
function exitLoopsOf(config: ModelConfig, dir: string, exit: ExitPolicy): number {
  const recursion = config.recursion;
  if (!recursion) {
    throw new UsageError(
      `--exit needs a recursive model, and ${dir} has no loops: convert it first (rrt convert ${dir} --out <dir> --loops <L>)`,
    );
  }
  if (recursion.strategy !== 'cycle') {
    throw new UsageError(`--exit runs cycle models; ${dir} shares its layers by ${recursion.strategy}`);
  }
  const { loops } = recursion;
  if (exit.kind === 'confidence' && (exit.minLoops ?? 1) > loops) {
    throw new UsageError(
      `--min-loops expects an integer ≤ ${loops} (the loops of ${dir}), got ${exit.minLoops}`,
    );
  }
  const beyond = exit.kind === 'confidence' ? exit.checkLoops?.find((loop) => loop >= loops - 1) : undefined;
  if (beyond !== undefined) {
    throw new UsageError(
      `--exit confidence:<τ>@<loops>: loop ${beyond} is not before the last of ${dir}'s ${loops} (0-based, at most ${loops - 2})`,
    );
  }
  return loops;
}

/**
 * `--exit`: one request through the serving engine in depth-wise mode (a loop per step, the token leaving
 * at its exit loop, CALM propagation for the skipped loops' KV), so that an exit saves the compute it
 * claims; the decoder's per-loop readouts would run every loop. Prints as the plain path does, with the
 * mean exit loop in the closing line, and marks by exit loop with `--show-exits`.
 */
async function generateWithExits(
  model: Decoder,
  tokenizer: Tokenizer,
  io: CliIO,
  options: {
    dir: string;
    prompt: string;
    promptIds: number[];
    maxTokens: number;
    stopTokens: readonly number[] | undefined;
    exit: ExitPolicy;
    exitSpec: string;
    /** Temperature above 0 and its options: each token sampled from its exit loop's logits. */
    sampling: SamplingOptions | undefined;
    showExits: boolean;
    json: boolean;
    backend: string;
    loadSeconds: number;
  },
): Promise<number> {
  const { dir, prompt, promptIds, exit, json } = options;
  const { config } = model;
  const loops = exitLoopsOf(config, dir, exit);
  const maxTokens = Math.min(options.maxTokens, config.maxPositionEmbeddings - promptIds.length);
  const pageSize = 16;
  const pageBytes = 2 * 4 * config.numHiddenLayers * pageSize * config.numKeyValueHeads * config.headDim;
  const pages = Math.ceil((promptIds.length + maxTokens) / pageSize);
  const engine = createEngine(model, {
    mode: 'depth',
    maxSlots: 1,
    kvBytes: pages * pageBytes,
    pageSize,
    exit,
  });
  const style = exitMarkStyle(io.stdoutIsTerminal === true, process.env);
  const decoder = tokenizer.createDecodeStream();
  // The prompt goes through the stream unprinted, so the first new token decodes in context.
  for (const id of promptIds) decoder.push(id);
  const show = (piece: string, loop: number) =>
    options.showExits ? markExit(piece, loop, loops, style) : piece;
  if (options.showExits && !json) io.stderr(`${exitLegend(loops, style)}\n`);
  const stopTokens = options.stopTokens ?? (tokenizer.eosIds.length > 0 ? tokenizer.eosIds : undefined);
  const exitLoops: number[] = [];
  let text = '';
  let firstTokenSeconds: number | undefined;
  const started = performance.now();
  if (!json) io.stdout(prompt);
  const stream = engine.generate(promptIds, {
    maxTokens,
    ...(stopTokens ? { stopTokens } : {}),
    ...(io.signal ? { signal: io.signal } : {}),
    ...(options.sampling ? { sampling: options.sampling } : {}),
    onToken: (_token, loop) => {
      exitLoops.push(loop);
      firstTokenSeconds ??= (performance.now() - started) / 1000;
    },
  });
  let reason: StopReason;
  try {
    while (true) {
      const next = await stream.next();
      if (next.done) {
        const why = next.value.reason;
        reason = why === 'max-tokens' && maxTokens < options.maxTokens ? 'context' : (why as StopReason);
        break;
      }
      const piece = decoder.push(next.value);
      text += piece;
      if (!json && piece) io.stdout(show(piece, exitLoops.at(-1)!));
    }
    const rest = decoder.flush();
    text += rest;
    if (!json && rest) io.stdout(show(rest, exitLoops.at(-1) ?? loops - 1));
  } finally {
    engine.dispose();
  }
  const seconds = (performance.now() - started) / 1000;
  const interruption = io.signal?.reason instanceof Interruption ? io.signal.reason : undefined;
  if (interruption?.trigger === 'EPIPE') return 0;
  const tokens = exitLoops.length;
  const tokensPerSecond = seconds > 0 ? tokens / seconds : 0;
  const meanExitLoop = tokens > 0 ? exitLoops.reduce((a, b) => a + b, 0) / tokens : undefined;
  if (json) {
    io.stdout(
      `${JSON.stringify({
        backend: options.backend,
        prompt,
        text,
        stopReason: reason,
        promptTokens: promptIds.length,
        completionTokens: tokens,
        loadSeconds: options.loadSeconds,
        seconds,
        firstTokenSeconds,
        tokensPerSecond,
        seed: options.sampling?.seed,
        exit: options.exitSpec,
        loops,
        exitLoops,
        exitHistogram: exitHistogram(exitLoops, loops),
        meanExitLoop,
      })}\n`,
    );
  } else {
    io.stdout('\n');
    const mean = meanExitLoop === undefined ? 'no tokens' : `${meanExitLoop.toFixed(2)} of 0–${loops - 1}`;
    io.stderr(
      `${tokens} tokens in ${seconds.toFixed(2)} s (${tokensPerSecond.toFixed(1)} tokens/s); ` +
        `mean exit loop ${mean}; stopped: ${stopDescriptions[reason]}\n`,
    );
  }
  return interruption ? interruption.exitCode : 0;
}
