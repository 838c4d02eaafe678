/**
 * {@link convertToRecursive}: a pretrained checkpoint in, a Recursive or Relaxed Recursive Transformer
 * out, streaming one module of one layer at a time.
 *
 * @module
 */
import { resolve } from 'node:path';
import {
  assertOutputApart,
  configLinearModules,
  ConfigError,
  checkLoopsRepeatLayerTypes,
  type InitMethod,
  type LinearModule,
  linearModules,
  layerNorms,
  linearShapes,
  type LoopNorm,
  loopNormTensorName,
  loraTensorName,
  type ModelConfig,
  moduleTensorName,
  normTensorName,
  type RecursionConfig,
  recursionToJson,
  recursiveModelConfig,
  type SharingStrategy,
  type TensorPlanEntry,
  toFloat32,
} from '@rrt/core';
import { sizeOf } from '@rrt/tensor';
import { InvalidOptionError } from './errors.js';
import { factorResidual, type SvdOptions } from './factorize.js';
import { planLayout, type RecursiveLayout, type SharedInit, sharedInits } from './layout.js';
import {
  accumulate,
  type FloatDType,
  foldedResidual,
  isFloatDType,
  lowRankErrorSquared,
  normFoldFactors,
  storeAs,
  sumOfSquares,
  torchDtypeNames,
} from './numeric.js';
import { type TensorProgress, TensorStream, writeModelDirectory } from './output.js';
import {
  groupOf,
  type ModuleGroup,
  moduleGroupNames,
  moduleGroups,
  type RankOption,
  resolveRanks,
} from './ranks.js';
import {
  addCopy,
  checkDecoderTensors,
  decoderTensorShapes,
  type NormName,
  openSource,
  type SourceModel,
} from './source.js';

/** Options of {@link convertToRecursive}. Give `loops` or `blockSize` (or both). */
export interface ConvertOptions {
  /** L: how many times the shared block runs. */
  loops?: number;
  /** K: stored (shared) layers; derived from `loops` when omitted. */
  blockSize?: number;
  /** How effective layers map onto the block; default `cycle`. */
  strategy?: SharingStrategy;
  /** How the shared layers are initialised; default `stepwise`. */
  init?: InitMethod;
  /** Keep a subset of the layers when K·L does not tile them (see `planLayout`); default false. */
  subsample?: boolean;
  /** LoRA ranks (one, or per group q / kv / o / ffn); default 0: a plain recursive model. */
  ranks?: RankOption;
  /** LoRA scaling numerator, `scale = alpha / rank`; default the largest rank (scale 1 there). */
  alpha?: number;
  /** Seed of the `random` init and of the randomized SVDs; default 0. */
  seed?: number;
  /** dtype of the output's weights; default the source's (that of layer 0's `q_proj`). */
  outputDtype?: FloatDType;
  /** dtype of the LoRA factors; default `outputDtype`. */
  loraDtype?: FloatDType;
  /**
   * Fold each loop's RMSNorm gains into its LoRA target (see `normFoldFactors`), so that a full-rank
   * relaxed model reproduces the original exactly although norms are shared; default true. False
   * factors plain `W_orig − W_shared`, as the paper does.
   */
  foldNorms?: boolean;
  /**
   * Give every LoRA a per-loop bias correction (PEFT's `lora_B.bias`), so that loops whose layers had
   * different biases, or whose LayerNorm biases pass through the projection differently, are exact at
   * full rank; default true where the source's norms carry a bias (GPT-NeoX), false otherwise (the
   * shared bias is then the initial one, as before). Only with ranks > 0.
   */
  loraBias?: boolean;
  /** How the truncated SVDs run. */
  svd?: SvdOptions;
  /** Measure the reconstruction error of every LoRA (costs one low-rank product each); default true. */
  measureError?: boolean;
  /** Most tensor bytes per output shard; default 5 GB (`model.safetensors` when it all fits). */
  maxShardBytes?: number;
  /** Replace an existing output directory; default false. */
  overwrite?: boolean;
  /** Called once per output tensor, in write order. */
  onProgress?: (progress: TensorProgress) => void;
  /** Stops the conversion before the next tensor: its temporary output is removed, nothing is written. */
  signal?: AbortSignal;
  /**
   * Plan only: check the source and options, and return the layout, config and parameter counts, without
   * computing or writing anything (the reconstruction errors are then `null`). Default false.
   */
  dryRun?: boolean;
  /** Called with each warning (clamped ranks, shared biases that differed...). */
  onWarning?: (message: string) => void;
}

