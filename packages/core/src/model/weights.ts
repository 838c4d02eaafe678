import type { Backend, StorageDType, Tensor } from '@rrt/tensor';
import { formatShape, sameShape } from '@rrt/tensor';
import { WeightError } from '../errors.js';
import { type Checkpoint, type RawTensor, toFloat32 } from '../safetensors/index.js';
import type { ModelConfig } from './config.js';
import { neoxCheckpointView } from './neox.js';
import { type LinearModule, type LoopNorm, layerSchedule, linearModules } from './recursion.js';

/**
 * A linear layer `y = x·W + b` with `W` held as `[in, out]`: the transpose of the Hugging Face `[out, in]`
 * layout, made once at load time.
 *
 * NOTE: tfjs-wasm runs only an untransposed 2-D product on its fast (XNNPACK) path; `x·Wᵀ` with the
 * checkpoint's layout measured ≈ 10× slower (bench/gemm.ts), so weights are transposed when loaded.
 */
export interface Linear {
  /** `[in, out]`. */
  weight: Tensor;
  /** `[out]`. */
  bias?: Tensor;
}

/**
 * A low-rank correction `scale · x·Aᵀ·Bᵀ` added to a linear layer, held transposed like {@link Linear}:
 * `a` is `Aᵀ: [in, rank]`, `b` is `Bᵀ: [rank, out]`.
 */
export interface LoRA {
  /** `Aᵀ: [in, rank]`. */
  a: Tensor;
  /** `Bᵀ: [rank, out]`. */
  b: Tensor;
  /** `loraAlpha / rank`. */
  scale: number;
  /** PEFT's `lora_B.bias`, `[out]`: the loop's bias correction is `scale · bias` (see `RecursionConfig.loraBias`). */
  bias?: Tensor;
}

/** A layer's linear modules: every {@link LinearModule}, but no `gate_proj` where the MLP is not gated. */
export type LayerLinears = Record<Exclude<LinearModule, 'gate_proj'>, Linear> & { gate_proj?: Linear };

/** The weights of one stored decoder layer. */
export interface LayerWeights {
  /** RMSNorm weight before attention (already `1 + w` for Gemma). */
  inputNorm: Tensor;
  /** RMSNorm weight before the feed-forward network (already `1 + w` for Gemma). */
  postAttentionNorm: Tensor;
  /** LayerNorm bias before attention (`normType: 'layer'` only). */
  inputNormBias?: Tensor;
  /** LayerNorm bias before the feed-forward network (`normType: 'layer'` only). */
  postAttentionNormBias?: Tensor;
  linears: LayerLinears;
  /** Per-head RMSNorm weight of the queries, `[headDim]` (Qwen3, Gemma 3). */
  qNorm?: Tensor;
  /** Per-head RMSNorm weight of the keys, `[headDim]` (Qwen3, Gemma 3). */
  kNorm?: Tensor;
  /** Gemma 2/3: RMSNorm weight before the feed-forward network (`postAttentionNorm` then normalises the attention output). */
  preFeedforwardNorm?: Tensor;
  /** Gemma 2/3: RMSNorm weight of the feed-forward output. */
  postFeedforwardNorm?: Tensor;
}

/** Every norm a decoder layer may have, by its Hugging Face name. */
export type LayerNormName =
  | 'input_layernorm'
  | 'post_attention_layernorm'
  | 'pre_feedforward_layernorm'
  | 'post_feedforward_layernorm'
  | 'q_norm'
  | 'k_norm';

/** The norms a layer of this config has, in file order, with the width each normalises. */
export function layerNorms(
  config: Pick<ModelConfig, 'qkNorm' | 'sandwichNorms' | 'hiddenSize' | 'headDim'>,
): { norm: LayerNormName; width: number }[] {
  const norms: { norm: LayerNormName; width: number }[] = [
    { norm: 'input_layernorm', width: config.hiddenSize },
    { norm: 'post_attention_layernorm', width: config.hiddenSize },
  ];
  if (config.sandwichNorms) {
    norms.push({ norm: 'pre_feedforward_layernorm', width: config.hiddenSize });
    norms.push({ norm: 'post_feedforward_layernorm', width: config.hiddenSize });
  }
  if (config.qkNorm) {
    norms.push({ norm: 'q_norm', width: config.headDim });
    norms.push({ norm: 'k_norm', width: config.headDim });
  }
  return norms;
}

