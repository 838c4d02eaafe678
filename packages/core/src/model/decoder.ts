import { type KVCache, KVCacheError } from '@rrt/kv-cache';
import type { LayerKVCache } from '@rrt/kv-cache';
import type { Backend, Tensor } from '@rrt/tensor';
import type { ModelConfig } from './config.js';
import { ropeTables } from './rope.js';
import { type EffectiveLayer, exitDepths, type LinearModule, layerSchedule } from './recursion.js';
import {
  disposeWeights,
  type LayerWeights,
  type Linear,
  type LoRA,
  loraKey,
  type ModelWeights,
} from './weights.js';

/** Options of {@link Decoder.forward}. */
export interface ForwardOptions {
  /**
   * Cache of earlier positions, appended to in place. Without one the call attends only to its own tokens
   * (positions start at 0).
   */
  cache?: KVCache;
  /** Compute logits only for the last position of each sequence (generation), not all (scoring). */
  lastPositionOnly?: boolean;
  /** Also read out the hidden state and logits after every completed loop (for early exit). */
  loopOutputs?: boolean;
}

/** The state after one loop: what an early exit at that depth would produce. */
export interface LoopOutput {
  /**
   * Which pass over the block just completed. For `middle-cycle`, the readout after the unique last
   * layer repeats the last pass's index and is marked `final`.
   */
  loopIndex: number;
  /** Whether this is the full-depth readout (the model's own output). */
  final: boolean;
  /** Effective depth of its last layer. */
  depth: number;
  /** Hidden state `[batch, length, hidden]` (before the final norm). */
  hidden: Tensor;
  /** Logits `[batch, length, vocab]` (or `[batch, 1, vocab]` with `lastPositionOnly`). */
  logits: Tensor;
}

/** Result of {@link Decoder.forward}; the caller owns (and disposes) every tensor in it. */
export interface ForwardOutput {
  /**
   * Logits of the full-depth model, `[batch, length, vocab]` (or `[batch, 1, vocab]`). With
   * `loopOutputs` this is the same tensor as the final loop output's `logits` (disposing it twice is
   * harmless).
   */
  logits: Tensor;
  /** Readouts after each loop when `loopOutputs` was asked for (the last equals `logits`' depth). */
  loops: LoopOutput[];
}

/**
 * One decoder for vanilla, recursive and relaxed models: the stored layers run in the order of
 * {@link layerSchedule}, each effective layer with its loop's LoRA when it has one. Llama, Mistral, Qwen2
 * and Gemma differ only in config-driven details (bias, norm offset, embedding scale, activation).
 */