/** Parameter counts of the three models a conversion relates. */
export interface ParameterCounts {
  /** Every tensor of the source checkpoint. */
  original: number;
  /** The converted model without its LoRA: embeddings, head, stored layers, final norm. */
  recursive: number;
  /** The converted model with its LoRA. */
  relaxed: number;
}

/**
 * Relative reconstruction error of a module group over every shared (loop, layer):
 * `sqrt(Σ ‖T − W‖²_F / Σ ‖T‖²_F)` where T is the loop's original weight (with norm gains folded in when
 * `foldNorms`) and W the weight the converted model applies. `null` when no layer is shared.
 */
export interface GroupReconstruction {
  group: ModuleGroup;
  /** The LoRA rank of each module of the group, in `moduleGroups` order. */
  ranks: number[];
  /** With the shared weights only (rank 0). */
  recursiveError: number | null;
  /** With the shared weights and their LoRA; equal to `recursiveError` for rank 0. */
  relaxedError: number | null;
}

/** What {@link convertToRecursive} did. */
export interface ConversionResult {
  /** The output directory, absolute. */
  outDir: string;
  /** The `config.json` written. */
  config: Record<string, unknown>;
  recursion: RecursionConfig;
  layout: RecursiveLayout;
  /** How each stored layer was initialised (source-layer numbers). */
  inits: SharedInit[];
  outputDtype: FloatDType;
  loraDtype: FloatDType;
  parameters: ParameterCounts;
  /** Whether each loop's norm gains were folded into its LoRA target (see {@link ConvertOptions.foldNorms}). */
  foldNorms: boolean;
  reconstruction: GroupReconstruction[];
  /** Every warning also given to `onWarning`. */
  warnings: string[];
  /** Side files copied from the source (tokenizer, generation config...). */
  copiedFiles: string[];
  /** Whether anything was written (false for {@link ConvertOptions.dryRun}). */
  written: boolean;
  /** Wall time of the conversion. */
  seconds: number;
}

/**
 * The norm whose output each module reads (o and down read attention / FFN activations, no norm): its
 * gains fold into the module's input columns. Gemma 2/3's MLP reads `pre_feedforward_layernorm`.
 */
function normBefore(config: ModelConfig): Partial<Record<LinearModule, NormName>> {
  const mlpNorm: NormName = config.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm';
  return {
    q_proj: 'input_layernorm',
    k_proj: 'input_layernorm',
    v_proj: 'input_layernorm',
    gate_proj: mlpNorm,
    up_proj: mlpNorm,
  };
}

/**
 * The norms of a layer that no projection can absorb: q/k norms normalise a projection's output per
 * head (RMSNorm is scale-invariant, so gains scaled into `q_proj`'s rows would be normalised away, and
 * RoPE then mixes dimensions i and i + headDim/2), and Gemma's post-attention and post-feed-forward norms
 * normalise the residual branch's output. A relaxed conversion that folds norms keeps these per loop.
 */
function unfoldableNorms(config: ModelConfig): LoopNorm[] {
  const norms: LoopNorm[] = [];
  if (config.qkNorm) norms.push('q_norm', 'k_norm');
  if (config.sandwichNorms) norms.push('post_attention_layernorm', 'post_feedforward_layernorm');
  return norms;
}

/**
 * Converts a pretrained model directory (Hugging Face layout, safetensors) into a recursive model with
 * K shared layers looped L times, and, with `ranks` > 0, a relaxed one: a LoRA per (loop, layer, module)
 * initialised from the truncated SVD of the residual between the loop's original weight and the shared
 * weight as stored (rounded to the output dtype). The factors satisfy `W_shared + (α/r)·B·A = W_orig` at
 * full rank, whatever α.
 *
 * NOTE: a loop whose residual is exactly zero (with Stepwise, Lower, Upper or Random init, the loop
 * that runs the very layer the shared weights were copied from) gets the standard LoRA initialisation
 * instead of an SVD: `B = 0` and `A` uniform in ±1/√in (PyTorch's `kaiming_uniform_(a=√5)` bound), seeded
 * per (loop, layer, module). Its correction is exactly 0, like the SVD's would be, but training can move
 * away from it (from `A = 0` and `B = 0` it could not).
 *
 * NOTE: norms are shared, not relaxed, as in the paper; by default each loop's RMSNorm gains are folded
 * into its LoRA target (`foldNorms`), so that the full-rank relaxed model is exact anyway.
 *
 * Tensors are read, converted and written one module of one layer (with the source layers tied to it) at
 * a time, into a temporary directory renamed to `outDir` at the end: an interrupted or failed conversion
 * leaves nothing at `outDir`. Every bad input is rejected with a typed error before anything is written.
 *
 * @example
 * ```ts
 * const { backend } = await createBackend('auto');
 * const result = await convertToRecursive('models/llama', 'models/llama-rrt', {
 *   loops: 2, init: 'average', ranks: { default: 64, ffn: 128 }, svd: { backend },
 * });
 * console.log(result.parameters, result.reconstruction);
 * ```
 */