/** Hugging Face name of a stored layer's norm weight (`model.layers.3.self_attn.q_norm.weight`). */
export function normTensorName(blockLayer: number, norm: LayerNormName): string {
  const path = norm === 'q_norm' || norm === 'k_norm' ? `self_attn.${norm}` : norm;
  return `model.layers.${blockLayer}.${path}.weight`;
}

/** Name of the per-loop copy of a norm ({@link RecursionConfig.loopNorms}). */
export function loopNormTensorName(loopIndex: number, blockLayer: number, norm: LayerNormName): string {
  return `model.loras.${loopIndex}.${normTensorName(blockLayer, norm)}`;
}

/** Per-loop norms of one (loop, stored layer), already `1 + w` for Gemma. */
export type LoopNorms = Partial<Record<LoopNorm, Tensor>>;

/** Every weight of a decoder, as backend tensors. */
export interface ModelWeights {
  /** `[vocab, hidden]`, looked up by token id. */
  embedding: Tensor;
  layers: LayerWeights[];
  finalNorm: Tensor;
  /** The final LayerNorm's bias (`normType: 'layer'` only). */
  finalNormBias?: Tensor;
  /** The output head, transposed: `[hidden, vocab]` (a transposed copy of the embedding when tied). */
  lmHead: Tensor;
  /** Per-loop LoRA of shared layers, keyed by {@link loraKey}; absent where the rank is 0. */
  loras: Map<string, Partial<Record<LinearModule, LoRA>>>;
  /** Per-loop norms of shared layers ({@link RecursionConfig.loopNorms}), keyed by {@link loraKey}. */
  loopNorms?: Map<string, LoopNorms>;
}

