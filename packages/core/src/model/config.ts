import { ConfigError } from '../errors.js';
import { type LinearModule, layerSchedule, type RecursionConfig, resolveRecursion } from './recursion.js';
import type { RopeScaling } from './rope.js';

/**
 * Architecture families that the decoder implements; `model_type` values map onto these (`llama`:
 * llama, mistral, qwen2, qwen3; `gemma`: gemma, gemma2, gemma3_text; `gpt_neox`: gpt_neox). Finer
 * differences are config fields.
 */
export type ModelFamily = 'llama' | 'gemma' | 'gpt_neox';

/** Activation of the feed-forward network (of its gate, when it is gated). */
export type HiddenActivation = 'silu' | 'gelu_tanh' | 'gelu';

/** The norm of the residual stream: RMSNorm (weight only) or LayerNorm (mean removed; weight and bias). */
export type NormType = 'rms' | 'layer';

/**
 * A decoder's configuration, resolved from a Hugging Face `config.json`: field names follow the HF ones in
 * camelCase, every derived field is filled in once by {@link resolveConfig}.
 */
export interface ModelConfig {
  /**
   * The plain architecture's `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`, `gemma`, `gemma2`,
   * `gemma3_text`): as written in
   * `config.json`, or, for a recursive model written as `rrt_llama`, the base type `llama`.
   */
  modelType: string;
  /** Which forward pass runs it. */
  family: ModelFamily;
  /** Number of token ids. */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Width of the gated feed-forward network. */
  intermediateSize: number;
  /** Number of effective layers N; a recursive model stores fewer (see {@link ModelConfig.recursion}). */
  numHiddenLayers: number;
  /** Query heads. */
  numAttentionHeads: number;
  /** Key/value heads (fewer than query heads: grouped-query attention; one: multi-query). */
  numKeyValueHeads: number;
  /** Per-head dimension; Gemma sets it independently of `hiddenSize / numAttentionHeads`. */
  headDim: number;
  /** Epsilon of the norms: `rms_norm_eps`, or `layer_norm_eps` where {@link ModelConfig.normType} is `layer`. */
  rmsNormEps: number;
  /** RoPE base θ. */
  ropeTheta: number;
  /** How RoPE frequencies are scaled (`rope_scaling`): none, linear, or Llama 3's. */
  ropeScaling: RopeScaling;
  /** Positions the RoPE tables cover, and the longest sequence the model runs. */
  maxPositionEmbeddings: number;
  /** The output head reuses the embedding matrix. */
  tieWordEmbeddings: boolean;
  /**
   * Linear modules that carry a bias: q, k, v for Qwen2; q, k, v, o for Llama-family `attention_bias`;
   * gate, up, down for `mlp_bias`.
   */
  biasedModules: readonly LinearModule[];
  /** Activation of the feed-forward gate. */
  hiddenAct: HiddenActivation;
  /** RMSNorm multiplies by `1 + weight` (Gemma) rather than `weight`. */
  normAddOne: boolean;
  /** Embeddings are multiplied by this (Gemma: √hiddenSize; others 1). */
  embeddingScale: number;
  /** Beginning-of-sequence token id, when the config names one. */
  bosTokenId: number | undefined;
  /** Token ids that end generation. */
  eosTokenIds: number[];
  /** Present for recursive and relaxed models: how the stored block is looped. */
  recursion: RecursionConfig | undefined;
  /** RMSNorm, or LayerNorm with a bias (GPT-NeoX). */
  normType: NormType;
  /**
   * Attention and feed-forward read the same layer input and add to it together,
   * `x + attn(ln₁(x)) + mlp(ln₂(x))` (GPT-NeoX `use_parallel_residual`), rather than one after the other.
   */
  parallelResidual: boolean;
  /**
   * Leading dimensions of each query/key head that RoPE rotates (rotate-half within them); the rest pass
   * through. `headDim` except for GPT-NeoX, `⌊headDim · rotary_pct⌋`.
   */
  rotaryDim: number;
  /** The feed-forward network is gated, `down(act(gate(x)) · up(x))`; else `down(act(up(x)))` (GPT-NeoX). */
  gatedMlp: boolean;
  /**
   * Per-head RMSNorm of queries and keys after their projections, before RoPE (Qwen3, Gemma 3:
   * `self_attn.q_norm`, `self_attn.k_norm`, weight `[headDim]`).
   */
  qkNorm: boolean;
  /**
   * Gemma 2/3's four norms per layer: `post_attention_layernorm` normalises the attention output (not the
   * feed-forward input), `pre_feedforward_layernorm` and `post_feedforward_layernorm` surround the MLP.
   */
  sandwichNorms: boolean;
  /** Multiplies every query·key product: `1/√headDim`, or Gemma 2/3's `query_pre_attn_scalar^−½`. */
  attentionScale: number;
  /** Gemma 2's `attn_logit_softcapping`: scores become `cap·tanh(scores/cap)` before the mask; or none. */
  attentionSoftCap: number | undefined;
  /** Gemma 2's `final_logit_softcapping`: logits become `cap·tanh(logits/cap)`; or none. */
  finalSoftCap: number | undefined;
  /**
   * Sliding window of each effective layer (`numHiddenLayers` entries): a query at position p sees the
   * keys j with `p − window < j ≤ p` (Hugging Face's `kv_idx > q_idx − sliding_window`); `undefined`:
   * full causal attention.
   */
  layerWindows: readonly (number | undefined)[];
  /**
   * RoPE base of the sliding (local) layers when it differs from {@link ModelConfig.ropeTheta} (Gemma 3's
   * `rope_local_base_freq`); local layers run it unscaled. `undefined`: every layer uses `ropeTheta`.
   */
  localRopeTheta: number | undefined;
}