export class Decoder {
  /** The schedule of effective layers, depth 0 first. */
  readonly schedule: readonly EffectiveLayer[];
  private readonly exitAfter: ReadonlySet<number>;
  private readonly ropeCos: Tensor;
  private readonly ropeSin: Tensor;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
  ) {
    this.schedule = layerSchedule(config.recursion, config.numHiddenLayers);
    this.exitAfter = new Set(exitDepths(config.recursion, config.numHiddenLayers));
    const { cos, sin } = ropeTables(config);
    const shape = [config.maxPositionEmbeddings, config.headDim / 2];
    this.ropeCos = backend.fromArray(cos, shape);
    this.ropeSin = backend.fromArray(sin, shape);
  }

  /**
   * Runs token ids `[batch, length]` (int32) through the model, at positions following what `cache` holds.
   *
   * @example
   * ```ts
   * const cache = createKVCache(backend, { depths: config.numHiddenLayers, capacity: 256 });
   * const { logits } = model.forward(ids, { cache, lastPositionOnly: true });
   * ```
   */
  forward(inputIds: Tensor, options: ForwardOptions = {}): ForwardOutput {
    const { backend, config } = this;
    const [batch, length] = inputIds.shape as [number, number];
    const offset = options.cache?.offset ?? 0;
    if (options.cache && options.cache.layers.length !== this.schedule.length) {
      throw new KVCacheError(
        `the KV cache has ${options.cache.layers.length} depths, the model ${this.schedule.length} effective layers ` +
          '(create it with depths: config.numHiddenLayers)',
      );
    }
    if (offset + length > config.maxPositionEmbeddings) {
      throw new RangeError(
        `positions ${offset}…${offset + length - 1} exceed max_position_embeddings ${config.maxPositionEmbeddings}`,
      );
    }
    // tidy returns a flat list of tensors; the output record is rebuilt from it afterwards.
    const loopMeta: { loopIndex: number; depth: number; final: boolean }[] = [];
    const [logits, ...loopTensors] = backend.tidy(() => {
      // Activations stay 2-D, [B·T, d], between layers: projections are then plain 2-D products, with
      // no reshapes around them (each op dispatch costs microseconds; a decode step runs hundreds).
      let hidden = backend.gather(this.weights.embedding, backend.reshape(inputIds, [batch * length])); // [B·T, d]
      if (config.embeddingScale !== 1) hidden = backend.mul(hidden, config.embeddingScale);
      const context = this.attentionContext(batch, length, offset);
      const outputs: Tensor[] = [];
      for (const layer of this.schedule) {
        hidden = this.decoderLayer(hidden, layer, context, options.cache?.layers[layer.depth]);
        if (options.loopOutputs && this.exitAfter.has(layer.depth)) {
          // middle-cycle's unique last layer reports the pass it follows, not its own loop 0.
          const loopIndex = layer.shared ? layer.loopIndex : (loopMeta[loopMeta.length - 1]?.loopIndex ?? 0);
          loopMeta.push({ loopIndex, depth: layer.depth, final: layer.depth === this.schedule.length - 1 });
          outputs.push(
            backend.reshape(hidden, [batch, length, config.hiddenSize]),
            this.readout(hidden, context, options),
          );
        }
      }
      const finalLogits =
        outputs.length > 0 ? outputs[outputs.length - 1]! : this.readout(hidden, context, options);
      return [finalLogits, ...outputs];
    });
    const loops = loopMeta.map((meta, index) => ({
      ...meta,
      hidden: loopTensors[2 * index]!,
      logits: loopTensors[2 * index + 1]!,
    }));
    return { logits: logits!, loops };
  }

  /** What every layer's attention shares in one call: RoPE rows of its positions, the mask, the padding. */
  private attentionContext(batch: number, length: number, offset: number): AttentionContext {
    const { backend, config } = this;
    const keyLength = offset + length;
    const paddedKeyLength = Math.ceil(keyLength / keyBlock) * keyBlock;
    const needsMask = length > 1 || paddedKeyLength > keyLength;
    return {
      batch,
      length,
      cos: backend.slice(this.ropeCos, [offset, 0], [length, -1]), // [T, hD/2]
      sin: backend.slice(this.ropeSin, [offset, 0], [length, -1]),
      mask: needsMask ? backend.causalMask(length, paddedKeyLength, offset) : undefined,
      // Every layer pads its keys and values with the same zeros: made once per call.
      keyPadding:
        paddedKeyLength > keyLength
          ? backend.fill([batch, config.numKeyValueHeads, paddedKeyLength - keyLength, config.headDim], 0)
          : undefined,
    };
  }

  /** Final norm and output head: hidden `[B·T, d]` → logits `[B, T, vocab]` (or `[B, 1, vocab]`). */
  private readout(
    hidden: Tensor,
    { batch, length }: AttentionContext,
    options: Pick<ForwardOptions, 'lastPositionOnly'>,
  ): Tensor {
    const { backend, config } = this;
    const lastOnly = options.lastPositionOnly === true && length > 1;
    const rows = lastOnly
      ? backend.reshape(
          backend.slice(backend.reshape(hidden, [batch, length, -1]), [0, length - 1, 0], [-1, 1, -1]),
          [batch, -1],
        )
      : hidden;
    const normed = backend.rmsNorm(rows, this.weights.finalNorm, config.rmsNormEps);
    const logits = this.project(normed, { weight: this.weights.lmHead }, undefined); // [rows, vocab]
    return backend.reshape(logits, [batch, lastOnly ? 1 : length, config.vocabSize]);
  }

  /** Frees every tensor of the model, its weights included. */
  dispose(): void {
    disposeWeights(this.backend, this.weights);
    this.backend.dispose([this.ropeCos, this.ropeSin]);
  }

  private decoderLayer(
    hidden: Tensor,
    layer: EffectiveLayer,
    context: AttentionContext,
    cache?: LayerKVCache,
  ): Tensor {
    const { backend, config } = this;
    const weights = this.weights.layers[layer.blockLayer]!;
    const loras = layer.shared
      ? this.weights.loras.get(loraKey(layer.loopIndex, layer.blockLayer))
      : undefined;
    const attentionIn = backend.rmsNorm(hidden, weights.inputNorm, config.rmsNormEps);
    const afterAttention = backend.add(hidden, this.attention(attentionIn, weights, loras, context, cache));
    const mlpIn = backend.rmsNorm(afterAttention, weights.postAttentionNorm, config.rmsNormEps);
    return backend.add(afterAttention, this.mlp(mlpIn, weights, loras));
  }

  private attention(
    x: Tensor,
    weights: LayerWeights,
    loras: LoRAs,
    context: AttentionContext,
    cache: LayerKVCache | undefined,
  ): Tensor {
    const { backend, config } = this;
    const { batch, length } = context;
    const { numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim } = config;
    const groups = heads / kvHeads;
    const split = (y: Tensor, count: number) =>
      backend.transpose(backend.reshape(y, [batch, length, count, headDim]), [0, 2, 1, 3]); // [B, h, T, hD]

    const rawQueries = split(this.project(x, weights.linears.q_proj, loras?.q_proj), heads);
    const rawKeys = split(this.project(x, weights.linears.k_proj, loras?.k_proj), kvHeads);
    const values = split(this.project(x, weights.linears.v_proj, loras?.v_proj), kvHeads);
    // One RoPE over queries and keys stacked along the head axis: the same arithmetic in fewer dispatches.
    const rotated = backend.rope(backend.concat([rawQueries, rawKeys], 1), context.cos, context.sin);
    const queries = backend.slice(rotated, [0, 0, 0, 0], [-1, heads, -1, -1]); // [B, H, T, hD]
    const keys = backend.slice(rotated, [0, heads, 0, 0], [-1, kvHeads, -1, -1]); // [B, kvH, T, hD]

    let { keys: allKeys, values: allValues } = cache ? cache.updateAndFetch(keys, values) : { keys, values }; // [B, kvH, S, hD]
    if (context.keyPadding) {
      // Masked zero keys and values up to a multiple of keyBlock (see keyBlock for why).
      allKeys = backend.concat([allKeys, context.keyPadding], 2);
      allValues = backend.concat([allValues, context.keyPadding], 2);
    }
    const keyLength = allKeys.shape[2]!; // S, padded
    // Grouped-query attention without repeating K/V: query head h = kvHead·groups + g, so the G query heads
    // of one KV head are contiguous and fold into the row axis of one matmul.
    const grouped = backend.reshape(backend.mul(queries, 1 / Math.sqrt(headDim)), [
      batch,
      kvHeads,
      groups * length,
      headDim,
    ]);
    let scores = backend.matmul(grouped, allKeys, { transposeB: true }); // [B, kvH, G·T, S]
    if (context.mask) {
      scores = backend.add(
        backend.reshape(scores, [batch, kvHeads, groups, length, keyLength]),
        context.mask,
      );
      scores = backend.reshape(scores, [batch, kvHeads, groups * length, keyLength]);
    }
    const mixed = backend.matmul(backend.softmax(scores), allValues); // [B, kvH, G·T, hD]
    const merged = backend.transpose(backend.reshape(mixed, [batch, heads, length, headDim]), [0, 2, 1, 3]); // [B, T, H, hD]
    return this.project(
      backend.reshape(merged, [batch * length, heads * headDim]),
      weights.linears.o_proj,
      loras?.o_proj,
    );
  }

  private mlp(x: Tensor, weights: LayerWeights, loras: LoRAs): Tensor {
    const { backend, config } = this;
    const gate = this.project(x, weights.linears.gate_proj, loras?.gate_proj);
    const up = this.project(x, weights.linears.up_proj, loras?.up_proj);
    const activated = config.hiddenAct === 'silu' ? backend.silu(gate) : backend.geluTanh(gate);
    return this.project(backend.mul(activated, up), weights.linears.down_proj, loras?.down_proj);
  }

  /** `x·W (+ b) (+ scale·(x·Aᵀ)·Bᵀ)` on `x: [rows, in]` → `[rows, out]`. */
  private project(x: Tensor, linear: Linear, lora: LoRA | undefined): Tensor {
    const { backend } = this;
    let y = backend.matmul(x, linear.weight);
    if (linear.bias) y = backend.add(y, linear.bias);
    if (lora) {
      const down = backend.matmul(x, lora.a); // [rows, r]
      y = backend.add(y, backend.mul(backend.matmul(down, lora.b), lora.scale));
    }
    return y;
  }
}

type LoRAs = Partial<Record<LinearModule, LoRA>> | undefined;

interface AttentionContext {
  batch: number;
  length: number;
  /** RoPE tables for this call's positions, `[T, hD/2]`. */
  cos: Tensor;
  sin: Tensor;
  /** Additive causal mask `[T, S]` (S padded); absent for a single new token with no padding. */
  mask: Tensor | undefined;
  /** Masked zero positions `[B, kvH, padding, hD]` appended to every layer's keys and values. */
  keyPadding: Tensor | undefined;
}

/**
 * Attention runs over key lengths padded to a multiple of this, with the padding masked out.
 *
 * NOTE: softmax kernels that sum in SIMD lanes with a scalar tail (tfjs-wasm's) round differently for
 * different row lengths, so a token decoded against a cache of t keys came out up to 2.5e-5 away from
 * the same token in a full recompute over 85 keys (stories260K). With both lengths padded to a multiple
 * of 16 by masked columns, which add exact zeros, the two agree bit for bit.
 */
const keyBlock = 16;
