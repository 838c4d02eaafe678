/**
 * Training-step throughput on stories260K (imported from ../shared/assets), batch 8 × 128 by default,
 * measured side by side in one run: a forward pass alone, a cross-entropy training step of the original
 * model (forward, backward, AdamW), and on its relaxed 1×5 conversion (average init, rank 8) a step
 * distilled from the original and an early-exit step (every loop's exit trained, distilled from the
 * detached last loop). Prints tokens/s of each and its ratio to the forward pass.
 *
 *   node --import tsx bench/train-step.ts [--backend wasm] [--batch 8] [--seq 128] [--steps 5]
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { type Decoder, loadModel } from '@rrt/core';
import {
  AdamW,
  crossEntropy,
  defaultLossWeights,
  type StepOptions,
  type TokenBatch,
  TrainableModel,
  TrainRandom,
  targetIndices,
  trainingStep,
} from '@rrt/train';
import { importStories260K } from './common.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '128' },
    steps: { type: 'string', default: '5' },
  },
});
const assets = resolve(import.meta.dirname, '../../shared/assets/stories260K');
if (!existsSync(join(assets, 'stories260K.bin'))) {
  console.log('bench/train-step: skipped, ../shared/assets/stories260K is absent');
  process.exit(0);
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-train-'));
try {
  const originalDir = await importStories260K(assets, workDir);
  const relaxedDir = join(workDir, 'relaxed');
  await convertToRecursive(originalDir, relaxedDir, { loops: 5, init: 'average', ranks: 8 });
  const { backend, kind, reason } = await createBackend(values.backend as BackendKind);
  const [batchSize, length, steps] = [Number(values.batch), Number(values.seq), Number(values.steps)];
  const random = new TrainRandom(0);
  const batch = (vocab: number): TokenBatch => ({
    batch: batchSize,
    length,
    inputs: Int32Array.from({ length: batchSize * length }, () => random.below(vocab)),
    targets: Int32Array.from({ length: batchSize * length }, () => random.below(vocab)),
  });
  console.log(`backend ${kind}: ${reason}`);
  console.log(
    `stories260K, batch ${batchSize} × ${length} tokens, best of ${steps} steps after one warm-up\n`,
  );

  /** Best seconds of `steps` calls after one warm-up. */
  const best = async (run: () => Promise<void>) => {
    await run();
    let fastest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < steps; i++) {
      const started = performance.now();
      await run();
      fastest = Math.min(fastest, (performance.now() - started) / 1000);
    }
    return fastest;
  };

  const teacher: Decoder = await loadModel(originalDir, backend);
  const original = await TrainableModel.load(originalDir, backend);
  const relaxed = await TrainableModel.load(relaxedDir, backend);
  const rows: [string, number][] = [];
  const forward = await best(async () => {
    const data = batch(original.config.vocabSize);
    const loss = backend.tidy(() => {
      const ids = backend.fromArray(data.inputs, [batchSize, length], 'int32');
      const target = targetIndices(backend, data.targets, original.config.vocabSize);
      return original.withHead((decoder) => crossEntropy(backend, decoder.forward(ids).logits, target));
    });
    await backend.read(loss);
    backend.dispose(loss);
  });
  rows.push(['forward + loss only (original)', forward]);
  const stepOf = async (model: TrainableModel, options: StepOptions) => {
    const optimizer = new AdamW(backend, model.parameters, { weightDecay: 0.01 });
    let step = 0;
    const seconds = await best(async () => {
      await trainingStep(backend, model, optimizer, batch(model.config.vocabSize), 1e-3, ++step, options);
    });
    optimizer.dispose();
    return seconds;
  };
  const plain = { earlyExit: false, lossWeights: defaultLossWeights };
  rows.push(['training step, cross-entropy (original)', await stepOf(original, plain)]);
  rows.push([
    'training step, CE + KL from teacher (relaxed 1×5 r8)',
    await stepOf(relaxed, { ...plain, teacher }),
  ]);
  rows.push([
    'training step, early exit, 5 loops (relaxed 1×5 r8)',
    await stepOf(relaxed, { ...plain, earlyExit: true }),
  ]);
  const tokens = batchSize * length;
  for (const [name, seconds] of rows) {
    console.log(
      `${name.padEnd(56)} ${(seconds * 1000).toFixed(0).padStart(6)} ms  ${(tokens / seconds).toFixed(0).padStart(6)} tokens/s  ` +
        `×${(seconds / forward).toFixed(2)} of the forward`,
    );
  }
  teacher.dispose();
  original.dispose();
  relaxed.dispose();
} finally {
  await rm(workDir, { recursive: true, force: true });
}