const familyByModelType: Record<string, ModelFamily> = {
  llama: 'llama',
  mistral: 'llama',
  qwen2: 'llama',
  qwen3: 'llama',
  gemma: 'gemma',
  gpt_neox: 'gpt_neox',
  gemma2: 'gemma',
  gemma3_text: 'gemma',
};

/** `model_type` values the decoder supports. */
export const supportedModelTypes: readonly string[] = Object.keys(familyByModelType);

/**
 * Prefix of the `model_type` of recursive and relaxed models (`rrt_llama`, ...).
 *
 * NOTE: a converted checkpoint stores only the shared block and the LoRA, so it must not claim to be the
 * plain architecture: Hugging Face transformers would load it as one, with random weights for the layers
 * it lacks and only a warning. An unknown `model_type` makes every other engine refuse it outright.
 */
export const recursiveModelTypePrefix = 'rrt_';

/**
 * The `config.json` of a recursive or relaxed conversion of the plain model `raw`: its own model type and
 * architecture name, the base ones kept in the `recursion` section for {@link unrolledModelConfig}.
 *
 * @example
 * ```ts
 * recursiveModelConfig({ model_type: 'llama', architectures: ['LlamaForCausalLM'] }, { loops: 2 }, true);
 * // { model_type: 'rrt_llama', architectures: ['RelaxedRecursiveLlamaForCausalLM'], recursion: {...} }
 * ```
 */
export function recursiveModelConfig(
  raw: Record<string, unknown>,
  recursion: Record<string, unknown>,
  relaxed: boolean,
): Record<string, unknown> {
  const baseType = String(raw.model_type);
  const baseArchitectures = Array.isArray(raw.architectures) ? raw.architectures : [];
  const kind = relaxed ? 'RelaxedRecursive' : 'Recursive';
  return {
    ...raw,
    model_type: `${recursiveModelTypePrefix}${baseType}`,
    architectures: baseArchitectures.map((name) => `${kind}${String(name)}`),
    recursion: { ...recursion, base_model_type: baseType, base_architectures: baseArchitectures },
  };
}

/**
 * The plain model's `config.json` for a recursive one's `raw` (after `export --unroll`): the base model
 * type and architectures back, the `recursion` section gone. Older conversions that kept the base
 * model type are returned without their section.
 */
export function unrolledModelConfig(raw: Record<string, unknown>): Record<string, unknown> {
  const { recursion, ...rest } = raw;
  const section = (recursion ?? {}) as Record<string, unknown>;
  const plain: Record<string, unknown> = { ...rest };
  if (typeof section.base_model_type === 'string') plain.model_type = section.base_model_type;
  if (Array.isArray(section.base_architectures)) plain.architectures = section.base_architectures;
  return plain;
}