export async function convertToRecursive(
  sourceDir: string,
  outDir: string,
  options: ConvertOptions,
): Promise<ConversionResult> {
  const started = performance.now();
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    options.onWarning?.(message);
  };
  const strategy = options.strategy ?? 'cycle';
  const init = options.init ?? 'stepwise';
  checkOptions(options);
  await assertOutputApart(outDir, [{ path: sourceDir }]);

  const source = await openSource(sourceDir, 'vanilla');
  try {
    const { config } = source;
    const layout = planLayout({
      sourceLayers: config.numHiddenLayers,
      blockSize: options.blockSize,
      loops: options.loops,
      strategy,
      subsample: options.subsample,
      file: source.configFile,
    });
    if (layout.effectiveLayers !== layout.sourceLayers) {
      warn(
        `subsampled ${layout.sourceLayers} layers to ${layout.effectiveLayers}: kept layers ${layout.keptLayers.join(', ')}`,
      );
    }
    const shapes = linearShapes(config);
    const loraRanks = resolveRanks(options.ranks, shapes, warn);
    if (!config.gatedMlp) loraRanks.gate_proj = 0; // GPT-NeoX has no gate
    const maxRank = Math.max(...Object.values(loraRanks));
    const alpha = options.alpha ?? (maxRank > 0 ? maxRank : 1);
    const inits = sharedInits(layout, init, options.seed ?? 0);
    const loopNorms = maxRank > 0 && (options.foldNorms ?? true) ? unfoldableNorms(config) : [];
    const recursion: RecursionConfig = {
      blockSize: layout.blockSize,
      loops: layout.loops,
      strategy,
      init,
      loraRanks,
      loraAlpha: alpha,
      storedLayers: layout.storedLayers.length,
      loraBias: maxRank > 0 && (options.loraBias ?? config.normType === 'layer'),
      ...(loopNorms.length > 0 ? { loopNorms } : {}),
    };
    // Effective depth i runs source layer keptLayers[i] (all of them unless subsampled).
    const keptWindows = layout.keptLayers.map((layer) => config.layerWindows[layer]);
    checkLayerTypes(
      { layerWindows: keptWindows, numHiddenLayers: layout.effectiveLayers },
      recursion,
      source.configFile,
    );

    // Everything the conversion reads is checked before anything is written.
    const sourceDtype = checkDecoderTensors(source, layout.keptLayers);
    const ignored = ignoredTensors(source, layout);
    if (ignored.length > 0) {
      warn(
        `${ignored.length} source tensors are not part of the decoder and are not carried over: ${ignored.slice(0, 3).join(', ')}${ignored.length > 3 ? ', ...' : ''}`,
      );
    }
    const outputDtype = options.outputDtype ?? sourceDtype;
    const loraDtype = options.loraDtype ?? outputDtype;
    const stream = new TensorStream('conversion', options.onProgress, options.signal);
    const stats = newStats();
    const context: LayerContext = {
      source,
      outputDtype,
      loraDtype,
      recursion,
      options,
      stats,
      warn,
      differingBiases: 0,
    };
    planTensors(stream, context, layout, inits);

    const outputConfig = recursiveModelConfig(
      {
        ...source.rawConfig,
        num_hidden_layers: layout.effectiveLayers,
        // A subsampled model keeps its kept layers' types, written out: a family's rule (Gemma 2's
        // alternation, say) applied to the new layer count would give other layers the window.
        ...(layout.effectiveLayers !== layout.sourceLayers && keptWindows.some((w) => w !== undefined)
          ? {
              layer_types: keptWindows.map((w) => (w === undefined ? 'full_attention' : 'sliding_attention')),
              sliding_window: keptWindows.find((w) => w !== undefined),
            }
          : {}),
        torch_dtype: torchDtypeNames[outputDtype],
      },
      {
        ...recursionToJson(recursion),
        ...(layout.effectiveLayers !== layout.sourceLayers
          ? { source_num_hidden_layers: layout.sourceLayers, kept_layers: layout.keptLayers }
          : {}),
      },
      maxRank > 0,
    );
    const written = options.dryRun !== true;
    const copiedFiles = written
      ? await writeModelDirectory(
          { outDir, overwrite: options.overwrite, maxShardBytes: options.maxShardBytes },
          sourceDir,
          stream.tensors,
          outputConfig,
          source.assertUnchanged,
        )
      : [];
    if (context.differingBiases > 0) {
      warn(
        `${context.differingBiases} biases differ between tied layers; the converted model shares the initial bias (LoRA corrects weights only)`,
      );
    }

    return {
      outDir: resolve(outDir),
      config: outputConfig,
      recursion,
      layout,
      inits,
      outputDtype,
      loraDtype,
      parameters: parameterCounts(source, stream),
      foldNorms: options.foldNorms ?? true,
      reconstruction: reconstructionByGroup(stats, loraRanks, written),
      warnings,
      copiedFiles,
      written,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await source.close();
  }
}

