/**
 * Documents-protocol scoring speed of stories260K (imported from ../shared/assets) on the first
 * documents of tinystories_val.txt, each document alone and batched at several padded-token budgets.
 * Prints tokens per CPU second of this process (other processes on a shared machine stay out of it) and
 * the ratio to one document per forward pass, all measured in this run; the perplexities printed beside
 * them agree (batching is exact up to rounding).
 *
 *   node --import tsx bench/eval.ts [--backend wasm] [--documents 200] [--budgets 1,1024,4096,16384]
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { loadModel, loadTokenizer } from '@rrt/core';
import { documentsPerplexity, encodeDocuments } from '@rrt/eval';
import { importStories260K } from './common.js';

/** User + system CPU time of this process: the wasm and cpu backends compute on this thread. */
function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    documents: { type: 'string', default: '200' },
    budgets: { type: 'string', default: '1,1024,4096,16384' },
  },
});
const assets = resolve(import.meta.dirname, '../../shared/assets');
if (!existsSync(join(assets, 'stories260K/stories260K.bin'))) {
  console.log('bench/eval: skipped, ../shared/assets/stories260K is absent');
  process.exit(0);
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-eval-'));
try {
  const modelDir = await importStories260K(join(assets, 'stories260K'), workDir);
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const model = await loadModel(modelDir, backend);
  const tokenizer = await loadTokenizer(modelDir);
  const text = await readFile(join(assets, 'text/tinystories_val.txt'), 'utf8');
  const documents = encodeDocuments(tokenizer, text).slice(0, Number(values.documents));
  console.log(`backend ${kind}: ${reason}`);
  await documentsPerplexity(model, documents.slice(0, 8)); // warm-up: kernel setup and weight packing

  const rows: { budget: number; rate: number; perplexity: number; tokens: number }[] = [];
  for (const budget of values.budgets.split(',').map(Number)) {
    const started = cpuSeconds();
    const result = await documentsPerplexity(model, documents, { batchTokens: budget });
    const seconds = cpuSeconds() - started;
    rows.push({
      budget,
      rate: result.tokens / seconds,
      perplexity: result.perplexity,
      tokens: result.tokens,
    });
  }
  console.log(`stories260K, ${documents.length} documents, ${rows[0]!.tokens} tokens scored\n`);
  const single = rows[0]!;
  console.log('batch tokens  tokens/CPU s  × one document  perplexity');
  for (const row of rows) {
    console.log(
      `${String(row.budget).padStart(12)}  ${row.rate.toFixed(0).padStart(12)}  ${(row.rate / single.rate).toFixed(2).padStart(14)}  ${row.perplexity.toFixed(6)}`,
    );
  }
  model.dispose();
  console.log(`\nlive tensors after dispose: ${backend.numTensors()}`);
} finally {
  await rm(workDir, { recursive: true, force: true });
}
