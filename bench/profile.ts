import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { Decoder, type LayerWeights, type Linear, loadModel, type ModelWeights } from '@rrt/core';
import { createKVCache, type KVCache } from '@rrt/kv-cache';
import type { Backend, Tensor, Variable } from '@rrt/tensor';
import * as tf from '@tensorflow/tfjs-core';
import { clockMs, importStories260K, stories260KAssetsOrExit } from './common.js';

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    top: { type: 'string', default: '12' },
    'train-steps': { type: 'string', default: '3' },
    'decode-steps': { type: 'string', default: '64' },
    'profile-rounds': { type: 'string', default: '5' },
    only: { type: 'string', default: 'decode1,decode64,train' },
    /** `cpu`: this process's CPU time (keeps other processes' turns out); `wall`: elapsed time. */
    clock: { type: 'string', default: 'cpu' },
    /** `gather`: pick each target's log-probability by index; `onehot`: multiply by a one-hot and sum. */
    loss: { type: 'string', default: 'gather' },
  },
});
/** Milliseconds on the chosen clock. */
const now = clockMs(args.clock);
const assets = stories260KAssetsOrExit('profile');
const top = Number(args.top);
const only = new Set(args.only.split(','));

/** One profiled step: what tf.profile saw and the unprofiled wall time. */
interface StepProfile {
  label: string;
  dispatches: number;
  kernelMs: number;
  byKernel: Map<string, { calls: number; ms: number }>;
  wallMs: number;
  tokens: number;
}

const workDir = await mkdtemp(join(tmpdir(), 'rrt-bench-profile-'));
try {
  const modelDir = await importStories260K(assets, workDir);
  const { backend, kind, reason } = await createBackend(args.backend as BackendKind);
  const model = await loadModel(modelDir, backend);
  console.log(`backend ${kind}: ${reason}`);
  const results: StepProfile[] = [];
  if (only.has('decode1')) results.push(await profileDecode(model, 1, 128));
  if (only.has('decode64')) results.push(await profileDecode(model, 64, 128));
  if (only.has('train')) results.push(await profileTrain(model, 8, 128));
  for (const result of results) print(result);
  model.dispose();
  console.log(`\nlive tensors after the steps and dispose: ${backend.numTensors()} (0 expected)`);
} finally {
  await rm(workDir, { recursive: true, force: true });
}

function print(p: StepProfile): void {
  console.log(`\n== ${p.label}`);
  console.log(
    `dispatches ${p.dispatches}, kernel time ${p.kernelMs.toFixed(2)} ms (profiled, each kernel's best round), step ${p.wallMs.toFixed(2)} ms (${args.clock} clock, unprofiled median) → ${((p.tokens / p.wallMs) * 1000).toFixed(0)} tok/s`,
  );
  const rows = [...p.byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, top);
  console.log('kernel                         calls      ms   share');
  for (const [name, { calls, ms }] of rows) {
    console.log(
      `${name.padEnd(28)} ${String(calls).padStart(7)} ${ms.toFixed(3).padStart(7)} ${((100 * ms) / p.kernelMs).toFixed(1).padStart(6)} %`,
    );
  }
}

/**
 * tf.profile of `step`, `rounds` times, summarised by kernel name. Each kernel name keeps its smallest
 * total over the rounds: tfjs times kernels by wall clock, and on a shared machine a preempted kernel
 * would otherwise count another process's time.
 */