/** Keys of `config.json` that are read; others are reported by {@link resolveConfig} as ignored. */
const knownKeys = new Set([
  'model_type',
  'architectures',
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'rms_norm_eps',
  'rope_theta',
  'rope_scaling',
  'max_position_embeddings',
  'tie_word_embeddings',
  'attention_bias',
  'hidden_act',
  'hidden_activation',
  'bos_token_id',
  'eos_token_id',
  'recursion',
  'torch_dtype',
  'transformers_version',
  'use_cache',
  'pad_token_id',
  'initializer_range',
  'attention_dropout',
  'mlp_bias',
  'pretraining_tp',
  'sliding_window',
  'use_sliding_window',
  'max_window_layers',
  // GPT-NeoX
  'layer_norm_eps',
  'use_parallel_residual',
  'rotary_pct',
  'rotary_emb_base',
  'partial_rotary_factor',
  'hidden_dropout',
  'classifier_dropout',
  'layer_types',
  'query_pre_attn_scalar',
  'attn_logit_softcapping',
  'final_logit_softcapping',
  'sliding_window_pattern',
  'rope_local_base_freq',
]);

function biasedModules(fields: Record<string, unknown>, file: string, modelType: string): LinearModule[] {
  const modules: LinearModule[] = [];
  // Qwen2 biases q, k and v and has no attention_bias key; HF's Llama, Mistral and Gemma bias all four
  // attention projections when attention_bias is set, and the three MLP ones when mlp_bias is.
  if (modelType === 'qwen2') modules.push('q_proj', 'k_proj', 'v_proj');
  else if (booleanField(fields, 'attention_bias', file, false))
    modules.push('q_proj', 'k_proj', 'v_proj', 'o_proj');
  if (booleanField(fields, 'mlp_bias', file, false)) modules.push('gate_proj', 'up_proj', 'down_proj');
  return modules;
}

/** Layer types of `layer_types`, `sliding_window_pattern` and friends. */
type LayerType = 'full_attention' | 'sliding_attention';

/**
 * The sliding window of every layer, as Hugging Face's configs define it:
 * - a `layer_types` list, where the config has one, says which layers slide (any family);
 * - Mistral: every layer slides when `sliding_window` is set;
 * - Qwen2/3: layers with index ≥ `max_window_layers` slide when `use_sliding_window` is true;
 * - Gemma 2: even layers slide (`(i + 1) % 2 ≠ 0`); Gemma 3: all but every `sliding_window_pattern`-th
 *   (default 6: five local, one global).
 * Gemma 1 and Llama have no window.
 */
