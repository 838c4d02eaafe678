import { readFile } from 'node:fs/promises';
import { createBackend } from '@rrt/backend-tfjs';
import { encodePrompt, generateText, loadModel, loadTokenizer, type StopReason } from '@rrt/core';
import { type CliIO, type Command, Interruption, UsageError } from '../cli-io.js';
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

Example:
  rrt generate models/stories260K "Once upon a time" -n 100 --temperature 0.8 --seed 1`,
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