/**
 * Refuses a layout whose loops would not repeat the source's layer types (sliding or full attention):
 * every effective depth that runs one stored layer must have the same window. Running a sliding layer's
 * weights at a full depth (or the reverse) would not reproduce the original even at full rank.
 */
function checkLayerTypes(
  config: Pick<ModelConfig, 'layerWindows' | 'numHiddenLayers'>,
  recursion: RecursionConfig,
  file: string,
): void {
  try {
    checkLoopsRepeatLayerTypes(config, recursion, file);
  } catch (cause) {
    if (cause instanceof ConfigError) {
      throw new InvalidOptionError('blockSize', cause.expected, recursion.blockSize);
    }
    throw cause;
  }
}

/** Parameters of the source, and of the output without and with its LoRA tensors. */
function parameterCounts(source: SourceModel, stream: TensorStream): ParameterCounts {
  let original = 0;
  for (const info of source.checkpoint.entries.values()) original += sizeOf(info.shape);
  let recursive = 0;
  let relaxed = 0;
  for (const tensor of stream.tensors) {
    const count = sizeOf(tensor.shape);
    relaxed += count;
    if (!tensor.name.startsWith('model.loras.')) recursive += count;
  }
  return { original, recursive, relaxed };
}

function reconstructionByGroup(
  stats: GroupStats,
  loraRanks: Record<LinearModule, number>,
  measured: boolean,
): GroupReconstruction[] {
  return moduleGroupNames.map((group) => {
    const { target, recursive, relaxed } = stats[group];
    return {
      group,
      ranks: moduleGroups[group].map((module) => loraRanks[module]),
      recursiveError: measured && target > 0 ? Math.sqrt(recursive / target) : null,
      relaxedError: measured && target > 0 ? Math.sqrt(relaxed / target) : null,
    };
  });
}

function checkOptions(options: ConvertOptions): void {
  if (options.alpha !== undefined && !(Number.isFinite(options.alpha) && options.alpha > 0)) {
    throw new InvalidOptionError('alpha', 'a positive number', options.alpha);
  }
  if (options.seed !== undefined && !Number.isInteger(options.seed)) {
    throw new InvalidOptionError('seed', 'an integer', options.seed);
  }
  for (const key of ['outputDtype', 'loraDtype'] as const) {
    const value = options[key];
    if (value !== undefined && !isFloatDType(value))
      throw new InvalidOptionError(key, 'F32, F16 or BF16', value);
  }
  if (options.maxShardBytes !== undefined && !(options.maxShardBytes > 0)) {
    throw new InvalidOptionError('maxShardBytes', 'a positive number of bytes', options.maxShardBytes);
  }
}

/**
 * Source tensors that the converted model has no place for (layers dropped by subsampling aside): neither
 * a decoder tensor of a kept layer nor a bias of a module the config does not bias.
 */