function layerWindows(
  fields: Record<string, unknown>,
  file: string,
  modelType: string,
  layers: number,
): (number | undefined)[] {
  const raw = fields.sliding_window;
  const uses = modelType === 'qwen2' || modelType === 'qwen3' ? fields.use_sliding_window === true : true;
  const window = raw === undefined || raw === null || !uses ? undefined : raw;
  if (window !== undefined && (typeof window !== 'number' || !Number.isInteger(window) || window <= 0)) {
    throw new ConfigError(
      file,
      'sliding_window',
      `a positive integer or null (got ${JSON.stringify(window)})`,
    );
  }
  let types: LayerType[];
  if (fields.layer_types !== undefined && fields.layer_types !== null) {
    const list = fields.layer_types;
    if (
      !Array.isArray(list) ||
      list.length !== layers ||
      !list.every((type) => type === 'full_attention' || type === 'sliding_attention')
    ) {
      throw new ConfigError(
        file,
        'layer_types',
        `${layers} entries (num_hidden_layers), each "full_attention" or "sliding_attention"`,
      );
    }
    types = list as LayerType[];
  } else if (modelType === 'gemma2') {
    types = Array.from({ length: layers }, (_, i) =>
      (i + 1) % 2 !== 0 ? 'sliding_attention' : 'full_attention',
    );
  } else if (modelType === 'gemma3_text') {
    const pattern = positiveInt(fields, 'sliding_window_pattern', file, 6);
    types = Array.from({ length: layers }, (_, i) =>
      (i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention',
    );
  } else if (modelType === 'qwen2' || modelType === 'qwen3') {
    // Qwen2Config and Qwen3Config default max_window_layers to 28.
    const from = fields.max_window_layers ?? 28;
    if (typeof from !== 'number' || !Number.isInteger(from) || from < 0) {
      throw new ConfigError(
        file,
        'max_window_layers',
        `a non-negative integer (got ${JSON.stringify(from)})`,
      );
    }
    types = Array.from({ length: layers }, (_, i) => (i >= from ? 'sliding_attention' : 'full_attention'));
  } else if (modelType === 'mistral') {
    types = new Array<LayerType>(layers).fill('sliding_attention');
  } else {
    types = new Array<LayerType>(layers).fill('full_attention');
  }
  if (window === undefined) {
    if (fields.layer_types !== undefined && types.includes('sliding_attention') && uses) {
      throw new ConfigError(file, 'sliding_window', 'a positive integer: layer_types has sliding layers');
    }
    return new Array<number | undefined>(layers).fill(undefined);
  }
  return types.map((type) => (type === 'sliding_attention' ? window : undefined));
}

function optionalPositive(fields: Record<string, unknown>, key: string, file: string): number | undefined {
  const value = fields[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !(value > 0)) {
    throw new ConfigError(file, key, `a positive number or null (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** Result of {@link resolveConfig}. */
export interface ResolvedConfig {
  config: ModelConfig;
  /** Keys of the raw config that were not understood (the forward pass does not read them). */
  ignoredKeys: string[];
}

/**
 * Resolves a parsed `config.json` into a {@link ModelConfig}. Every required field is checked; a bad or
 * missing one raises a {@link ConfigError} naming `file` and the field.
 *
 * @example
 * ```ts
 * const { config } = resolveConfig(JSON.parse(text), 'model/config.json');
 * ```
 */
export function resolveConfig(raw: unknown, file: string): ResolvedConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, '(root)', 'a JSON object');
  }
  const fields = raw as Record<string, unknown>;
  const writtenType = stringField(fields, 'model_type', file);
  const modelType = writtenType.startsWith(recursiveModelTypePrefix)
    ? baseModelType(fields, writtenType, file)
    : writtenType;
  const family = familyByModelType[modelType];
  if (!family) {
    throw new ConfigError(
      file,
      'model_type',
      `one of ${supportedModelTypes.join(', ')} (got "${modelType}")`,
    );
  }
  if (family === 'gpt_neox') return resolveNeoxConfig(fields, file);
  const isGemma = family === 'gemma';
  const isGemma2 = modelType === 'gemma2';
  const isGemma3 = modelType === 'gemma3_text';
  // Hugging Face's defaults where config.json leaves a field out (Gemma2Config, Gemma3TextConfig).
  const defaults: Record<string, unknown> =
    modelType === 'mistral'
      ? { sliding_window: 4096 } // MistralConfig's default (v0.1's window); later configs write null
      : isGemma2 || isGemma3
        ? {
            query_pre_attn_scalar: 256,
            sliding_window: 4096,
            ...(isGemma2 ? { attn_logit_softcapping: 50, final_logit_softcapping: 30 } : {}),
            ...(isGemma3 ? { rope_theta: 1_000_000, rope_local_base_freq: 10_000 } : {}),
          }
        : {};
  const withDefaults = { ...defaults, ...fields };
  const hiddenSize = positiveInt(fields, 'hidden_size', file);
  const numAttentionHeads = positiveInt(fields, 'num_attention_heads', file);
  const numKeyValueHeads = positiveInt(fields, 'num_key_value_heads', file, numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new ConfigError(
      file,
      'num_key_value_heads',
      `a divisor of num_attention_heads ${numAttentionHeads} (got ${numKeyValueHeads})`,
    );
  }
  const headDim = positiveInt(fields, 'head_dim', file, hiddenSize / numAttentionHeads);
  if (headDim % 2 !== 0) throw new ConfigError(file, 'head_dim', `an even number for RoPE (got ${headDim})`);
  const numHiddenLayers = positiveInt(fields, 'num_hidden_layers', file);

  const config: ModelConfig = {
    modelType,
    family,
    vocabSize: positiveInt(fields, 'vocab_size', file),
    hiddenSize,
    intermediateSize: positiveInt(fields, 'intermediate_size', file),
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: positiveNumber(fields, 'rms_norm_eps', file, 1e-6),
    ropeTheta: positiveNumber(withDefaults, 'rope_theta', file, 10000),
    ropeScaling: ropeScaling(fields.rope_scaling, file),
    maxPositionEmbeddings: positiveInt(fields, 'max_position_embeddings', file, 2048),
    tieWordEmbeddings: booleanField(fields, 'tie_word_embeddings', file, isGemma),
    biasedModules: biasedModules(fields, file, modelType),
    hiddenAct: activation(fields, file, isGemma),
    normAddOne: isGemma,
    embeddingScale: isGemma ? Math.fround(Math.sqrt(hiddenSize)) : 1,
    bosTokenId: optionalInt(fields, 'bos_token_id', file),
    eosTokenIds: tokenIds(fields.eos_token_id, file),
    recursion:
      fields.recursion === undefined ? undefined : resolveRecursion(fields.recursion, numHiddenLayers, file),
    qkNorm: modelType === 'qwen3' || isGemma3,
    sandwichNorms: isGemma2 || isGemma3,
    attentionScale:
      isGemma2 || isGemma3
        ? positiveNumber(withDefaults, 'query_pre_attn_scalar', file, 256) ** -0.5
        : 1 / Math.sqrt(headDim),
    attentionSoftCap: optionalPositive(withDefaults, 'attn_logit_softcapping', file),
    finalSoftCap: optionalPositive(withDefaults, 'final_logit_softcapping', file),
    layerWindows: layerWindows(withDefaults, file, modelType, numHiddenLayers),
    localRopeTheta: isGemma3 ? positiveNumber(withDefaults, 'rope_local_base_freq', file, 10_000) : undefined,
    normType: 'rms',
    parallelResidual: false,
    rotaryDim: headDim,
    gatedMlp: true,
  };
  if (config.recursion) checkLoopsRepeatLayerTypes(config, config.recursion, file);
  const ignoredKeys = Object.keys(fields).filter((key) => !knownKeys.has(key));
  return { config, ignoredKeys };
}

/**
 * GPT-NeoX / Pythia (`gpt_neox`), following Hugging Face's `GPTNeoXConfig` defaults: LayerNorms with a
 * bias (`layer_norm_eps`), parallel residual unless `use_parallel_residual` is false, RoPE on the first
 * `⌊headDim · rotary_pct⌋` dimensions of each head with base `rotary_emb_base`, biases on every
 * projection (`attention_bias`, default true, for the fused QKV and `dense`; the MLP's always), a
 * non-gated MLP with exact GELU, an untied `embed_out` head, and no grouped-query attention.
 */
function resolveNeoxConfig(fields: Record<string, unknown>, file: string): ResolvedConfig {
  const hiddenSize = positiveInt(fields, 'hidden_size', file);
  const numAttentionHeads = positiveInt(fields, 'num_attention_heads', file);
  if (hiddenSize % numAttentionHeads !== 0) {
    throw new ConfigError(
      file,
      'num_attention_heads',
      `a divisor of hidden_size ${hiddenSize} (got ${numAttentionHeads})`,
    );
  }
  const headDim = hiddenSize / numAttentionHeads;
  // Newer transformers also write partial_rotary_factor and rope_theta (copies of these two).
  const rotaryPct = fields.rotary_pct ?? fields.partial_rotary_factor ?? 0.25;
  if (typeof rotaryPct !== 'number' || !(rotaryPct > 0 && rotaryPct <= 1)) {
    throw new ConfigError(
      file,
      'rotary_pct',
      `a number in (0, 1] (got ${JSON.stringify(fields.rotary_pct)})`,
    );
  }
  // HF: rotary_ndims = int(head_size * rotary_pct); rotate-half needs it even.
  const rotaryDim = Math.floor(headDim * rotaryPct);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw new ConfigError(
      file,
      'rotary_pct',
      `a share of head_dim ${headDim} that rotates an even number ≥ 2 of dimensions (got ${rotaryPct}: ${rotaryDim})`,
    );
  }
  const act = fields.hidden_act ?? 'gelu';
  if (act !== 'gelu') {
    throw new ConfigError(file, 'hidden_act', `"gelu" for gpt_neox (got ${JSON.stringify(act)})`);
  }
  const numHiddenLayers = positiveInt(fields, 'num_hidden_layers', file);
  const attentionBias = booleanField(fields, 'attention_bias', file, true);
  const config: ModelConfig = {
    modelType: 'gpt_neox',
    family: 'gpt_neox',
    vocabSize: positiveInt(fields, 'vocab_size', file),
    hiddenSize,
    intermediateSize: positiveInt(fields, 'intermediate_size', file),
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads: numAttentionHeads,
    headDim,
    rmsNormEps: positiveNumber(fields, 'layer_norm_eps', file, 1e-5),
    ropeTheta: positiveNumber(
      fields,
      'rotary_emb_base',
      file,
      positiveNumber(fields, 'rope_theta', file, 10000),
    ),
    ropeScaling: ropeScaling(fields.rope_scaling, file),
    maxPositionEmbeddings: positiveInt(fields, 'max_position_embeddings', file, 2048),
    tieWordEmbeddings: booleanField(fields, 'tie_word_embeddings', file, false),
    biasedModules: [
      ...(attentionBias ? (['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const) : []),
      'up_proj',
      'down_proj',
    ],
    hiddenAct: 'gelu',
    normAddOne: false,
    embeddingScale: 1,
    bosTokenId: optionalInt(fields, 'bos_token_id', file),
    eosTokenIds: tokenIds(fields.eos_token_id, file),
    recursion:
      fields.recursion === undefined ? undefined : resolveRecursion(fields.recursion, numHiddenLayers, file),
    normType: 'layer',
    parallelResidual: booleanField(fields, 'use_parallel_residual', file, true),
    rotaryDim,
    gatedMlp: false,
    qkNorm: false,
    sandwichNorms: false,
    attentionScale: 1 / Math.sqrt(headDim),
    attentionSoftCap: undefined,
    finalSoftCap: undefined,
    // GPTNeoXConfig has no sliding window.
    layerWindows: new Array<number | undefined>(numHiddenLayers).fill(undefined),
    localRopeTheta: undefined,
  };
  if (config.recursion) checkLoopsRepeatLayerTypes(config, config.recursion, file);
  const ignoredKeys = Object.keys(fields).filter((key) => !knownKeys.has(key));
  return { config, ignoredKeys };
}

/**
 * Checks that a recursive model loops its block's layer types: every effective depth that runs a stored
 * layer must have that layer's window, else a {@link ConfigError} on `recursion.block_size`. A schedule that breaks the pattern (K odd for Gemma 2's alternating layers,
 * say) is refused rather than run with windows its shared weights were not made for.
 */
export function checkLoopsRepeatLayerTypes(
  config: Pick<ModelConfig, 'layerWindows' | 'numHiddenLayers'>,
  recursion: RecursionConfig,
  file: string,
): void {
  const firstDepth = new Map<number, number>();
  for (const { depth, blockLayer } of layerSchedule(recursion, config.numHiddenLayers)) {
    const first = firstDepth.get(blockLayer);
    if (first === undefined) firstDepth.set(blockLayer, depth);
    else if (config.layerWindows[first] !== config.layerWindows[depth]) {
      const describe = (window: number | undefined) => (window === undefined ? 'full' : `sliding ${window}`);
      throw new ConfigError(
        file,
        'recursion.block_size',
        `a block size whose loops repeat the layer types (depths ${first}, ${describe(config.layerWindows[first])}, ` +
          `and ${depth}, ${describe(config.layerWindows[depth])}, both run stored layer ${blockLayer})`,
      );
    }
  }
}

/** The plain model type under a recursive one (`rrt_llama` → `llama`). */
function baseModelType(fields: Record<string, unknown>, writtenType: string, file: string): string {
  const section = fields.recursion as Record<string, unknown> | undefined;
  if (typeof section !== 'object' || section === null) {
    throw new ConfigError(file, 'recursion', `present: model_type "${writtenType}" is a recursive model`);
  }
  const base = section.base_model_type ?? writtenType.slice(recursiveModelTypePrefix.length);
  if (typeof base !== 'string') throw new ConfigError(file, 'recursion.base_model_type', 'a string');
  return base;
}

function stringField(fields: Record<string, unknown>, key: string, file: string): string {
  const value = fields[key];
  if (typeof value !== 'string') throw new ConfigError(file, key, 'a string');
  return value;
}

function positiveInt(fields: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const value = fields[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new ConfigError(file, key, `a positive integer (got ${JSON.stringify(fields[key])})`);
  }
  return value;
}

function optionalInt(fields: Record<string, unknown>, key: string, file: string): number | undefined {
  const value = fields[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ConfigError(file, key, `a non-negative integer (got ${JSON.stringify(value)})`);
  }
  return value;
}

function positiveNumber(
  fields: Record<string, unknown>,
  key: string,
  file: string,
  fallback: number,
): number {
  const value = fields[key] ?? fallback;
  if (typeof value !== 'number' || !(value > 0)) {
    throw new ConfigError(file, key, `a positive number (got ${JSON.stringify(fields[key])})`);
  }
  return value;
}

function booleanField(
  fields: Record<string, unknown>,
  key: string,
  file: string,
  fallback: boolean,
): boolean {
  const value = fields[key] ?? fallback;
  if (typeof value !== 'boolean')
    throw new ConfigError(file, key, `true or false (got ${JSON.stringify(value)})`);
  return value;
}

function ropeScaling(value: unknown, file: string): RopeScaling {
  if (value === undefined || value === null) return { type: 'none' };
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(file, 'rope_scaling', `an object or null (got ${JSON.stringify(value)})`);
  }
  const scaling = value as Record<string, unknown>;
  const kind = scaling.rope_type ?? scaling.type;
  const positive = (key: string): number => {
    const field = scaling[key];
    if (typeof field !== 'number' || !(field > 0)) {
      throw new ConfigError(file, `rope_scaling.${key}`, `a positive number (got ${JSON.stringify(field)})`);
    }
    return field;
  };
  if (kind === 'default') return { type: 'none' };
  if (kind === 'linear') return { type: 'linear', factor: positive('factor') };
  if (kind === 'llama3') {
    const lowFreqFactor = positive('low_freq_factor');
    const highFreqFactor = positive('high_freq_factor');
    if (!(highFreqFactor > lowFreqFactor)) {
      throw new ConfigError(
        file,
        'rope_scaling.high_freq_factor',
        `greater than low_freq_factor ${lowFreqFactor} (got ${highFreqFactor})`,
      );
    }
    return {
      type: 'llama3',
      factor: positive('factor'),
      lowFreqFactor,
      highFreqFactor,
      originalMaxPositions: positive('original_max_position_embeddings'),
    };
  }
  throw new ConfigError(
    file,
    'rope_scaling',
    `of rope_type "default", "linear" or "llama3" (got ${JSON.stringify(value)})`,
  );
}

function activation(fields: Record<string, unknown>, file: string, isGemma: boolean): HiddenActivation {
  // NOTE: HF's Gemma runs the tanh approximation whatever `hidden_act` says (old configs say "gelu").
  if (isGemma) return 'gelu_tanh';
  const value = fields.hidden_act ?? 'silu';
  if (value === 'silu' || value === 'swish') return 'silu';
  if (value === 'gelu_pytorch_tanh' || value === 'gelu_new') return 'gelu_tanh';
  throw new ConfigError(file, 'hidden_act', `silu or gelu_pytorch_tanh (got ${JSON.stringify(value)})`);
}

function tokenIds(value: unknown, file: string): number[] {
  if (value === undefined || value === null) return [];
  const ids = Array.isArray(value) ? value : [value];
  if (!ids.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 0)) {
    throw new ConfigError(
      file,
      'eos_token_id',
      `a token id or a list of them (got ${JSON.stringify(value)})`,
    );
  }
  return ids as number[];
}
