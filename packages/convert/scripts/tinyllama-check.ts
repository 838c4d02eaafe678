/**
 * The big-checkpoint check: a synthetic TinyLlama-shaped model (22 layers, hidden 2048, FFN 5632,
 * 32 query / 4 KV heads, vocab 32000, bf16, ≈ 2.2 GB) converted to an 11×2 relaxed model of rank 64
 * (average init, randomized SVD on the wasm backend), then loaded and asked for a few tokens.
 *
 * Phases, run in order (default: all three in one process):
 *   write     writes the synthetic source to <dir>/source-22 (skipped when it is already there)
 *   convert   converts it to <dir>/relaxed-22 (replacing an earlier one)
 *   generate  loads <dir>/relaxed-22 and generates 8 tokens greedily from BOS
 *
 * Run each phase under `/usr/bin/time -v` to measure its wall time and peak RSS; the conversion must
 * stay under 3 GB. From packages/convert:
 *
 *   TSX_TSCONFIG_PATH=test/tsconfig.json /usr/bin/time -v node --import tsx scripts/tinyllama-check.ts convert
 *
 * Usage: tinyllama-check.ts [write|convert|generate|all] [--dir /tmp/rrt-tinyllama] [--backend wasm]
 *        [--generate-backend cpu]
 *        [--rank 64] [--layers 22]
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { tinyLlamaSpec, writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { generateTokens, loadModel } from '@rrt/core';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string', default: '/tmp/rrt-tinyllama' },
    backend: { type: 'string', default: 'wasm' },
    // NOTE: the relaxed TinyLlama holds 666M float32 weights (2.66 GB); on wasm, XNNPACK adds a packed copy
    // of each weight it multiplies by, which overflows wasm32's 4 GB heap (it ran out at the edge: once
    // just under, once over). The cpu backend keeps weights in the JS heap and stays under 3 GB.
    'generate-backend': { type: 'string', default: 'cpu' },
    rank: { type: 'string', default: '64' },
    // Fewer layers for a quick trial run (the check itself uses 22).
    layers: { type: 'string', default: '22' },
  },
});
const phase = positionals[0] ?? 'all';
const spec = { ...tinyLlamaSpec, numHiddenLayers: Number(values.layers) };
const sourceDir = join(values.dir, `source-${spec.numHiddenLayers}`);
const relaxedDir = join(values.dir, `relaxed-${spec.numHiddenLayers}`);
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const log = (message: string) =>
  console.log(
    `[${(performance.now() / 1000).toFixed(1)} s, rss ${gib(process.memoryUsage().rss)}] ${message}`,
  );

if (phase === 'write' || phase === 'all') {
  if (existsSync(join(sourceDir, 'config.json'))) {
    log(`source already at ${sourceDir}`);
  } else {
    const written = await writeSyntheticCheckpoint(sourceDir, spec);
    log(`wrote ${sourceDir}: ${written.parameters} parameters, ${gib(written.bytes)}`);
  }
}

if (phase === 'convert' || phase === 'all') {
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  log(`backend ${kind}: ${reason}`);
  await rm(relaxedDir, { recursive: true, force: true });
  let lastDecile = -1;
  const result = await convertToRecursive(sourceDir, relaxedDir, {
    loops: 2,
    init: 'average',
    ranks: Number(values.rank),
    svd: { backend, method: 'randomized' },
    onProgress: ({ done, total, tensor }) => {
      const decile = Math.floor((10 * done) / total);
      if (decile !== lastDecile) {
        lastDecile = decile;
        log(`${done}/${total} ${tensor}`);
      }
    },
    onWarning: (message) => log(`warning: ${message}`),
  });
  log(
    `converted in ${result.seconds.toFixed(1)} s: ${result.recursion.blockSize}×${result.recursion.loops}, ${result.outputDtype}`,
  );
  log(`parameters ${JSON.stringify(result.parameters)}`);
  for (const group of result.reconstruction) {
    log(
      `${group.group}: rank ${group.ranks.join('/')}, recursive error ${group.recursiveError?.toFixed(4)}, relaxed ${group.relaxedError?.toFixed(4)}`,
    );
  }
}

if (phase === 'generate' || phase === 'all') {
  const { backend, kind } = await createBackend(values['generate-backend'] as BackendKind);
  const decoder = await loadModel(relaxedDir, backend);
  log(
    `loaded ${relaxedDir} on ${kind}: ${decoder.config.numHiddenLayers} effective layers, ${decoder.config.recursion?.storedLayers} stored`,
  );
  const started = performance.now();
  const tokens: number[] = [];
  for await (const token of generateTokens(decoder, [1], { maxTokens: 8, temperature: 0 }))
    tokens.push(token);
  log(
    `generated ${tokens.length} tokens in ${((performance.now() - started) / 1000).toFixed(2)} s: ${tokens.join(' ')}`,
  );
  decoder.dispose();
}
