import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { argmax, type Decoder, loadModel, loadTokenizer } from '@rrt/core';
import { createKVCache } from '@rrt/kv-cache';
import { clockMs, importStories260K, stories260KAssetsOrExit } from './common.js';
import { ScalarForward } from './scalar-forward.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    steps: { type: 'string', default: '128' },
    batches: { type: 'string', default: '1,4,16,64' },
    rounds: { type: 'string', default: '3' },
    /** `cpu`: this process's CPU time (keeps other processes' turns out); `wall`: elapsed time. */
    clock: { type: 'string', default: 'cpu' },
  },
});
/** Milliseconds on the chosen clock. */
const now = clockMs(values.clock);
const assets = stories260KAssetsOrExit('decode');

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-decode-'));
try {
  const modelDir = await importStories260K(assets, workDir);
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const model = await loadModel(modelDir, backend);
  const tokenizer = await loadTokenizer(modelDir);
  const prompt = tokenizer.encode(
    'Once upon a time, there was a little girl named Lily. She loved to play outside.',
    {
      addBos: true,
    },
  );
  const steps = Number(values.steps);
  console.log(`backend ${kind}: ${reason}`);
  console.log(`stories260K, prompt ${prompt.length} tokens, ${steps} decode steps per sequence\n`);

  const scalar = await ScalarForward.from(model, prompt.length + steps);
  const error = await compareLogits(model, scalar, prompt);
  console.log(
    `scalar baseline vs rrt logits over the ${prompt.length} prompt positions: max |Δ| ${error.maxAbs.toExponential(2)} ` +
      `(largest |logit| ${error.largest.toFixed(2)}), same argmax at every position: ${error.sameArgmax}`,
  );
  if (error.maxAbs > 1e-4 * error.largest || !error.sameArgmax) {
    throw new Error('bench/decode: the scalar baseline disagrees with rrt; its timing would mean nothing');
  }

  await run(model, prompt, 1, 8); // warm-up: shader/kernel setup and weight packing
  runScalar(scalar, prompt, 8);
  const batches = values.batches.split(',').map(Number);
  const best = new Map<number, { prefill: number; decode: number }>();
  let scalarBest = { prefill: 0, decode: 0 };
  for (let round = 0; round < Number(values.rounds); round++) {
    const s = runScalar(scalar, prompt, steps);
    if (s.decode > scalarBest.decode) scalarBest = s;
    for (const batch of batches) {
      const r = await run(model, prompt, batch, steps);
      if (r.decode > (best.get(batch)?.decode ?? 0)) best.set(batch, r);
    }
  }

  console.log(
    `best of ${values.rounds} alternating rounds, ${values.clock} clock (the machine may be shared: read the ratios)\n`,
  );
  console.log('                 prefill tok/s  decode tok/s  decode × scalar');
  console.log(
    `scalar, batch 1  ${scalarBest.prefill.toFixed(0).padStart(13)}  ${scalarBest.decode.toFixed(0).padStart(12)}  ${'1.00'.padStart(15)}`,
  );
  for (const batch of batches) {
    const row = best.get(batch)!;
    console.log(
      `rrt, batch ${String(batch).padEnd(4)}  ${row.prefill.toFixed(0).padStart(13)}  ${row.decode.toFixed(0).padStart(12)}  ${(row.decode / scalarBest.decode).toFixed(2).padStart(15)}`,
    );
  }
  model.dispose();
  console.log(`\nlive tensors after dispose: ${backend.numTensors()}`);
} finally {
  await rm(workDir, { recursive: true, force: true });
}

/** Prefills `batch` copies of the prompt, then decodes `steps` greedy tokens for each; returns tokens/s. */
async function run(model: Decoder, prompt: number[], batch: number, steps: number) {
  const { backend, config } = model;
  const cache = createKVCache(backend, { depths: config.numHiddenLayers, capacity: prompt.length + steps });
  const ids = Int32Array.from({ length: batch * prompt.length }, (_, i) => prompt[i % prompt.length]!);
  let started = now();
  let next = await step(model, ids, [batch, prompt.length], cache);
  const prefillSeconds = (now() - started) / 1000;
  started = now();
  for (let position = 1; position < steps; position++) next = await step(model, next, [batch, 1], cache);
  const decodeSeconds = (now() - started) / 1000;
  cache.dispose();
  return { prefill: (batch * prompt.length) / prefillSeconds, decode: (batch * (steps - 1)) / decodeSeconds };
}

/** One forward over `[batch, length]` ids; returns each sequence's greedy next token. */
async function step(
  model: Decoder,
  ids: Int32Array,
  shape: [number, number],
  cache: ReturnType<typeof createKVCache>,
) {
  const { backend, config } = model;
  const input = backend.fromArray(ids, shape, 'int32');
  const { logits } = model.forward(input, { cache, lastPositionOnly: true });
  const values = await backend.read(logits);
  backend.dispose([input, logits]);
  return Int32Array.from({ length: shape[0] }, (_, row) =>
    argmax(values.subarray(row * config.vocabSize, (row + 1) * config.vocabSize)),
  );
}

/** Greedy decoding with the scalar forward: prefill token by token, then `steps − 1` tokens. */
function runScalar(scalar: ScalarForward, prompt: number[], steps: number) {
  scalar.reset();
  let started = now();
  let logits: Float32Array = new Float32Array(0);
  for (const token of prompt) logits = scalar.step(token);
  const prefillSeconds = (now() - started) / 1000;
  started = now();
  for (let position = 1; position < steps; position++) logits = scalar.step(argmax(logits));
  const decodeSeconds = (now() - started) / 1000;
  return { prefill: prompt.length / prefillSeconds, decode: (steps - 1) / decodeSeconds };
}

/** Max |Δ| between rrt's logits (one forward over the prompt) and the scalar forward's, position by position. */
async function compareLogits(model: Decoder, scalar: ScalarForward, prompt: number[]) {
  const { backend, config } = model;
  const input = backend.fromArray(Int32Array.from(prompt), [1, prompt.length], 'int32');
  const { logits } = model.forward(input);
  const ours = await backend.read(logits);
  backend.dispose([input, logits]);
  scalar.reset();
  let maxAbs = 0;
  let largest = 0;
  let sameArgmax = true;
  prompt.forEach((token, position) => {
    const theirs = scalar.step(token);
    const row = ours.subarray(position * config.vocabSize, (position + 1) * config.vocabSize);
    for (let i = 0; i < theirs.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(theirs[i]! - row[i]!));
      largest = Math.max(largest, Math.abs(row[i]!));
    }
    if (argmax(theirs) !== argmax(row)) sameArgmax = false;
  });
  return { maxAbs, largest, sameArgmax };
}
