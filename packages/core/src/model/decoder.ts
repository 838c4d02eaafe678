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

  /** What every layer's attention shares in one call: its shape and the RoPE rows of its positions. */
  private attentionContext(batch: number, length: number, offset: number): AttentionContext {
    const { backend, config } = this;
    const half = config.headDim / 2;
    return {
      batch,
      length,
      offset,
      // [T, 1, hD/2]: broadcasts over the heads axis of [B, T, heads, hD].
      cos: backend.reshape(backend.slice(this.ropeCos, [offset, 0], [length, -1]), [length, 1, half]),
      sin: backend.reshape(backend.slice(this.ropeSin, [offset, 0], [length, -1]), [length, 1, half]),
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
    const { batch, length, offset } = context;
    const { numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim } = config;
    // [B·T, heads·hD] → [B, T, heads, hD]: a free reshape; the attention op takes this layout as it is.
    const split = (y: Tensor, count: number) => backend.reshape(y, [batch, length, count, headDim]);
    const queries = backend.rope(
      split(this.project(x, weights.linears.q_proj, loras?.q_proj), heads),
      context.cos,
      context.sin,
    );
    const keys = backend.rope(
      split(this.project(x, weights.linears.k_proj, loras?.k_proj), kvHeads),
      context.cos,
      context.sin,
    );
    const values = split(this.project(x, weights.linears.v_proj, loras?.v_proj), kvHeads);
    // With a cache, attention reads its buffers [B, capacity, kvH, hD] up to the filled length.
    const cached = cache ? cache.updateAndFetch(keys, values) : { keys, values, length };
    const mixed = backend.attention(queries, cached.keys, cached.values, {
      scale: 1 / Math.sqrt(headDim),
      queryOffset: offset,
      keyLength: cached.length,
    }); // [B, T, H, hD]
    return this.project(
      backend.reshape(mixed, [batch * length, heads * headDim]),
      weights.linears.o_proj,
      loras?.o_proj,
    );
  }

  private mlp(x: Tensor, weights: LayerWeights, loras: LoRAs): Tensor {
    const { backend, config } = this;
    const gate = this.project(x, weights.linears.gate_proj, loras?.gate_proj);
    const up = this.project(x, weights.linears.up_proj, loras?.up_proj);
    const activated = backend.gatedActivation(gate, up, config.hiddenAct === 'silu' ? 'silu' : 'gelu-tanh');
    return this.project(activated, weights.linears.down_proj, loras?.down_proj);
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
  /** Position of this call's first token (what the cache held before it). */
  offset: number;
  /** RoPE tables for this call's positions, `[T, 1, hD/2]`. */
  cos: Tensor;
  sin: Tensor;
}
