/** A hand-written relaxed recursive model and its float64 unrolled reference, for the decoder tests. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSafetensors } from '../src/index.js';
import { type ReferenceConfig, type ReferenceWeights, referenceTensorShapes } from './reference.js';
import { hfConfig, normalStream } from './random-model.js';

const modules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const groupOf = (module: string) =>
  ['gate_proj', 'up_proj', 'down_proj'].includes(module) ? 'mlp' : 'self_attn';

/**
 * A relaxed recursive Llama (GQA) written by hand: K stored layers looped L times (cycle), a LoRA of
 * `rank` on every module of every (loop, layer), and the same model unrolled in float64 for the reference:
 * effective layer ℓ = stored layer ℓ mod K plus (α/r)·B·A of loop ⌊ℓ/K⌋.
 */
export async function writeRelaxedModel(dir: string, seed: number) {
  const blockSize = 2;
  const loops = 3;
  const rank = 3;
  const alpha = 5;
  const reference: ReferenceConfig = {
    family: 'llama',
    vocabSize: 41,
    hiddenSize: 24,
    intermediateSize: 40,
    numHiddenLayers: blockSize * loops,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 6,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScalingFactor: 1,
    tieWordEmbeddings: true,
    biases: [],
  };
  const normal = normalStream(seed);
  const stored = new Map<string, { shape: number[]; values: Float32Array }>();
  const random = (shape: number[], scale: number, offset = 0) => {
    const values = Float32Array.from(
      { length: shape.reduce((a, b) => a * b, 1) },
      () => offset + scale * normal(),
    );
    return { shape, values };
  };
  for (const [name, shape] of referenceTensorShapes({ ...reference, numHiddenLayers: blockSize })) {
    const isNorm = name.endsWith('norm.weight');
    stored.set(name, random(shape, isNorm ? 0.1 : 1 / Math.sqrt(shape[shape.length - 1]!), isNorm ? 1 : 0));
  }
  const unrolled: ReferenceWeights = new Map();
  for (const [name, tensor] of stored) {
    if (!name.startsWith('model.layers.')) unrolled.set(name, Float64Array.from(tensor.values));
  }
  for (let depth = 0; depth < reference.numHiddenLayers; depth++) {
    const blockLayer = depth % blockSize;
    const loop = Math.floor(depth / blockSize);
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      const weight = stored.get(`model.layers.${blockLayer}.${norm}.weight`)!;
      unrolled.set(`model.layers.${depth}.${norm}.weight`, Float64Array.from(weight.values));
    }
    for (const module of modules) {
      const base = stored.get(`model.layers.${blockLayer}.${groupOf(module)}.${module}.weight`)!;
      const [outFeatures, inFeatures] = base.shape as [number, number];
      const a = random([rank, inFeatures], 0.3);
      const b = random([outFeatures, rank], 0.3);
      const prefix = `model.loras.${loop}.model.layers.${blockLayer}.${groupOf(module)}.${module}`;
      stored.set(`${prefix}.lora_A.weight`, a);
      stored.set(`${prefix}.lora_B.weight`, b);
      const merged = new Float64Array(outFeatures * inFeatures);
      for (let o = 0; o < outFeatures; o++) {
        for (let i = 0; i < inFeatures; i++) {
          let correction = 0;
          for (let r = 0; r < rank; r++)
            correction += b.values[o * rank + r]! * a.values[r * inFeatures + i]!;
          merged[o * inFeatures + i] = base.values[o * inFeatures + i]! + (alpha / rank) * correction;
        }
      }
      unrolled.set(`model.layers.${depth}.${groupOf(module)}.${module}.weight`, merged);
    }
  }
  const loraRanks = Object.fromEntries(modules.map((module) => [module, rank]));
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify(
      hfConfig(reference, {
        model_type: 'llama',
        tie_word_embeddings: true,
        recursion: {
          block_size: blockSize,
          loops,
          strategy: 'cycle',
          init: 'average',
          lora_ranks: loraRanks,
          lora_alpha: alpha,
        },
      }),
    ),
  );
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    [...stored].map(([name, tensor]) => ({
      name,
      dtype: 'F32' as const,
      shape: tensor.shape,
      bytes: new Uint8Array(tensor.values.buffer),
    })),
  );
  return { reference, unrolled, blockSize, loops };
}
