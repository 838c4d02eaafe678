import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { generateText, loadModel, loadTokenizer } from '@rrt/core';
import { type Command, UsageError } from '../cli-io.js';
import { numberFlag } from '../flags.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a model directory, streaming to stdout',
  help: `rrt generate <model-dir> [--prompt <text>] [--max-tokens 256] [--temperature 0] [--top-k K] [--top-p P]
             [--seed N] [--backend auto|node-gpu|node|wasm|webgpu|cpu] [--json]

Greedy decoding by default (--temperature 0). Tokens stream to stdout as they are generated; Ctrl-C stops
cleanly. With --json, prints one JSON object at the end with the text, token count and timings.

Example:
  rrt generate models/stories260K --prompt "Once upon a time" --max-tokens 100 --temperature 0.8 --seed 1`,
  async run(args, io) {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        prompt: { type: 'string', default: '' },
        'max-tokens': { type: 'string', default: '256' },
        temperature: { type: 'string', default: '0' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        seed: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
      },
    });
    const [dir] = positionals;
    if (!dir) throw new UsageError('missing <model-dir>');
    const maxTokens = numberFlag('max-tokens', values['max-tokens'], (n) => Number.isInteger(n) && n >= 0)!;
    const temperature = numberFlag('temperature', values.temperature, (n) => n >= 0)!;
    const topK = numberFlag('top-k', values['top-k'], (n) => Number.isInteger(n) && n >= 0);
    const topP = numberFlag('top-p', values['top-p'], (n) => n > 0 && n <= 1);
    const seed = numberFlag('seed', values.seed, Number.isInteger);

    const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
    if (!values.json) io.stderr(`backend: ${kind} — ${reason}\n`);
    const model = await loadModel(dir, backend, {
      onIgnoredKey: (key) => io.stderr(`warning: config.json key "${key}" is not used by the model\n`),
      onUnusedTensor: (name) =>
        io.stderr(`warning: tensor "${name}" is not used by the model (does config.json describe it?)\n`),
    });
    const tokenizer = await loadTokenizer(dir);
    const controller = new AbortController();
    const onInterrupt = () => controller.abort();
    process.once('SIGINT', onInterrupt);
    const started = performance.now();
    let text = '';
    if (!values.json) io.stdout(values.prompt);
    let tokens = 0;
    let firstTokenSeconds: number | undefined;
    try {
      for await (const piece of generateText(model, tokenizer, values.prompt, {
        maxTokens,
        temperature,
        topK,
        topP,
        seed,
        signal: controller.signal,
        onToken: () => {
          tokens++;
          firstTokenSeconds ??= (performance.now() - started) / 1000;
        },
      })) {
        text += piece;
        if (!values.json) io.stdout(piece);
      }
    } finally {
      process.off('SIGINT', onInterrupt);
      model.dispose();
    }
    const seconds = (performance.now() - started) / 1000;
    if (values.json) {
      io.stdout(
        `${JSON.stringify({ backend: kind, prompt: values.prompt, text, tokens, seconds, firstTokenSeconds })}\n`,
      );
    } else {
      io.stdout('\n');
      const rate = tokens / seconds;
      io.stderr(
        `${tokens} tokens in ${seconds.toFixed(2)} s (${rate.toFixed(1)} tokens/s)${controller.signal.aborted ? ', interrupted' : ''}\n`,
      );
    }
    return 0;
  },
};