function ignoredTensors(source: SourceModel, layout: RecursiveLayout): string[] {
  const read = decoderTensorShapes(source, layout.keptLayers);
  const kept = new Set(layout.keptLayers);
  return [...source.checkpoint.entries.keys()].filter((name) => {
    if (read.has(name)) return false;
    const layer = /^model\.layers\.(\d+)\./.exec(name);
    return !(layer && Number(layer[1]) < layout.sourceLayers && !kept.has(Number(layer[1])));
  });
}

type GroupStats = Record<ModuleGroup, { target: number; recursive: number; relaxed: number }>;

function newStats(): GroupStats {
  const stats = {} as GroupStats;
  for (const group of moduleGroupNames) stats[group] = { target: 0, recursive: 0, relaxed: 0 };
  return stats;
}

/** What the producers of one conversion share. */
interface LayerContext {
  source: SourceModel;
  outputDtype: FloatDType;
  loraDtype: FloatDType;
  recursion: RecursionConfig;
  options: ConvertOptions;
  stats: GroupStats;
  warn: (message: string) => void;
  differingBiases: number;
}

/** Adds every output tensor to the stream, in file order, each group with its producer. */
function planTensors(
  stream: TensorStream,
  context: LayerContext,
  layout: RecursiveLayout,
  inits: SharedInit[],
): void {
  const { source, outputDtype } = context;
  const { config } = source;
  const copy = (name: string, shape: readonly number[]) =>
    addCopy(stream, source, name, name, shape, outputDtype);

  copy('model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]);
  for (const layer of layout.storedLayers)
    planLayer(stream, context, layer.index, layer.sources, layer.shared, inits[layer.index]!);
  copy('model.norm.weight', [config.hiddenSize]);
  if (config.normType === 'layer') copy('model.norm.bias', [config.hiddenSize]);
  if (source.checkpoint.has('lm_head.weight')) copy('lm_head.weight', [config.vocabSize, config.hiddenSize]);
}

/** The values a stored layer's tensor is initialised with, as stored in the output dtype. */
async function initialValues(
  context: LayerContext,
  init: SharedInit,
  nameOf: (layer: number) => string,
  shape: readonly number[],
): Promise<{ bytes: Uint8Array; stored: Float32Array }> {
  const { source, outputDtype } = context;
  if (init.kind === 'copy') {
    const raw = await source.read(nameOf(init.source), shape);
    if (raw.dtype === outputDtype) return { bytes: raw.bytes, stored: toFloat32(raw) };
    return storeAs(toFloat32(raw), outputDtype);
  }
  const sum = new Float64Array(sizeOf(shape));
  for (const layer of init.sources) accumulate(sum, await source.readValues(nameOf(layer), shape));
  for (let i = 0; i < sum.length; i++) sum[i]! /= init.sources.length;
  return storeAs(sum, outputDtype);
}

/** A 32-bit seed per (loop, layer, module), so each SVD reproduces whatever order they run in. */
function loraSeed(seed: number, loop: number, layer: number, module: LinearModule): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const value of [loop, layer, linearModules.indexOf(module)]) {
    h = Math.imul(h ^ value, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

/** Plans one stored layer: its norms, then each module with its bias and per-loop LoRA. */
function planLayer(
  stream: TensorStream,
  context: LayerContext,
  index: number,
  sources: number[],
  shared: boolean,
  init: SharedInit,
): void {
  const { source, outputDtype, loraDtype, recursion, options, stats } = context;
  const { config } = source;
  const shapes = linearShapes(config);
  const foldNorms = options.foldNorms ?? true;
  const measure = options.measureError ?? true;
  const norms = layerNorms(config);
  const widthOf = (norm: NormName) => norms.find((entry) => entry.norm === norm)!.width;
  // Shared norms as stored, and each source layer's original norms: small, kept for the layer's modules.
  // LayerNorms (GPT-NeoX) also have a bias, `.bias` next to `.weight`; keyed here as `norm` / `norm.bias`.
  const normParts = config.normType === 'layer' ? (['weight', 'bias'] as const) : (['weight'] as const);
  const sharedNorms = new Map<string, Float32Array>();
  const originalNorms = new Map<string, Float32Array>();
  const originalNorm = async (layer: number, norm: NormName, part: 'weight' | 'bias' = 'weight') => {
    const name = normTensorName(layer, norm).replace(/weight$/, part);
    if (!originalNorms.has(name)) originalNorms.set(name, await source.readValues(name, [widthOf(norm)]));
    return originalNorms.get(name)!;
  };

  // Norms that no projection absorbs run per loop in a relaxed model: each loop's copy is its source layer's.
  const loopNorms = shared ? (recursion.loopNorms ?? []) : [];
  const normEntries: TensorPlanEntry[] = norms.flatMap(({ norm, width }) =>
    normParts.map((part) => ({
      name: normTensorName(index, norm).replace(/weight$/, part),
      dtype: outputDtype,
      shape: [width],
    })),
  );
  for (const norm of loopNorms) {
    for (let loop = 0; loop < sources.length; loop++) {
      normEntries.push({
        name: loopNormTensorName(loop, index, norm),
        dtype: outputDtype,
        shape: [widthOf(norm)],
      });
    }
  }
  stream.add(normEntries, async () => {
    const out = new Map<string, Uint8Array>();
    for (const { norm, width } of norms) {
      for (const part of normParts) {
        const nameOf = (layer: number) => normTensorName(layer, norm).replace(/weight$/, part);
        const values = await initialValues(context, init, nameOf, [width]);
        sharedNorms.set(part === 'weight' ? norm : `${norm}.bias`, values.stored);
        out.set(nameOf(index), values.bytes);
      }
    }
    for (const norm of loopNorms) {
      for (const [loop, layer] of sources.entries()) {
        out.set(
          loopNormTensorName(loop, index, norm),
          await source.readAs(normTensorName(layer, norm), outputDtype, [widthOf(norm)]),
        );
      }
    }
    return out;
  });

  for (const module of configLinearModules(config)) {
    const [outFeatures, inFeatures] = shapes[module];
    const rank = shared ? recursion.loraRanks[module] : 0;
    const hasBias = config.biasedModules.includes(module);
    const entries: TensorPlanEntry[] = [
      {
        name: `${moduleTensorName(index, module)}.weight`,
        dtype: outputDtype,
        shape: [outFeatures, inFeatures],
      },
    ];
    if (hasBias)
      entries.push({
        name: `${moduleTensorName(index, module)}.bias`,
        dtype: outputDtype,
        shape: [outFeatures],
      });
    if (rank > 0) {
      for (let loop = 0; loop < sources.length; loop++) {
        const prefix = loraTensorName(loop, index, module);
        entries.push({ name: `${prefix}.lora_A.weight`, dtype: loraDtype, shape: [rank, inFeatures] });
        entries.push({ name: `${prefix}.lora_B.weight`, dtype: loraDtype, shape: [outFeatures, rank] });
        if (recursion.loraBias) {
          entries.push({ name: `${prefix}.lora_B.bias`, dtype: loraDtype, shape: [outFeatures] });
        }
      }
    }
    stream.add(entries, async () => {
      const out = new Map<string, Uint8Array>();
      const weightOf = (layer: number) => `${moduleTensorName(layer, module)}.weight`;
      const weight = await initialValues(context, init, weightOf, [outFeatures, inFeatures]);
      out.set(entries[0]!.name, weight.bytes);
      let sharedBias: Float32Array | undefined;
      if (hasBias) {
        const biasOf = (layer: number) => `${moduleTensorName(layer, module)}.bias`;
        const bias = await initialValues(context, init, biasOf, [outFeatures]);
        out.set(entries[1]!.name, bias.bytes);
        sharedBias = bias.stored;
        if (shared && rank > 0 && !recursion.loraBias) {
          for (const layer of sources) {
            const original = await source.readValues(biasOf(layer), [outFeatures]);
            if (original.some((value, i) => value !== bias.stored[i])) context.differingBiases += 1;
          }
        }
      }
      if (!shared || (rank === 0 && !measure)) return out;

      const group = stats[groupOf(module)];
      const norm = normBefore(config)[module];
      for (const [loop, layer] of sources.entries()) {
        // The layer the shared weight was copied from, stored unrounded: no need to read it again.
        const storedUnchanged =
          init.kind === 'copy' &&
          init.source === layer &&
          source.checkpoint.entries.get(weightOf(layer))?.dtype === outputDtype;
        const target = storedUnchanged
          ? weight.stored
          : await source.readValues(weightOf(layer), [outFeatures, inFeatures]);
        let factors: Float64Array | undefined;
        if (foldNorms && norm) {
          const fold = normFoldFactors(
            await originalNorm(layer, norm),
            sharedNorms.get(norm)!,
            config.normAddOne,
          );
          if (fold.unrepresentable.length > 0) {
            context.warn(
              `layer ${index} (source layer ${layer}) ${module}: the shared ${norm} is 0 at ${fold.unrepresentable.length} features where the original is not; the LoRA cannot restore them`,
            );
          }
          if (!fold.identity) factors = fold.factors;
        }
        const residual = foldedResidual(target, weight.stored, inFeatures, factors);
        const residualSquared = sumOfSquares(residual.values);
        group.target += residual.targetSquared;
        group.recursive += residualSquared;
        if (rank === 0) {
          group.relaxed += residualSquared;
          continue;
        }
        const seed = loraSeed(options.seed ?? 0, loop, index, module);
        const factorsOut = await factorResidual(
          residual.values,
          outFeatures,
          inFeatures,
          rank,
          recursion.loraAlpha,
          seed,
          options.svd ?? {},
        );
        const a = storeAs(factorsOut.a, loraDtype);
        const b = storeAs(factorsOut.b, loraDtype);
        const prefix = loraTensorName(loop, index, module);
        out.set(`${prefix}.lora_A.weight`, a.bytes);
        out.set(`${prefix}.lora_B.weight`, b.bytes);
        if (recursion.loraBias) {
          const normBiases =
            norm && config.normType === 'layer'
              ? {
                  original: await originalNorm(layer, norm, 'bias'),
                  shared: sharedNorms.get(`${norm}.bias`)!,
                }
              : undefined;
          const correction = loopBiasCorrection({
            originalWeight: target,
            sharedWeight: weight.stored,
            inFeatures,
            factors,
            originalBias: hasBias
              ? await source.readValues(`${moduleTensorName(layer, module)}.bias`, [outFeatures])
              : undefined,
            sharedBias,
            normBiases,
          });
          const scale = recursion.loraAlpha / rank;
          out.set(
            `${prefix}.lora_B.bias`,
            storeAs(
              correction.map((value) => value / scale),
              loraDtype,
            ).bytes,
          );
        }
        if (measure) {
          group.relaxed += await lowRankErrorSquared(
            residual.values,
            b.stored,
            a.stored,
            outFeatures,
            inFeatures,
            rank,
            recursion.loraAlpha / rank,
            options.svd?.backend,
          );
        }
      }
      return out;
    });
  }
}

/**
 * The bias a loop must add to the shared projection's output for the loop to compute what its original
 * layer did, at full rank: `b_o + W_o·β_o − W_applied·β_s − b_s`.
 *
 * NOTE: why a per-loop bias and not a folded or shared one. A LayerNorm's bias β passes through the next
 * projection as the constant `W·β`, which differs per loop (each loop has its own W_o, and its own β_o);
 * so do the projections' own biases, layer by layer. The shared norm weight can be folded into each
 * loop's LoRA target (a per-column scale, `normFoldFactors`), but a constant cannot be folded into
 * `B·A`; it can only go into a bias, and a bias per loop is what that takes. So the norms (weights and
 * biases) stay shared in the block, as the RMSNorm gains are, and every LoRA carries PEFT's
 * `lora_B.bias`, computed here with `W_applied` the weight the loop's LoRA targets (`W_o·diag(f)` with
 * the norm-fold factors f; the shared column where a factor is NaN, as `foldedResidual` does).
 */
function loopBiasCorrection(parts: {
  originalWeight: Float32Array;
  sharedWeight: Float32Array;
  inFeatures: number;
  factors: Float64Array | undefined;
  originalBias: Float32Array | undefined;
  sharedBias: Float32Array | undefined;
  normBiases: { original: Float32Array; shared: Float32Array } | undefined;
}): Float64Array {
  const { originalWeight, sharedWeight, inFeatures, factors, originalBias, sharedBias, normBiases } = parts;
  const outFeatures = originalWeight.length / inFeatures;
  const correction = new Float64Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let value = (originalBias?.[o] ?? 0) - (sharedBias?.[o] ?? 0);
    if (normBiases) {
      for (let j = 0; j < inFeatures; j++) {
        const original = originalWeight[o * inFeatures + j]!;
        const factor = factors ? factors[j]! : 1;
        const applied = Number.isNaN(factor) ? sharedWeight[o * inFeatures + j]! : original * factor;
        value += original * normBiases.original[j]! - applied * normBiases.shared[j]!;
      }
    }
    correction[o] = value;
  }
  return correction;
}
