/**
 * What a model costs: parameters by group, bytes by dtype, FLOPs and KV-cache bytes per token, the same
 * way for original, recursive and relaxed models (all three are described by their `config.json`).
 *
 * @module
 */
import {
  type LinearModule,
  layerSchedule,
  linearModules,
  linearShapes,
  type ModelConfig,
  SAFETENSORS_DTYPE_BYTES,
  type SafetensorsDType,
} from '@rrt/core';

/** Parameters of a model, by group. */
export interface ParameterGroups {
  /** The token embedding `[vocab, hidden]`. */
  embedding: number;
  /** Linear weights and biases of the stored layers that run at more than one depth (the looped block). */
  sharedBlock: number;
  /**
   * Linear weights and biases of the stored layers that run once: every layer of an original model,
   * the first and last layers of a middle-cycle one.
   */
  uniqueLayers: number;
  /** Per-loop LoRA factors (`A` and `B`). */
  lora: number;
  /** Every RMSNorm weight: two per stored layer and the final one. */
  norms: number;
  /** An untied output head `[vocab, hidden]`; 0 when the head is the embedding. */
  head: number;
}

/** Parameter counts: the groups, their sum, and the sum without embedding and head. */
export interface ParameterCounts extends ParameterGroups {
  total: number;
  /** `total − embedding − head`: the count the paper compares models by. */
  nonEmbedding: number;
}

/**
 * Forward FLOPs per token (a multiply-add counts 2), for one token attending to `context` keys. Bias
 * adds, norms, RoPE, activations and softmax are left out (O(hidden) per layer, not O(hidden²)).
 */
export interface FlopsPerToken {
  /** The decoder layers' linear projections, at every effective depth (a shared layer counts per loop). */
  layers: number;
  /** The LoRA corrections: `2·rank·(in + out)` per module and depth that has one. */
  lora: number;
  /** The output head, `2·hidden·vocab` (tied or not). */
  head: number;
  /** Attention scores and mixing, `4·heads·headDim` per effective layer and attended key. */
  attentionPerKey: number;
  /** The number of keys the token attends to in `total`. */
  context: number;
  /** `layers + lora + head + attentionPerKey · context`. */
  total: number;
}

/** The cost of a model described by its config. */
export interface ModelCost {
  /** Stored decoder layers (K, K + 2 for middle-cycle, N for an original model). */
  storedLayers: number;
  /** Effective layers N: depths a token passes through. */
  effectiveLayers: number;
  parameters: ParameterCounts;
  flopsPerToken: FlopsPerToken;
  /**
   * KV-cache bytes per token: `2 (K, V) · N · kvHeads · headDim · bytesPerValue`. Recursion does not
   * change it: every effective depth keeps its own keys and values.
   */
  kvBytesPerToken: number;
}

/** Options of {@link modelCost}. */
export interface ModelCostOptions {
  /** Keys a token attends to, for {@link FlopsPerToken.total}; default `max_position_embeddings`. */
  context?: number;
  /** Bytes per cached value; default 4 (the tfjs backends cache float32). */
  kvBytesPerValue?: number;
}

/**
 * The cost of the model `config` describes, counted from the config alone (no weights needed).
 *
 * @example
 * ```ts
 * const cost = modelCost(await readConfig('models/stories260K-1x5'));
 * console.log(cost.parameters.nonEmbedding, cost.flopsPerToken.total, cost.kvBytesPerToken);
 * ```
 */
export function modelCost(config: ModelConfig, options: ModelCostOptions = {}): ModelCost {
  const shapes = linearShapes(config);
  const schedule = layerSchedule(config.recursion, config.numHiddenLayers);
  const storedLayers = config.recursion?.storedLayers ?? config.numHiddenLayers;
  const linearWeights = linearModules.reduce((sum, module) => sum + moduleWeights(shapes, module), 0);
  const layerParameters = linearWeights + config.biasedModules.reduce((sum, m) => sum + shapes[m][0], 0);
  const sharedLayers = new Set(schedule.filter((layer) => layer.shared).map((layer) => layer.blockLayer));

  // One LoRA per (loop, stored layer) of the shared layers, as the checkpoint stores them.
  const loraPerDepth = linearModules.reduce((sum, module) => {
    const rank = config.recursion?.loraRanks[module] ?? 0;
    const [out, inFeatures] = shapes[module];
    return sum + rank * (inFeatures + out);
  }, 0);
  const loraDepths = schedule.filter((layer) => layer.shared).length;

  const embedding = config.vocabSize * config.hiddenSize;
  const groups: ParameterGroups = {
    embedding,
    sharedBlock: sharedLayers.size * layerParameters,
    uniqueLayers: (storedLayers - sharedLayers.size) * layerParameters,
    lora: loraDepths * loraPerDepth,
    norms: (2 * storedLayers + 1) * config.hiddenSize,
    head: config.tieWordEmbeddings ? 0 : embedding,
  };
  const total = Object.values(groups).reduce((sum, count) => sum + count, 0);

  const context = options.context ?? config.maxPositionEmbeddings;
  const flops = {
    layers: 2 * schedule.length * linearWeights,
    lora: 2 * loraDepths * loraPerDepth,
    head: 2 * config.hiddenSize * config.vocabSize,
    attentionPerKey: 4 * schedule.length * config.numAttentionHeads * config.headDim,
    context,
  };
  return {
    storedLayers,
    effectiveLayers: schedule.length,
    parameters: { ...groups, total, nonEmbedding: total - groups.embedding - groups.head },
    flopsPerToken: {
      ...flops,
      total: flops.layers + flops.lora + flops.head + flops.attentionPerKey * context,
    },
    kvBytesPerToken:
      2 * schedule.length * config.numKeyValueHeads * config.headDim * (options.kvBytesPerValue ?? 4),
  };
}

