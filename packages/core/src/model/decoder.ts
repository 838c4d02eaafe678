import { type KeyValues, type KVCache, KVCacheError } from '@rrt/kv-cache';
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

/** Keys and values of one sequence at one effective depth, appended to in place (a `LayerKVCache` is one). */
export interface LayerKV {
  /** Appends `[batch, newLength, kvHeads, headDim]` keys and values; returns everything cached, them included. */
  updateAndFetch(keys: Tensor, values: Tensor): KeyValues;
}

/** `batch × length` consecutive rows of a ragged step, at positions `offset … offset + length − 1`. */
export interface RowSpan {
  /** Sequences in this span that share its positions and its KV layout (1 in a serving step). */
  batch: number;
  /** Consecutive positions per sequence: 1 for a decode row, more for a prefill chunk. */
  length: number;
  /** Position of the span's first row: what its KV history holds before it. */
  offset: number;
}

/** The ragged rows of one step ({@link Decoder.rows}); rows are in span order. */
export interface RaggedRows {
  /** The spans, in row order. */
  readonly spans: readonly RowSpan[];
  /** M, the number of rows. */
  readonly count: number;
  /** RoPE cosines of each row's position, `[M, 1, rotaryDim/2]` (`rotaryDim` is `headDim` but for GPT-NeoX). */
  readonly cos: Tensor;
  /** RoPE sines of each row's position, `[M, 1, rotaryDim/2]`. */
  readonly sin: Tensor;
  /** Frees `cos` and `sin`. */
  dispose(): void;
}

