/**
 * Prefill and decode throughput of stories260K (imported from ../shared/assets), single stream and
 * batched, on one backend (default wasm). Prints tokens/s and the ratio of each batch size to the single
 * stream, all measured in this run.
 *
 *   node --import tsx bench/decode.ts [--backend wasm] [--steps 128]
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { argmax, type Decoder, importLlama2c, loadModel, loadTokenizer } from '@rrt/core';
import { createKVCache } from '@rrt/kv-cache';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    steps: { type: 'string', default: '128' },
    batches: { type: 'string', default: '1,4,16,64' },
  },
});
const assets = resolve(import.meta.dirname, '../../shared/assets/stories260K');
if (!existsSync(join(assets, 'stories260K.bin'))) {
  console.log('bench/decode: skipped, ../shared/assets/stories260K is absent');
  process.exit(0);
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-decode-'));
try {
  const modelDir = join(workDir, 'stories260K');
  await importLlama2c({
    checkpointPath: join(assets, 'stories260K.bin'),
    tokenizerPath: join(assets, 'tok512.bin'),
    outDir: modelDir,
  });
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

  await run(model, prompt, 1, 8); // warm-up: shader/kernel setup and weight packing
  const rows: { batch: number; prefill: number; decode: number }[] = [];
  for (const batch of values.batches.split(',').map(Number))
    rows.push({ batch, ...(await run(model, prompt, batch, steps)) });

  const single = rows.find((row) => row.batch === 1) ?? rows[0]!;
  console.log('batch  prefill tok/s  decode tok/s  decode × single');
  for (const row of rows) {
    console.log(
      `${String(row.batch).padStart(5)}  ${row.prefill.toFixed(0).padStart(13)}  ${row.decode.toFixed(0).padStart(12)}  ${(row.decode / single.decode).toFixed(2).padStart(15)}`,
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
  let started = performance.now();
  let next = await step(model, ids, [batch, prompt.length], cache);
  const prefillSeconds = (performance.now() - started) / 1000;
  started = performance.now();
  for (let position = 1; position < steps; position++) next = await step(model, next, [batch, 1], cache);
  const decodeSeconds = (performance.now() - started) / 1000;
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