function moduleWeights(shapes: Record<LinearModule, [number, number]>, module: LinearModule): number {
  const [out, inFeatures] = shapes[module];
  return out * inFeatures;
}

/** A checkpoint tensor as its header describes it (a `CheckpointTensorInfo` of `@rrt/core` fits). */
export interface TensorHeader {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
}

/** Tensors, parameters and bytes of one dtype or one group. */
export interface StorageTally {
  tensors: number;
  parameters: number;
  bytes: number;
}

/** What a checkpoint stores, from its tensor headers. */
export interface CheckpointStorage {
  /** By safetensors dtype (`F32`, `BF16`, ...). */
  byDtype: Record<string, StorageTally>;
  /** By {@link ParameterGroups} group (see {@link tensorGroup}). */
  byGroup: Record<keyof ParameterGroups, StorageTally>;
  total: StorageTally;
}

/**
 * The group of a checkpoint tensor, by its Hugging Face name: `model.loras.*` → `lora`, norms → `norms`,
 * a stored layer's projections → `sharedBlock` or `uniqueLayers` by whether `config`'s schedule runs it
 * at more than one depth; `undefined` for a name the decoder does not load.
 */
export function tensorGroup(name: string, config: ModelConfig): keyof ParameterGroups | undefined {
  if (name.startsWith('model.loras.')) return 'lora';
  if (name === 'model.embed_tokens.weight') return 'embedding';
  if (name === 'lm_head.weight') return config.tieWordEmbeddings ? undefined : 'head';
  if (name === 'model.norm.weight' || /^model\.layers\.\d+\.\w+_layernorm\.weight$/.test(name))
    return 'norms';
  const layer = /^model\.layers\.(\d+)\.(self_attn|mlp)\./.exec(name);
  if (!layer) return undefined;
  const blockLayer = Number(layer[1]);
  const shared = layerSchedule(config.recursion, config.numHiddenLayers).some(
    (entry) => entry.blockLayer === blockLayer && entry.shared,
  );
  return shared ? 'sharedBlock' : 'uniqueLayers';
}

/**
 * Tallies a checkpoint's tensor headers by dtype and by group. Tensors the decoder does not load (see
 * {@link tensorGroup}) count in `byDtype` and `total` but in no group.
 *
 * @example
 * ```ts
 * const checkpoint = await openCheckpoint('models/stories260K');
 * const storage = checkpointStorage(checkpoint.entries.entries(), config);
 * await checkpoint.close();
 * ```
 */
export function checkpointStorage(
  tensors: Iterable<readonly [string, TensorHeader]>,
  config: ModelConfig,
): CheckpointStorage {
  const empty = (): StorageTally => ({ tensors: 0, parameters: 0, bytes: 0 });
  const byGroup: Record<keyof ParameterGroups, StorageTally> = {
    embedding: empty(),
    sharedBlock: empty(),
    uniqueLayers: empty(),
    lora: empty(),
    norms: empty(),
    head: empty(),
  };
  const byDtype: Record<string, StorageTally> = {};
  const total = empty();
  for (const [name, header] of tensors) {
    const parameters = header.shape.reduce((a, b) => a * b, 1);
    const bytes = parameters * SAFETENSORS_DTYPE_BYTES[header.dtype];
    const group = tensorGroup(name, config);
    byDtype[header.dtype] ??= empty();
    for (const tally of [total, byDtype[header.dtype]!, ...(group ? [byGroup[group]] : [])]) {
      tally.tensors++;
      tally.parameters += parameters;
      tally.bytes += bytes;
    }
  }
  return { byDtype, byGroup, total };
}