async function profiled(
  step: () => Promise<void>,
  rounds = Number(args['profile-rounds']),
  betweenRounds: () => void = () => {},
) {
  let byKernel = new Map<string, { calls: number; ms: number }>();
  let dispatches = 0;
  for (let round = 0; round < rounds; round++) {
    if (round > 0) betweenRounds();
    const info = await tf.profile(step);
    const totals = new Map<string, { calls: number; ms: number }>();
    for (const kernel of info.kernels) {
      const ms = typeof kernel.kernelTimeMs === 'number' ? kernel.kernelTimeMs : 0;
      if (process.env['PROFILE_SHAPES'] && kernel.name === process.env['PROFILE_SHAPES'])
        console.log(kernel.name, JSON.stringify(kernel.inputShapes), ms.toFixed(2));
      const entry = totals.get(kernel.name) ?? { calls: 0, ms: 0 };
      entry.calls++;
      entry.ms += ms;
      totals.set(kernel.name, entry);
    }
    dispatches = info.kernels.length;
    if (round === 0) byKernel = totals;
    else for (const [name, entry] of totals) if (entry.ms < byKernel.get(name)!.ms) byKernel.set(name, entry);
  }
  let kernelMs = 0;
  for (const { ms } of byKernel.values()) kernelMs += ms;
  return { dispatches, kernelMs, byKernel };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Prefills `batch` rows of `context − 1` tokens, then profiles and times single-token decode steps. */
async function profileDecode(model: Decoder, batch: number, context: number): Promise<StepProfile> {
  const { backend, config } = model;
  const decodeSteps = Number(args['decode-steps']);
  const cache = createKVCache(backend, {
    depths: config.numHiddenLayers,
    capacity: context + decodeSteps + 2,
  });
  const prompt = Int32Array.from({ length: batch * (context - 1) }, (_, i) => 1 + ((i * 7919) % 500));
  await readLogits(backend, model, prompt, [batch, context - 1], cache);
  const ids = Int32Array.from({ length: batch }, (_, i) => 1 + ((i * 31) % 500));
  await readLogits(backend, model, ids, [batch, 1], cache); // warm: first decode-shaped step
  const wall: number[] = [];
  for (let i = 0; i < decodeSteps; i++) {
    const started = now();
    await readLogits(backend, model, ids, [batch, 1], cache);
    wall.push(now() - started);
  }
  cache.trim(decodeSteps + 1); // back to context − 1 cached positions: the profiled step is at ≈ context
  // Each round decodes at the same position: the token a round appends is trimmed between rounds.
  const profile = await profiled(
    () => readLogits(backend, model, ids, [batch, 1], cache),
    undefined,
    () => cache.trim(1),
  );
  cache.dispose();
  return {
    label: `decode, batch ${batch}, context ${context}`,
    ...profile,
    wallMs: median(wall),
    tokens: batch,
  };
}

async function readLogits(
  backend: Backend,
  model: Decoder,
  ids: Int32Array,
  shape: [number, number],
  cache: KVCache,
): Promise<void> {
  const input = backend.fromArray(ids, shape, 'int32');
  const { logits } = model.forward(input, { cache, lastPositionOnly: true });
  await backend.read(logits);
  backend.dispose([input, logits]);
}

/** The model's weights as trainable variables (copies), and a decoder over them. */
function trainable(model: Decoder): { decoder: Decoder; variables: Variable[] } {
  const { backend } = model;
  const variables: Variable[] = [];
  const v = (t: Tensor): Variable => {
    const variable = backend.variable(t);
    variables.push(variable);
    return variable;
  };
  const linear = (l: Linear): Linear =>
    l.bias ? { weight: v(l.weight), bias: v(l.bias) } : { weight: v(l.weight) };
  const w = model.weights;
  const layers: LayerWeights[] = w.layers.map((layer) => ({
    inputNorm: v(layer.inputNorm),
    postAttentionNorm: v(layer.postAttentionNorm),
    linears: Object.fromEntries(
      Object.entries(layer.linears).map(([name, l]) => [name, linear(l)]),
    ) as LayerWeights['linears'],
  }));
  const weights: ModelWeights = {
    embedding: v(w.embedding),
    layers,
    finalNorm: v(w.finalNorm),
    lmHead: v(w.lmHead),
    loras: new Map(),
  };
  return { decoder: new Decoder(backend, model.config, weights), variables };
}

/**
 * Mean next-token cross-entropy over `[batch, length]` ids. The targets as an int32 tensor of flat
 * indices `row·vocab + target` into the log-softmax, so no one-hot is built.
 */
function crossEntropy(backend: Backend, logits: Tensor, flatTargets: Tensor): Tensor {
  const logProbs = backend.reshape(backend.logSoftmax(logits), [-1]);
  const picked = backend.gather(logProbs, flatTargets); // [rows]
  return backend.neg(backend.mean(picked));
}

/** A training step (forward, backward, AdamW on every weight) at `batch` × `length` tokens. */
async function profileTrain(model: Decoder, batch: number, length: number): Promise<StepProfile> {
  const { backend, config } = model;
  const { decoder, variables } = trainable(model);
  const tokens = Int32Array.from({ length: batch * (length + 1) }, (_, i) => 1 + ((i * 7919) % 500));
  const inputs = new Int32Array(batch * length);
  const flatTargets = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      inputs[b * length + t] = tokens[b * (length + 1) + t]!;
      flatTargets[b * length + t] = (b * length + t) * config.vocabSize + tokens[b * (length + 1) + t + 1]!;
    }
  }
  const ids = backend.fromArray(inputs, [batch, length], 'int32');
  const targets = backend.fromArray(flatTargets, [batch * length], 'int32');
  const oneHotValues = new Float32Array(batch * length * config.vocabSize);
  for (const index of flatTargets) oneHotValues[index] = 1;
  const oneHot = backend.fromArray(oneHotValues, [batch, length, config.vocabSize]);
  const moments = variables.map((variable) => ({
    m: backend.keep(backend.fill(variable.shape, 0)),
    v: backend.keep(backend.fill(variable.shape, 0)),
  }));
  let stepIndex = 0;
  const losses: number[] = [];
  const [lr, beta1, beta2, eps, decay] = [1e-3, 0.9, 0.95, 1e-8, 0.01];
  const step = async () => {
    stepIndex++;
    const { value, grads } = backend.valueAndGrad(() => {
      const { logits } = decoder.forward(ids);
      if (args.loss === 'onehot') {
        return backend.neg(backend.mean(backend.sum(backend.mul(backend.logSoftmax(logits), oneHot), -1)));
      }
      return crossEntropy(backend, logits, targets);
    }, variables);
    const correction1 = 1 - beta1 ** stepIndex;
    const correction2 = 1 - beta2 ** stepIndex;
    for (let i = 0; i < variables.length; i++) {
      const variable = variables[i]!;
      const grad = grads[i]!;
      const moment = moments[i]!;
      const next = backend.tidy(() => {
        const m = backend.add(backend.mul(moment.m, beta1), backend.mul(grad, 1 - beta1));
        const v = backend.add(backend.mul(moment.v, beta2), backend.mul(backend.square(grad), 1 - beta2));
        const update = backend.div(
          backend.mul(m, 1 / correction1),
          backend.add(backend.sqrt(backend.mul(v, 1 / correction2)), eps),
        );
        const decayed = backend.mul(variable, 1 - lr * decay);
        return { m, v, p: backend.sub(decayed, backend.mul(update, lr)) };
      });
      backend.assign(variable, next.p);
      backend.dispose([moment.m, moment.v, next.p]);
      moment.m = next.m;
      moment.v = next.v;
    }
    losses.push((await backend.read(value))[0]!); // the loss, read back every step as a trainer would log it
    backend.dispose([value, ...grads]);
  };
  await step(); // warm-up
  const wall: number[] = [];
  for (let i = 0; i < Number(args['train-steps']); i++) {
    const started = now();
    await step();
    wall.push(now() - started);
  }
  const profile = await profiled(step, 1);
  console.log(
    `training: loss over ${losses.length} steps on the same batch ${losses.map((l) => l.toFixed(4)).join(' → ')}`,
  );
  decoder.dispose(); // its weights are the variables
  backend.dispose([ids, targets, oneHot, ...moments.flatMap((m) => [m.m, m.v])]);
  return {
    label: `training step (forward + backward + AdamW, ${args.loss} cross-entropy), batch ${batch} × ${length}`,
    ...profile,
    wallMs: median(wall),
    tokens: batch * length,
  };
}