/** What span `i` of a {@link Decoder.layer} call runs at: its effective depth and its KV there. */
export interface SpanLayer {
  /** Effective depth (`loop·K + blockLayer` for `cycle`): selects the stored layer and the loop's LoRA. */
  depth: number;
  /** The span's KV history at this depth; without one the span attends only to its own rows. */
  cache?: LayerKV;
}

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
 * and Gemma differ only in config-driven details (bias, norm offset, embedding scale, activation);
 * GPT-NeoX in a few more (LayerNorm with bias, parallel residual, partial rotary, non-gated MLP).
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
    // Partial rotary (GPT-NeoX): the frequencies are those of a head of rotaryDim dimensions.
    const { cos, sin } = ropeTables({ ...config, headDim: config.rotaryDim });
    const shape = [config.maxPositionEmbeddings, config.rotaryDim / 2];
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
    // tidy returns a flat list of tensors; the output record is rebuilt from it afterwards.
    const loopMeta: { loopIndex: number; depth: number; final: boolean }[] = [];
    const [logits, ...loopTensors] = backend.tidy(() => {
      // The whole call is one span of the step API: [B, T] rows starting at the cache's offset.
      const rows = this.rows([{ batch, length, offset }]);
      let hidden = this.embed(backend.reshape(inputIds, [batch * length])); // [B·T, d]
      const outputs: Tensor[] = [];
      for (const layer of this.schedule) {
        const cache = options.cache?.layers[layer.depth];
        hidden = this.layer(hidden, rows, [{ depth: layer.depth, ...(cache ? { cache } : {}) }]);
        if (options.loopOutputs && this.exitAfter.has(layer.depth)) {
          // middle-cycle's unique last layer reports the pass it follows, not its own loop 0.
          const loopIndex = layer.shared ? layer.loopIndex : (loopMeta[loopMeta.length - 1]?.loopIndex ?? 0);
          loopMeta.push({ loopIndex, depth: layer.depth, final: layer.depth === this.schedule.length - 1 });
          outputs.push(
            backend.reshape(hidden, [batch, length, config.hiddenSize]),
            this.readoutOf(hidden, batch, length, options),
          );
        }
      }
      const finalLogits =
        outputs.length > 0 ? outputs[outputs.length - 1]! : this.readoutOf(hidden, batch, length, options);
      return [finalLogits, ...outputs];
    });
    const loops = loopMeta.map((meta, index) => ({
      ...meta,
      hidden: loopTensors[2 * index]!,
      logits: loopTensors[2 * index + 1]!,
    }));
    return { logits: logits!, loops };
  }

  // ---- the step API: the pieces forward and a serving engine compose ----

  /**
   * Embeds int32 token ids `[M]` into hidden rows `[M, hidden]` (the embedding scale applied).
   *
   * @example
   * ```ts
   * const hidden = model.embed(backend.fromArray(Int32Array.from([1, 42]), [2], 'int32'));
   * ```
   */
  embed(ids: Tensor): Tensor {
    const { backend, config } = this;
    return backend.tidy(() => {
      const hidden = backend.gather(this.weights.embedding, ids);
      return config.embeddingScale !== 1 ? backend.mul(hidden, config.embeddingScale) : hidden;
    });
  }

  /**
   * Describes a ragged set of rows for {@link Decoder.layer}: spans in order, each `batch × length` rows
   * at positions `offset …`. Holds the RoPE rows of every row's position; dispose it with
   * {@link RaggedRows.dispose} (or create it inside a `tidy`).
   *
   * @example
   * ```ts
   * // Sequence A decodes its token at position 17, sequence B prefills a chunk of 4 at positions 0…3.
   * const rows = model.rows([{ batch: 1, length: 1, offset: 17 }, { batch: 1, length: 4, offset: 0 }]);
   * ```
   */
  rows(spans: readonly RowSpan[]): RaggedRows {
    const { backend, config } = this;
    const positions: number[] = [];
    for (const { batch, length, offset } of spans) {
      if (offset + length > config.maxPositionEmbeddings) {
        throw new RangeError(
          `positions ${offset}…${offset + length - 1} exceed max_position_embeddings ${config.maxPositionEmbeddings}`,
        );
      }
      for (let b = 0; b < batch; b++) for (let t = 0; t < length; t++) positions.push(offset + t);
    }
    const count = positions.length;
    const half = config.rotaryDim / 2;
    const { cos, sin } = backend.tidy(() => {
      const index = backend.fromArray(Int32Array.from(positions), [count], 'int32');
      // [M, 1, hD/2]: broadcasts over the heads axis of the rows seen as [1, M, heads, hD].
      return {
        cos: backend.reshape(backend.gather(this.ropeCos, index), [count, 1, half]),
        sin: backend.reshape(backend.gather(this.ropeSin, index), [count, 1, half]),
      };
    });
    return { spans, count, cos, sin, dispose: () => backend.dispose([cos, sin]) };
  }

  /**
   * Runs one stored layer over ragged rows `hidden: [M, hidden]`: span `i` runs at effective depth
   * `spanLayers[i].depth` (that depth's loop LoRA) and reads and appends its own KV history at that depth
   * (`spanLayers[i].cache`; without one a span attends only to its own rows). Every depth must map to the
   * same stored layer: the shared weights run once over all rows, the LoRAs by segment.
   *
   * NOTE: each row's result depends only on its own row and its own span's keys, so a span gets bit for
   * bit what {@link Decoder.forward} computes for that sequence alone (asserted on cpu and wasm).
   */
  layer(hidden: Tensor, rows: RaggedRows, spanLayers: readonly SpanLayer[]): Tensor {
    const { backend, config } = this;
    const { weights, step } = this.layerStep(rows, spanLayers);
    return backend.tidy(() => {
      const attentionIn = this.norm(hidden, weights.inputNorm, weights.inputNormBias);
      const attention = this.attention(attentionIn, weights, step);
      if (config.parallelResidual) {
        // GPT-NeoX: both branches read the layer's input, x + attn(ln₁(x)) + mlp(ln₂(x)), summed as HF does.
        const mlpIn = this.norm(hidden, weights.postAttentionNorm, weights.postAttentionNormBias);
        return backend.add(backend.add(this.mlp(mlpIn, weights, step), attention), hidden);
      }
      const afterAttention = backend.add(hidden, attention);
      const mlpIn = this.norm(afterAttention, weights.postAttentionNorm, weights.postAttentionNormBias);
      return backend.add(afterAttention, this.mlp(mlpIn, weights, step));
    });
  }

  /**
   * Appends, for every span, the keys and values that stored layer's attention would compute from
   * `hidden: [M, hidden]` at `spanLayers[i].depth` (input norm, K/V projections with that loop's LoRA,
   * RoPE) to `spanLayers[i].cache`, without running attention: CALM-style state propagation, which fills
   * the depths a token skipped by exiting early from its exit hidden state.
   */
  appendKV(hidden: Tensor, rows: RaggedRows, spanLayers: readonly SpanLayer[]): void {
    const { backend } = this;
    const { weights, step } = this.layerStep(rows, spanLayers);
    backend.tidy(() => {
      const x = this.norm(hidden, weights.inputNorm, weights.inputNormBias);
      const { keys, values } = this.keysAndValues(x, weights, step);
      this.forEachSpan(step, keys, values, (_span, index, spanKeys, spanValues) => {
        step.caches[index]?.updateAndFetch(spanKeys, spanValues);
      });
    });
  }

  /** Final norm and output head of any hidden rows: `[R, hidden]` → logits `[R, vocab]`. */
  readout(hidden: Tensor): Tensor {
    const { backend } = this;
    return backend.tidy(() => {
      const normed = this.norm(hidden, this.weights.finalNorm, this.weights.finalNormBias);
      return this.project(normed, { weight: this.weights.lmHead }, [undefined], [hidden.shape[0]!]);
    });
  }

  /** Frees every tensor of the model, its weights included. */
  dispose(): void {
    disposeWeights(this.backend, this.weights);
    this.backend.dispose([this.ropeCos, this.ropeSin]);
  }

  /** forward's readout: `[B·T, d]` → `[B, T, vocab]` (or `[B, 1, vocab]` with `lastPositionOnly`). */
  private readoutOf(
    hidden: Tensor,
    batch: number,
    length: number,
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
    return backend.reshape(this.readout(rows), [batch, lastOnly ? 1 : length, config.vocabSize]);
  }

  /** The stored layer, LoRAs and caches of one layer call; every depth must map to one stored layer. */
  private layerStep(
    rows: RaggedRows,
    spanLayers: readonly SpanLayer[],
  ): { weights: LayerWeights; step: LayerStep } {
    if (spanLayers.length !== rows.spans.length) {
      throw new RangeError(`${rows.spans.length} spans but ${spanLayers.length} span layers`);
    }
    const layers = spanLayers.map(({ depth }) => {
      const layer = this.schedule[depth];
      if (!layer) throw new RangeError(`depth ${depth} is outside the model's 0…${this.schedule.length - 1}`);
      return layer;
    });
    const blockLayer = layers[0]!.blockLayer;
    if (layers.some((layer) => layer.blockLayer !== blockLayer)) {
      throw new RangeError(
        `one layer call runs one stored layer; depths ${spanLayers.map((s) => s.depth)} map to several`,
      );
    }
    const loras = layers.map((layer) =>
      layer.shared ? this.weights.loras.get(loraKey(layer.loopIndex, layer.blockLayer)) : undefined,
    );
    return {
      weights: this.weights.layers[blockLayer]!,
      step: { rows, loras, caches: spanLayers.map((s) => s.cache) },
    };
  }

  /** Keys and values of rows `x` (normed), `[1, M, kvHeads, hD]`, RoPE applied. */
  private keysAndValues(x: Tensor, weights: LayerWeights, step: LayerStep): { keys: Tensor; values: Tensor } {
    const { backend, config } = this;
    const { count, cos, sin, spans } = step.rows;
    const spanRows = spans.map((s) => s.batch * s.length);
    const loras = (module: LinearModule) => step.loras.map((l) => l?.[module]);
    const split = (y: Tensor) => backend.reshape(y, [1, count, config.numKeyValueHeads, config.headDim]);
    return {
      keys: this.rotate(split(this.project(x, weights.linears.k_proj, loras('k_proj'), spanRows)), cos, sin),
      values: split(this.project(x, weights.linears.v_proj, loras('v_proj'), spanRows)),
    };
  }

  /** Calls `fn` with each span's rows of `[1, M, n, hD]` tensors, each as `[B, T, n, hD]`. */
  private forEachSpan<T>(
    step: LayerStep,
    keys: Tensor,
    values: Tensor,
    fn: (span: RowSpan, index: number, keys: Tensor, values: Tensor, part: (y: Tensor) => Tensor) => T,
  ): T[] {
    const { backend } = this;
    const { spans } = step.rows;
    let start = 0;
    return spans.map((span, index) => {
      const { batch, length } = span;
      const from = start;
      const part = (y: Tensor) =>
        backend.reshape(
          spans.length === 1 ? y : backend.slice(y, [0, from, 0, 0], [1, batch * length, -1, -1]),
          [batch, length, y.shape[2]!, y.shape[3]!],
        );
      start += batch * length;
      return fn(span, index, part(keys), part(values), part);
    });
  }

  private attention(x: Tensor, weights: LayerWeights, step: LayerStep): Tensor {
    const { backend, config } = this;
    const { spans, count, cos, sin } = step.rows;
    const { numAttentionHeads: heads, headDim } = config;
    const spanRows = spans.map((s) => s.batch * s.length);
    const qLoras = step.loras.map((l) => l?.q_proj);
    // [M, heads·hD] → [1, M, heads, hD]: a free reshape; RoPE is per row, by each row's own position.
    const queries = this.rotate(
      backend.reshape(this.project(x, weights.linears.q_proj, qLoras, spanRows), [1, count, heads, headDim]),
      cos,
      sin,
    );
    const { keys, values } = this.keysAndValues(x, weights, step);
    // Attention runs per span, each against its own history ([B, T, heads, hD] after a free reshape).
    const mixed = this.forEachSpan(step, keys, values, (span, index, spanKeys, spanValues, part) => {
      const { batch, length, offset } = span;
      const cache = step.caches[index];
      const cached = cache
        ? cache.updateAndFetch(spanKeys, spanValues)
        : { keys: spanKeys, values: spanValues, length };
      const out = backend.attention(part(queries), cached.keys, cached.values, {
        scale: 1 / Math.sqrt(headDim),
        queryOffset: offset,
        keyLength: cached.length,
      }); // [B, T, H, hD]
      return backend.reshape(out, [batch * length, heads * headDim]);
    });
    const joined = mixed.length === 1 ? mixed[0]! : backend.concat(mixed, 0);
    const oLoras = step.loras.map((l) => l?.o_proj);
    return this.project(joined, weights.linears.o_proj, oLoras, spanRows);
  }

  private mlp(x: Tensor, weights: LayerWeights, step: LayerStep): Tensor {
    const { backend, config } = this;
    const loras = (module: LinearModule) => step.loras.map((l) => l?.[module]);
    const spanRows = step.rows.spans.map((s) => s.batch * s.length);
    if (!weights.linears.gate_proj) {
      // GPT-NeoX: down(gelu(up(x))), no gate.
      const up = this.project(x, weights.linears.up_proj, loras('up_proj'), spanRows);
      return this.project(backend.gelu(up), weights.linears.down_proj, loras('down_proj'), spanRows);
    }
    const gate = this.project(x, weights.linears.gate_proj, loras('gate_proj'), spanRows);
    const up = this.project(x, weights.linears.up_proj, loras('up_proj'), spanRows);
    const activated = backend.gatedActivation(gate, up, config.hiddenAct === 'silu' ? 'silu' : 'gelu-tanh');
    return this.project(activated, weights.linears.down_proj, loras('down_proj'), spanRows);
  }

  /**
   * `x·W (+ b) (+ scale·(x·Aᵀ)·Bᵀ)` on `x: [rows, in]` → `[rows, out]`. The shared product runs once over
   * all rows; LoRA by segment: span `i` (`spanRows[i]` rows) gets `loras[i]`. Consecutive spans with the
   * same LoRA share one product (all of them, when the whole call runs at one loop).
   */
  private project(
    x: Tensor,
    linear: Linear,
    loras: readonly (LoRA | undefined)[],
    spanRows: readonly number[],
  ): Tensor {
    const { backend } = this;
    let y = backend.matmul(x, linear.weight);
    if (linear.bias) y = backend.add(y, linear.bias);
    if (loras.every((lora) => lora === undefined)) return y;
    if (loras.every((lora) => lora === loras[0])) return backend.add(y, this.loraDelta(x, loras[0]!));
    // Segments: runs of spans with the same LoRA, each its own small product; rows without one get 0.
    const deltas: Tensor[] = [];
    let start = 0;
    for (let i = 0; i < loras.length; ) {
      let end = i + 1;
      let rows = spanRows[i]!;
      while (end < loras.length && loras[end] === loras[i]) rows += spanRows[end++]!;
      const lora = loras[i];
      const segment = backend.slice(x, [start, 0], [rows, -1]);
      deltas.push(lora ? this.loraDelta(segment, lora) : backend.fill([rows, y.shape[1]!], 0));
      start += rows;
      i = end;
    }
    return backend.add(y, backend.concat(deltas, 0));
  }

  /** `scale·((x·Aᵀ)·Bᵀ + b_B)` of one LoRA on `x: [rows, in]` (`b_B`, PEFT's `lora_B.bias`, when it has one). */
  private loraDelta(x: Tensor, lora: LoRA): Tensor {
    const { backend } = this;
    const product = backend.matmul(backend.matmul(x, lora.a), lora.b);
    return backend.mul(lora.bias ? backend.add(product, lora.bias) : product, lora.scale);
  }

  /** The config's norm of rows `x`: RMSNorm, or LayerNorm with its bias. */
  private norm(x: Tensor, weight: Tensor, bias: Tensor | undefined): Tensor {
    const { backend, config } = this;
    if (config.normType === 'layer') return backend.layerNorm(x, weight, bias!, config.rmsNormEps);
    return backend.rmsNorm(x, weight, config.rmsNormEps);
  }

  /**
   * RoPE on heads `x: [1, M, n, hD]`: all of each head, or (GPT-NeoX's partial rotary) its first
   * `rotaryDim` dimensions, rotate-half within them, the rest passed through.
   */
  private rotate(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    const { backend, config } = this;
    const { rotaryDim, headDim } = config;
    if (rotaryDim === headDim) return backend.rope(x, cos, sin);
    const rotated = backend.rope(backend.slice(x, [0, 0, 0, 0], [-1, -1, -1, rotaryDim]), cos, sin);
    const passed = backend.slice(x, [0, 0, 0, rotaryDim], [-1, -1, -1, headDim - rotaryDim]);
    return backend.concat([rotated, passed], 3);
  }
}

type LoRAs = Partial<Record<LinearModule, LoRA>> | undefined;

/** One call of {@link Decoder.layer}: the rows, and per span its LoRAs and its KV history. */
interface LayerStep {
  rows: RaggedRows;
  loras: readonly LoRAs[];
  caches: readonly (LayerKV | undefined)[];
}