/** Hugging Face tensor-name prefix of a stored layer's module. */
export function moduleTensorName(blockLayer: number, module: LinearModule): string {
  const group =
    module === 'gate_proj' || module === 'up_proj' || module === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${blockLayer}.${group}.${module}`;
}

/** Tensor-name prefix of the LoRA of (loop, stored layer, module): `…lora_A.weight` and `…lora_B.weight` follow. */
export function loraTensorName(loopIndex: number, blockLayer: number, module: LinearModule): string {
  return `model.loras.${loopIndex}.${moduleTensorName(blockLayer, module)}`;
}

/** Key of {@link ModelWeights.loras}. */
export function loraKey(loopIndex: number, blockLayer: number): string {
  return `${loopIndex}.${blockLayer}`;
}

/** The linear modules a layer of this config has, attention first: no `gate_proj` without a gated MLP. */
export function configLinearModules(config: Pick<ModelConfig, 'gatedMlp'>): readonly LinearModule[] {
  return config.gatedMlp ? linearModules : linearModules.filter((module) => module !== 'gate_proj');
}

/** `[out, in]` of each linear module. */
export function linearShapes(config: ModelConfig): Record<LinearModule, [number, number]> {
  const { hiddenSize, intermediateSize, numAttentionHeads, numKeyValueHeads, headDim } = config;
  return {
    q_proj: [numAttentionHeads * headDim, hiddenSize],
    k_proj: [numKeyValueHeads * headDim, hiddenSize],
    v_proj: [numKeyValueHeads * headDim, hiddenSize],
    o_proj: [hiddenSize, numAttentionHeads * headDim],
    gate_proj: [intermediateSize, hiddenSize],
    up_proj: [intermediateSize, hiddenSize],
    down_proj: [hiddenSize, intermediateSize],
  };
}

/** Options of {@link loadWeights}. */
export interface LoadWeightsOptions {
  /**
   * Called with each checkpoint tensor that the config does not use. Such a tensor may mean the config
   * describes the model wrongly (a bias the config does not declare, say), so callers should say so.
   */
  onUnusedTensor?: (name: string) => void;
}

const storageDTypes: Record<string, StorageDType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Loads every weight the config needs from a checkpoint onto the backend, checking that each tensor
 * exists with the expected shape and a float dtype. Tensors are read one at a time. On error, whatever
 * was already uploaded is disposed.
 */
export async function loadWeights(
  backend: Backend,
  stored: Checkpoint,
  config: ModelConfig,
  options: LoadWeightsOptions = {},
): Promise<ModelWeights> {
  // GPT-NeoX's own tensor names (and its fused QKV) read as the canonical ones.
  const checkpoint = config.family === 'gpt_neox' ? neoxCheckpointView(stored, config) : stored;
  const created: Tensor[] = [];
  const used = new Set<string>();
  const load = async (
    name: string,
    shape: readonly number[],
    transform?: (values: Float32Array) => Float32Array,
  ) => {
    const raw = await readChecked(checkpoint, name, shape);
    used.add(name);
    const tensor = transform
      ? backend.fromArray(transform(toFloat32(raw)), shape)
      : backend.fromBytes(raw.bytes, storageDTypes[raw.dtype]!, shape);
    created.push(tensor);
    return tensor;
  };
  // A checkpoint's [out, in] matrix as the [in, out] tensor the forward pass multiplies by.
  const loadTransposed = async (name: string, shape: readonly [number, number]) => {
    const stored = await load(name, shape);
    const transposed = backend.transpose(stored);
    created.push(transposed);
    backend.dispose(stored);
    return transposed;
  };
  // Gemma's RMSNorm scales by (1 + w): fold the 1 in once at load time.
  const norm = (name: string, width = config.hiddenSize) =>
    load(name, [width], config.normAddOne ? (w) => w.map((value) => 1 + value) : undefined);
  const headNorm = (name: string) => norm(name, config.headDim);
  // A LayerNorm's bias sits next to its weight.
  const normBias = async (weightName: string) =>
    config.normType === 'layer'
      ? await load(weightName.replace(/weight$/, 'bias'), [config.hiddenSize])
      : undefined;
  const withBias = (bias: Tensor | undefined, key: string) => (bias ? { [key]: bias } : {});

  try {
    const shapes = linearShapes(config);
    const storedLayers = config.recursion?.storedLayers ?? config.numHiddenLayers;
    const embedding = await load('model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]);
    const layers: LayerWeights[] = [];
    for (let blockLayer = 0; blockLayer < storedLayers; blockLayer++) {
      const linears = {} as LayerLinears;
      for (const module of configLinearModules(config)) {
        const prefix = moduleTensorName(blockLayer, module);
        const [outFeatures] = shapes[module];
        const hasBias = config.biasedModules.includes(module);
        const weight = await loadTransposed(`${prefix}.weight`, shapes[module]);
        linears[module] = hasBias
          ? { weight, bias: await load(`${prefix}.bias`, [outFeatures]) }
          : { weight };
      }
      const inputNormName = normTensorName(blockLayer, 'input_layernorm');
      const postAttentionNormName = normTensorName(blockLayer, 'post_attention_layernorm');
      const layer: LayerWeights = {
        inputNorm: await norm(inputNormName),
        postAttentionNorm: await norm(postAttentionNormName),
        ...withBias(await normBias(inputNormName), 'inputNormBias'),
        ...withBias(await normBias(postAttentionNormName), 'postAttentionNormBias'),
        linears,
      };
      if (config.sandwichNorms) {
        layer.preFeedforwardNorm = await norm(normTensorName(blockLayer, 'pre_feedforward_layernorm'));
        layer.postFeedforwardNorm = await norm(normTensorName(blockLayer, 'post_feedforward_layernorm'));
      }
      if (config.qkNorm) {
        layer.qNorm = await headNorm(normTensorName(blockLayer, 'q_norm'));
        layer.kNorm = await headNorm(normTensorName(blockLayer, 'k_norm'));
      }
      layers.push(layer);
    }
    const finalNorm = await norm('model.norm.weight');
    const finalNormBias = await normBias('model.norm.weight');
    const lmHead = config.tieWordEmbeddings
      ? backend.transpose(embedding)
      : await loadTransposed('lm_head.weight', [config.vocabSize, config.hiddenSize]);
    if (config.tieWordEmbeddings) created.push(lmHead);
    const loras = await loadLoras(config, shapes, loadTransposed, load);
    const loopNorms = new Map<string, LoopNorms>();
    for (const layer of layerSchedule(config.recursion, config.numHiddenLayers)) {
      const names = config.recursion?.loopNorms ?? [];
      if (!layer.shared || names.length === 0) continue;
      const perNorm: LoopNorms = {};
      for (const name of names) {
        const width = name === 'q_norm' || name === 'k_norm' ? config.headDim : config.hiddenSize;
        perNorm[name] = await norm(loopNormTensorName(layer.loopIndex, layer.blockLayer, name), width);
      }
      loopNorms.set(loraKey(layer.loopIndex, layer.blockLayer), perNorm);
    }
    for (const name of checkpoint.entries.keys()) if (!used.has(name)) options.onUnusedTensor?.(name);
    return {
      embedding,
      layers,
      finalNorm,
      ...withBias(finalNormBias, 'finalNormBias'),
      lmHead,
      loras,
      ...(loopNorms.size > 0 ? { loopNorms } : {}),
    };
  } catch (error) {
    backend.dispose(created);
    throw error;
  }
}

async function loadLoras(
  config: ModelConfig,
  shapes: Record<LinearModule, [number, number]>,
  loadTransposed: (name: string, shape: readonly [number, number]) => Promise<Tensor>,
  load: (name: string, shape: readonly number[]) => Promise<Tensor>,
): Promise<ModelWeights['loras']> {
  const loras: ModelWeights['loras'] = new Map();
  const recursion = config.recursion;
  if (!recursion) return loras;
  for (const layer of layerSchedule(recursion, config.numHiddenLayers)) {
    if (!layer.shared) continue;
    const perModule: Partial<Record<LinearModule, LoRA>> = {};
    for (const module of configLinearModules(config)) {
      const rank = recursion.loraRanks[module];
      if (rank === 0) continue;
      const [outFeatures, inFeatures] = shapes[module];
      const prefix = loraTensorName(layer.loopIndex, layer.blockLayer, module);
      perModule[module] = {
        a: await loadTransposed(`${prefix}.lora_A.weight`, [rank, inFeatures]),
        b: await loadTransposed(`${prefix}.lora_B.weight`, [outFeatures, rank]),
        scale: recursion.loraAlpha / rank,
        ...(recursion.loraBias ? { bias: await load(`${prefix}.lora_B.bias`, [outFeatures]) } : {}),
      };
    }
    loras.set(loraKey(layer.loopIndex, layer.blockLayer), perModule);
  }
  return loras;
}

async function readChecked(
  checkpoint: Checkpoint,
  name: string,
  shape: readonly number[],
): Promise<RawTensor> {
  const info = checkpoint.entries.get(name);
  if (!info) {
    const where = checkpoint.indexFile ?? checkpoint.shards[0]?.path ?? checkpoint.path;
    throw new WeightError(where, name, 'is missing: the config needs it');
  }
  // A renaming view (GPT-NeoX's) keeps the stored name in info.name: errors name what is in the file.
  const stored = info.name === name ? name : `${info.name} (read as ${name})`;
  if (!sameShape(info.shape, shape)) {
    throw new WeightError(
      info.file,
      stored,
      `has shape ${formatShape(info.shape)}, expected ${formatShape(shape)}`,
    );
  }
  if (!(info.dtype in storageDTypes)) {
    throw new WeightError(info.file, stored, `has dtype ${info.dtype}, expected F32, F16 or BF16`);
  }
  return checkpoint.readTensor(name);
}

/** Frees every tensor of a model's weights. */
export function disposeWeights(backend: Backend, weights: ModelWeights): void {
  const tensors = new Set<Tensor>([weights.embedding, weights.finalNorm, weights.lmHead]);
  if (weights.finalNormBias) tensors.add(weights.finalNormBias);
  for (const layer of weights.layers) {
    tensors.add(layer.inputNorm);
    tensors.add(layer.postAttentionNorm);
    if (layer.inputNormBias) tensors.add(layer.inputNormBias);
    if (layer.postAttentionNormBias) tensors.add(layer.postAttentionNormBias);
    for (const extra of [layer.qNorm, layer.kNorm, layer.preFeedforwardNorm, layer.postFeedforwardNorm]) {
      if (extra) tensors.add(extra);
    }
    for (const linear of Object.values(layer.linears)) {
      tensors.add(linear.weight);
      if (linear.bias) tensors.add(linear.bias);
    }
  }
  for (const perNorm of weights.loopNorms?.values() ?? []) {
    for (const tensor of Object.values(perNorm)) tensors.add(tensor);
  }
  for (const perModule of weights.loras.values()) {
    for (const lora of Object.values(perModule)) {
      tensors.add(lora.a);
      tensors.add(lora.b);
      if (lora.bias) tensors.add(lora.bias);
    }
  }
  backend.dispose([...tensors]);
}
