import { type KeyValues, type KVCache, KVCacheError, type PagedKeyValues } from '@rrt/kv-cache';
import type { Backend, PagedAttentionOptions, Tensor } from '@rrt/tensor';
import type { ModelConfig } from './config.js';
import { ropeTables } from './rope.js';
import {
  type EffectiveLayer,
  exitDepths,
  type LinearModule,
  type LoopNorm,
  layerSchedule,
  linearModules,
} from './recursion.js';
import {
  disposeWeights,
  type LayerWeights,
  type Linear,
  type LoopNorms,
  type LoRA,
  loraKey,
  type ModelWeights,
} from './weights.js';

/** Keys and values of one sequence at one effective depth, appended to in place (a `LayerKVCache` is one). */
export interface LayerKV {
  /** Appends `[batch, newLength, kvHeads, headDim]` keys and values; returns everything cached, them included. */
  updateAndFetch(keys: Tensor, values: Tensor): KeyValues;
  /**
   * Takes `newLength` positions in a paged pool and says which pool rows to write them to and where the
   * history lives, instead of a copy of it (a `PagedLayer` has it). When every span of a layer call has
   * one, the decoder writes all spans' keys and values in one `Backend.writeRows` per pool and attends
   * in one `Backend.pagedAttention` call per pool.
   */
  appendSlots?(newLength: number): PagedKeyValues;
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
  /** Gemma 3: the local (sliding) layers' RoPE cosines of each row, `[M, 1, headDim/2]` (own base, unscaled). */
  readonly localCos?: Tensor;
  /** Gemma 3: the local layers' RoPE sines of each row. */
  readonly localSin?: Tensor;
  /** Frees `cos` and `sin` (and the local tables). */
  dispose(): void;
}

/** What span `i` of a {@link Decoder.layer} call runs at: its effective depth and its KV there. */
export interface SpanLayer {
  /** Effective depth (`loop·K + blockLayer` for `cycle`): selects the stored layer and the loop's LoRA. */
  depth: number;
  /** The span's KV history at this depth; without one the span attends only to its own rows. */
  cache?: LayerKV;
}

/**
 * How a layer call whose rows run at different loops applies the loops' LoRAs ({@link DecoderOptions}):
 * - `segment`: rows grouped by LoRA (runs of spans at one loop), one small product per segment, joined;
 * - `masked`: the paper's concatenation (Bae et al. §3.3): every loop's `Aᵀ` side by side `[in, L·r]` and
 *   `Bᵀ` stacked `[L·r, out]`, `x·A_cat` times a per-row mask that keeps only the row's own loop's `r`
 *   columns, then `·B_cat`: two products for any mix of loops.
 *
 * - `fused`: every loop's `A` stacked `[L·r, in]` and `Bᵀ` stacked `[L·r, out]`, and one
 *   {@link Backend.addLowRank} per projection that gives each run of rows its own loop's rows of the stacks
 *   (Punica's SGMV): one dispatch for any mix of loops, each row's update computed alone, so a row gets
 *   the same bits whatever loops the other rows of its batch run at.
 *
 * In `segment` and `masked` mode a call whose rows all run at one loop uses that loop's LoRA alone; in
 * `fused` mode it is one segment of the same op.
 */
export type LoRAMode = 'segment' | 'masked' | 'fused';

/** Options of the {@link Decoder} constructor (and of `loadModel`). */
export interface DecoderOptions {
  /** Default `fused` (fastest in bench/multi-lora.ts on wasm for stories260K's relaxed 1×5). */
  loraMode?: LoRAMode;
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
 * {@link layerSchedule}, each effective layer with its loop's LoRA when it has one. Llama, Mistral, Qwen2/3
 * and Gemma 1/2/3 differ only in config-driven details (bias, norm offset, embedding scale, activation,
 * q/k norms, norms around each sublayer, sliding windows, soft-caps, local RoPE); GPT-NeoX in a few more
 * (LayerNorm with bias, parallel residual, partial rotary, non-gated MLP).
 */
export class Decoder {
  /** The schedule of effective layers, depth 0 first. */
  readonly schedule: readonly EffectiveLayer[];
  private readonly exitAfter: ReadonlySet<number>;
  /**
   * RoPE cosines and sines of every position, `[maxPositions, rotaryDim/2]` row-major, kept on the host:
   * {@link Decoder.rows} copies each row's position out of them (see the note there).
   */
  private readonly rope: RopeTables;
  /** Gemma 3's local layers' tables (own base, unscaled). */
  private readonly localRope: RopeTables | undefined;
  /** How mixed-loop layer calls apply LoRAs. */
  readonly loraMode: LoRAMode;
  /** `masked` mode: each LoRA's concatenation (its stored layer and module, every loop) and its columns. */
  private readonly loraColumns = new Map<LoRA, LoRAColumns>();
  /** `fused` mode: each LoRA's stack (its stored layer and module, every loop) and its rows there. */
  private readonly loraRows = new Map<LoRA, LoRARows>();

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    options: DecoderOptions = {},
  ) {
    this.schedule = layerSchedule(config.recursion, config.numHiddenLayers);
    this.exitAfter = new Set(exitDepths(config.recursion, config.numHiddenLayers));
    // Partial rotary (GPT-NeoX): the frequencies are those of a head of rotaryDim dimensions.
    this.rope = ropeTables({ ...config, headDim: config.rotaryDim });
    if (config.localRopeTheta !== undefined) {
      // Gemma 3's local layers: their own base, and none of the global layers' rope_scaling.
      this.localRope = ropeTables({
        ...config,
        headDim: config.rotaryDim,
        ropeTheta: config.localRopeTheta,
        ropeScaling: { type: 'none' },
      });
    }
    this.loraMode = options.loraMode ?? 'fused';
    if (this.loraMode === 'masked') this.concatenateLoras();
    if (this.loraMode === 'fused') this.stackLoras();
  }

  /** The LoRAs of every stored layer and module, grouped by those (loop order), for `masked` and `fused`. */
  private loraGroups(minimum: number): LoRA[][] {
    const { weights } = this;
    const groups: LoRA[][] = [];
    for (let blockLayer = 0; blockLayer < weights.layers.length; blockLayer++) {
      const loops = [
        ...new Set(
          this.schedule.filter((l) => l.shared && l.blockLayer === blockLayer).map((l) => l.loopIndex),
        ),
      ];
      for (const module of linearModules) {
        const loras = loops
          .map((loop) => weights.loras.get(loraKey(loop, blockLayer))?.[module])
          .filter((lora): lora is LoRA => lora !== undefined);
        if (loras.length >= minimum) groups.push(loras);
      }
    }
    return groups;
  }

  /**
   * `fused` mode: for every stored layer and module, its loops' `A` (`[r, in]`, the transpose of the
   * stored `Aᵀ`) and `Bᵀ` stacked along rows in loop order, kept for the model's lifetime; with LoRA
   * biases (GPT-NeoX conversions) also their scaled values `[L + 1, out]`, a last row of zeros for rows
   * without a LoRA.
   */
  private stackLoras(): void {
    const { backend } = this;
    for (const loras of this.loraGroups(1)) {
      const stack: LoRAStack = {
        aRows: backend.tidy(() =>
          backend.concat(
            loras.map((lora) => backend.transpose(lora.a)),
            0,
          ),
        ),
        bRows: backend.keep(
          backend.concat(
            loras.map((lora) => lora.b),
            0,
          ),
        ),
        ...(loras.some((lora) => lora.bias)
          ? {
              bias: backend.tidy(() =>
                backend.concat(
                  [
                    ...loras.map((lora) =>
                      lora.bias
                        ? backend.mul(backend.reshape(lora.bias, [1, -1]), lora.scale)
                        : backend.fill([1, lora.b.shape[1]!], 0),
                    ),
                    backend.fill([1, loras[0]!.b.shape[1]!], 0),
                  ],
                  0,
                ),
              ),
            }
          : {}),
      };
      let start = 0;
      for (const [index, lora] of loras.entries()) {
        this.loraRows.set(lora, { stack, start, index });
        start += lora.a.shape[1]!;
      }
    }
  }

  /**
   * `masked` mode: for every stored layer and module, its loops' LoRAs concatenated once (`Aᵀ` along
   * columns, `Bᵀ` along rows, loop order), kept for the model's lifetime.
   */
  private concatenateLoras(): void {
    const { backend } = this;
    for (const loras of this.loraGroups(2)) {
      const scales = new Set(loras.map((lora) => lora.scale));
      const scale = scales.size === 1 ? loras[0]!.scale : undefined;
      const group: LoRAConcat = {
        a: backend.keep(
          backend.concat(
            loras.map((lora) => lora.a),
            1,
          ),
        ),
        b: backend.keep(
          backend.concat(
            loras.map((lora) => lora.b),
            0,
          ),
        ),
        width: loras.reduce((width, lora) => width + lora.a.shape[1]!, 0),
        scale,
        layout: loras.map((lora) => `${lora.a.shape[1]}:${scale === undefined ? lora.scale : 1}`).join(','),
        // LoRA biases (GPT-NeoX conversions) stacked `[L, out]`; a loop without one contributes zeros.
        ...(loras.some((lora) => lora.bias)
          ? {
              bias: backend.tidy(() =>
                backend.concat(
                  loras.map((lora) =>
                    lora.bias ? backend.reshape(lora.bias, [1, -1]) : backend.fill([1, lora.b.shape[1]!], 0),
                  ),
                  0,
                ),
              ),
            }
          : {}),
      };
      let start = 0;
      for (const [index, lora] of loras.entries()) {
        this.loraColumns.set(lora, { group, start, index });
        start += lora.a.shape[1]!;
      }
    }
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
    const { localRope } = this;
    // [M, 1, hD/2]: broadcasts over the heads axis of the rows seen as [1, M, heads, hD]. Each row is
    // copied from the host table (the same float32 values a gather of a device table would give), so a
    // step pays one upload per table, not an index upload, a gather and a reshape (a depth-wise step
    // makes its rows once per loop of every token).
    const rowsOf = (table: Float32Array) => {
      const values = new Float32Array(count * half);
      for (let row = 0; row < count; row++) {
        // An element loop: a subarray per row costs more than copying a head's few pairs.
        const from = positions[row]! * half;
        for (let i = 0, to = row * half; i < half; i++) values[to + i] = table[from + i]!;
      }
      return backend.fromArray(values, [count, 1, half]);
    };
    const tables = {
      cos: rowsOf(this.rope.cos),
      sin: rowsOf(this.rope.sin),
      ...(localRope ? { localCos: rowsOf(localRope.cos), localSin: rowsOf(localRope.sin) } : {}),
    };
    return { spans, count, ...tables, dispose: () => backend.dispose(Object.values(tables)) };
  }

  /**
   * Runs one stored layer over ragged rows `hidden: [M, hidden]`: span `i` runs at effective depth
   * `spanLayers[i].depth` (that depth's loop LoRA) and reads and appends its own KV history at that depth
   * (`spanLayers[i].cache`; without one a span attends only to its own rows). Every depth must map to the
   * same stored layer: the shared weights run once over all rows, the LoRAs by segment.
   *
   * NOTE: each row's result depends only on its own row and its own span's keys, so a span gets bit for
   * bit what {@link Decoder.forward} computes for that sequence alone (asserted on cpu and wasm) with
   * `segment` LoRAs, and with `masked` ones while the loops' summed rank fits one block of the backend's
   * matmul; beyond that (a full-rank relaxation) the expand product's float32 summation order differs,
   * ~1e-7 relative (asserted ≤ 2e-6 in convert's families test).
   */
  layer(hidden: Tensor, rows: RaggedRows, spanLayers: readonly SpanLayer[]): Tensor {
    const { backend, config } = this;
    const { weights, step } = this.layerStep(rows, spanLayers);
    return backend.tidy(() => {
      const attentionIn = this.norm(hidden, weights.inputNorm, weights.inputNormBias);
      if (config.parallelResidual) {
        // GPT-NeoX: both branches read the layer's input, x + attn(ln₁(x)) + mlp(ln₂(x)), summed as HF does.
        const attention = this.attention(attentionIn, weights, step);
        const mlpIn = this.norm(hidden, weights.postAttentionNorm, weights.postAttentionNormBias);
        return backend.add(backend.add(this.mlp(mlpIn, weights, step), attention), hidden);
      }
      if (!config.sandwichNorms) {
        const afterAttention = backend.add(hidden, this.attention(attentionIn, weights, step));
        const mlpIn = this.norm(afterAttention, weights.postAttentionNorm, weights.postAttentionNormBias);
        return backend.add(afterAttention, this.mlp(mlpIn, weights, step));
      }
      // Gemma 2/3: each sublayer's output is normalised before it joins the residual stream.
      const attended = this.attention(attentionIn, weights, step);
      const afterAttention = backend.add(
        hidden,
        this.normBySpan(attended, step, 'post_attention_layernorm', weights.postAttentionNorm),
      );
      const mlpIn = backend.rmsNorm(afterAttention, weights.preFeedforwardNorm!, config.rmsNormEps);
      const mlpOut = this.mlp(mlpIn, weights, step);
      return backend.add(
        afterAttention,
        this.normBySpan(mlpOut, step, 'post_feedforward_layernorm', weights.postFeedforwardNorm!),
      );
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
      if (this.allPaged(step)) {
        // Paged caches take the rows in place, without gathering the history back (nothing reads it here).
        this.writePaged(step, this.pagedSlots(step), keys, values);
        return;
      }
      this.forEachSpan(step, keys, values, (_span, index, spanKeys, spanValues) => {
        step.caches[index]?.updateAndFetch(spanKeys, spanValues);
      });
    });
  }

  /** Final norm and output head of any hidden rows: `[R, hidden]` → logits `[R, vocab]`. */
  readout(hidden: Tensor): Tensor {
    const { backend, config } = this;
    return backend.tidy(() => {
      const normed = this.norm(hidden, this.weights.finalNorm, this.weights.finalNormBias);
      const logits = this.project(normed, { weight: this.weights.lmHead }, [undefined], [hidden.shape[0]!]);
      const cap = config.finalSoftCap;
      // Gemma 2's final soft-capping: cap·tanh(logits/cap).
      return cap === undefined ? logits : backend.mul(backend.tanh(backend.div(logits, cap)), cap);
    });
  }

  /** Frees every tensor of the model, its weights included. */
  dispose(): void {
    disposeWeights(this.backend, this.weights);
    const groups = new Set([...this.loraColumns.values()].map(({ group }) => group));
    for (const group of groups)
      this.backend.dispose(group.bias ? [group.a, group.b, group.bias] : [group.a, group.b]);
    this.loraColumns.clear();
    const stacks = new Set([...this.loraRows.values()].map(({ stack }) => stack));
    for (const stack of stacks)
      this.backend.dispose(stack.bias ? [stack.aRows, stack.bRows, stack.bias] : [stack.aRows, stack.bRows]);
    this.loraRows.clear();
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
    const loopNorms = layers.map((layer) =>
      layer.shared ? this.weights.loopNorms?.get(loraKey(layer.loopIndex, layer.blockLayer)) : undefined,
    );
    // Every depth of one stored layer has its window (resolveConfig refuses a schedule where they differ).
    const window = this.config.layerWindows[layers[0]!.depth];
    const local = window !== undefined && rows.localCos !== undefined;
    return {
      weights: this.weights.layers[blockLayer]!,
      step: {
        rows,
        spanRows: rows.spans.map((span) => span.batch * span.length),
        loras,
        loopNorms,
        caches: spanLayers.map((s) => s.cache),
        window,
        cos: local ? rows.localCos! : rows.cos,
        sin: local ? rows.localSin! : rows.sin,
        masks: new Map(),
      },
    };
  }

  /** Keys and values of rows `x` (normed), `[1, M, kvHeads, hD]`, RoPE applied (after the k norm, if any). */
  private keysAndValues(x: Tensor, weights: LayerWeights, step: LayerStep): { keys: Tensor; values: Tensor } {
    const { backend, config } = this;
    const { count } = step.rows;
    const { spanRows } = step;
    const loras = (module: LinearModule) => step.loras.map((l) => l?.[module]);
    const split = (y: Tensor) => backend.reshape(y, [count, config.numKeyValueHeads, config.headDim]);
    let keys = split(this.project(x, weights.linears.k_proj, loras('k_proj'), spanRows, step.masks));
    if (weights.kNorm) keys = this.normBySpan(keys, step, 'k_norm', weights.kNorm);
    return {
      keys: this.rotate(
        backend.reshape(keys, [1, count, config.numKeyValueHeads, config.headDim]),
        step.cos,
        step.sin,
      ),
      values: backend.reshape(
        this.project(x, weights.linears.v_proj, loras('v_proj'), spanRows, step.masks),
        [1, count, config.numKeyValueHeads, config.headDim],
      ),
    };
  }

  /**
   * RMSNorm of rows `x: [M, ...]` over the last axis: each span with its loop's own weight where the
   * model stores `norm` per loop, `shared` elsewhere. Consecutive spans with one weight share one norm.
   */
  private normBySpan(x: Tensor, step: LayerStep, norm: LoopNorm, shared: Tensor): Tensor {
    const { backend, config } = this;
    const weights = step.loopNorms.map((perNorm) => perNorm?.[norm] ?? shared);
    const runs = spanRuns(weights, step.spanRows);
    if (runs.length === 1) return backend.rmsNorm(x, weights[0]!, config.rmsNormEps);
    const parts = runs.map(({ value, start, rows }) => {
      const begin = x.shape.map((_, axis) => (axis === 0 ? start : 0));
      const size = x.shape.map((_, axis) => (axis === 0 ? rows : -1));
      return backend.rmsNorm(backend.slice(x, begin, size), value, config.rmsNormEps);
    });
    return backend.concat(parts, 0);
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
    const { count } = step.rows;
    const { spanRows } = step;
    const { numAttentionHeads: heads, headDim } = config;
    const qLoras = step.loras.map((l) => l?.q_proj);
    // [M, heads·hD] → [1, M, heads, hD]: a free reshape; RoPE is per row, by each row's own position.
    let projected = backend.reshape(this.project(x, weights.linears.q_proj, qLoras, spanRows, step.masks), [
      count,
      heads,
      headDim,
    ]);
    if (weights.qNorm) projected = this.normBySpan(projected, step, 'q_norm', weights.qNorm);
    const queries = this.rotate(backend.reshape(projected, [1, count, heads, headDim]), step.cos, step.sin);
    const { keys, values } = this.keysAndValues(x, weights, step);
    const oLoras = step.loras.map((l) => l?.o_proj);
    // The options every span shares: the query scale, the stored layer's window, the score soft-cap.
    const shared = {
      scale: config.attentionScale,
      ...(step.window !== undefined ? { window: step.window } : {}),
      ...(config.attentionSoftCap !== undefined ? { softCap: config.attentionSoftCap } : {}),
    };
    if (this.allPaged(step)) {
      const joined = this.pagedAttention(step, queries, keys, values, shared);
      return this.project(joined, weights.linears.o_proj, oLoras, spanRows, step.masks);
    }
    // Attention runs per span, each against its own history ([B, T, heads, hD] after a free reshape).
    const mixed = this.forEachSpan(step, keys, values, (span, index, spanKeys, spanValues, part) => {
      const { batch, length, offset } = span;
      const cache = step.caches[index];
      const cached = cache
        ? cache.updateAndFetch(spanKeys, spanValues)
        : { keys: spanKeys, values: spanValues, length };
      const out = backend.attention(part(queries), cached.keys, cached.values, {
        ...shared,
        queryOffset: offset,
        keyLength: cached.length,
      }); // [B, T, H, hD]
      return backend.reshape(out, [batch * length, heads * headDim]);
    });
    const joined = mixed.length === 1 ? mixed[0]! : backend.concat(mixed, 0);
    return this.project(joined, weights.linears.o_proj, oLoras, spanRows, step.masks);
  }

  /**
   * Attention of spans whose caches are all paged (`appendSlots`): every span's keys and values written,
   * then one `pagedAttention` call over every run of consecutive spans that share a pool (all of them for
   * a `PagedKVCache`, whose pool holds every depth). `queries: [1, M, heads, hD]` → `[M, heads·hD]`.
   */
  private pagedAttention(
    step: LayerStep,
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    options: PagedAttentionOptions,
  ): Tensor {
    const { backend, config } = this;
    const { spans, count } = step.rows;
    const { numAttentionHeads: heads, headDim } = config;
    const histories = this.pagedSlots(step);
    this.writePaged(step, histories, keys, values);
    const samePool = (a: PagedKeyValues, b: PagedKeyValues) =>
      a.keyPool === b.keyPool && a.valuePool === b.valuePool;
    const mixed = spanRuns(histories, step.spanRows, samePool).map(({ value, first, end, start, rows }) => {
      const { keyPool, valuePool } = value;
      const group = spans.slice(first, end).map(({ length, offset }, index) => ({
        rows: length,
        queryOffset: offset,
        keyLength: histories[first + index]!.length,
        pages: histories[first + index]!.pages,
      }));
      const groupQueries =
        rows === count ? queries : backend.slice(queries, [0, start, 0, 0], [1, rows, heads, headDim]);
      const out = backend.pagedAttention(groupQueries, keyPool, valuePool, group, options);
      return backend.reshape(out, [rows, heads * headDim]);
    });
    return mixed.length === 1 ? mixed[0]! : backend.concat(mixed, 0);
  }

  /** Whether every span is one sequence with a paged cache ({@link LayerKV.appendSlots}). */
  private allPaged(step: LayerStep): boolean {
    return step.rows.spans.every((span, index) => span.batch === 1 && step.caches[index]?.appendSlots);
  }

  /** Each span's new positions in its paged cache. */
  private pagedSlots(step: LayerStep): PagedKeyValues[] {
    return step.rows.spans.map((span, index) => step.caches[index]!.appendSlots!(span.length));
  }

  /**
   * Writes the spans' new keys and values `[1, M, kvHeads, hD]` to their pool rows: all rows in one
   * `writeRows` per tensor when every span writes into one pool, else span by span.
   */
  private writePaged(step: LayerStep, slots: readonly PagedKeyValues[], keys: Tensor, values: Tensor): void {
    const { backend } = this;
    const { spans, count } = step.rows;
    const [first] = slots;
    const onePool = slots.every(
      (slot, index) =>
        slot.keyPool === first!.keyPool &&
        slot.valuePool === first!.valuePool &&
        slot.writeRows.length === spans[index]!.length,
    );
    if (onePool) {
      const rows = new Int32Array(count);
      let at = 0;
      for (const slot of slots) {
        rows.set(slot.writeRows, at);
        at += slot.writeRows.length;
      }
      backend.writeRows(first!.keyPool, rows, keys);
      backend.writeRows(first!.valuePool, rows, values);
      return;
    }
    this.forEachSpan(step, keys, values, (_span, index, spanKeys, spanValues) => {
      const slot = slots[index]!;
      if (slot.writeRows.length === 0) return;
      backend.writeRows(slot.keyPool, slot.writeRows, spanKeys);
      backend.writeRows(slot.valuePool, slot.writeRows, spanValues);
    });
  }

  private mlp(x: Tensor, weights: LayerWeights, step: LayerStep): Tensor {
    const { backend, config } = this;
    const loras = (module: LinearModule) => step.loras.map((l) => l?.[module]);
    const { spanRows } = step;
    if (!weights.linears.gate_proj) {
      // GPT-NeoX: down(gelu(up(x))), no gate.
      const up = this.project(x, weights.linears.up_proj, loras('up_proj'), spanRows, step.masks);
      return this.project(
        backend.gelu(up),
        weights.linears.down_proj,
        loras('down_proj'),
        spanRows,
        step.masks,
      );
    }
    const gate = this.project(x, weights.linears.gate_proj, loras('gate_proj'), spanRows, step.masks);
    const up = this.project(x, weights.linears.up_proj, loras('up_proj'), spanRows, step.masks);
    const activated = backend.gatedActivation(gate, up, config.hiddenAct === 'silu' ? 'silu' : 'gelu-tanh');
    return this.project(activated, weights.linears.down_proj, loras('down_proj'), spanRows, step.masks);
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
    masks?: Map<string, Tensor>,
  ): Tensor {
    const { backend } = this;
    let y = backend.matmul(x, linear.weight);
    if (linear.bias) y = backend.add(y, linear.bias);
    if (loras.every((lora) => lora === undefined)) return y;
    const fused = this.loraMode === 'fused' && this.fusedLoraUpdate(y, x, loras, spanRows);
    if (fused) return fused;
    if (loras.every((lora) => lora === loras[0])) return backend.add(y, this.loraDelta(x, loras[0]!));
    const masked = masks && this.maskedLoraDelta(x, loras, spanRows, masks);
    if (masked) return backend.add(y, masked);
    // Segments: runs of spans with the same LoRA, each its own small product; rows without one get 0.
    const deltas = spanRuns(loras, spanRows).map(({ value: lora, start, rows }) =>
      lora
        ? this.loraDelta(backend.slice(x, [start, 0], [rows, -1]), lora)
        : backend.fill([rows, y.shape[1]!], 0),
    );
    return backend.add(y, backend.concat(deltas, 0));
  }

  /**
   * `masked` mode's delta of mixed-loop rows: `((x·A_cat) ⊙ mask)·B_cat`, the mask `[rows, L·r]` holding
   * for each row 1 on its own LoRA's columns and 0 elsewhere (0 on every column for rows without one),
   * then `·scale` when the loops share one scale (else each row's scale is in its mask). One mask per
   * column layout and layer call, shared by the modules whose concatenations have that layout. Undefined where the LoRAs have no
   * common concatenation (segment mode then serves the call). LoRAs with a bias (`lora_B.bias`,
   * GPT-NeoX conversions) add `selector·bias_cat`: the selector `[rows, L]` holds the row's mask value on
   * its own loop's column, the biases `[L, out]` are stacked in loop order, so each row gets its own loop's
   * bias (exactly: one nonzero term per row) before the common scale, as {@link Decoder.loraDelta} adds it.
   *
   * NOTE: with one common scale the products add exact zeros for the other loops' columns and multiply
   * by the same scale, which gave bit-identical results to per-row application on cpu and wasm in the
   * tests (`masked-lora.test.ts`, and the mixed-loop relaxed NeoX in `neox.test.ts`).
   */
  private maskedLoraDelta(
    x: Tensor,
    loras: readonly (LoRA | undefined)[],
    spanRows: readonly number[],
    masks: Map<string, Tensor>,
  ): Tensor | undefined {
    const { backend } = this;
    const columns = loras.map((lora) => (lora ? this.loraColumns.get(lora) : undefined));
    const group = columns.find((c) => c !== undefined)?.group;
    if (!group || columns.some((c, i) => loras[i] !== undefined && c?.group !== group)) return undefined;
    const rows = spanRows.reduce((n, r) => n + r, 0);
    // The row masks: `width` columns per row, each row's value on `start … start + count` of its LoRA.
    const rowMask = (
      key: string,
      width: number,
      place: (column: LoRAColumns, lora: LoRA) => [number, number],
    ) => {
      let mask = masks.get(key);
      if (!mask) {
        const values = new Float32Array(rows * width);
        let row = 0;
        for (const [i, count] of spanRows.entries()) {
          const column = columns[i];
          if (column) {
            const value = group.scale === undefined ? loras[i]!.scale : 1;
            const [start, length] = place(column, loras[i]!);
            for (let r = row; r < row + count; r++) {
              values.fill(value, r * width + start, r * width + start + length);
            }
          }
          row += count;
        }
        mask = backend.fromArray(values, [rows, width]);
        masks.set(key, mask);
      }
      return mask;
    };
    const mask = rowMask(group.layout, group.width, (column, lora) => [column.start, lora.a.shape[1]!]);
    let delta = backend.matmul(backend.mul(backend.matmul(x, group.a), mask), group.b);
    if (group.bias) {
      const loops = group.bias.shape[0]!;
      const selector = rowMask(`${group.layout}|bias`, loops, (column) => [column.index, 1]);
      delta = backend.add(delta, backend.matmul(selector, group.bias));
    }
    return group.scale === undefined ? delta : backend.mul(delta, group.scale);
  }

  /**
   * `fused` mode: `y` plus each run of rows' own LoRA update in one {@link Backend.addLowRank} (rows
   * without a LoRA keep `y`), plus each row's scaled LoRA bias where the stack has them. Undefined where
   * the LoRAs are not all in one stack (segment mode then serves the call).
   */
  private fusedLoraUpdate(
    y: Tensor,
    x: Tensor,
    loras: readonly (LoRA | undefined)[],
    spanRows: readonly number[],
  ): Tensor | undefined {
    const { backend } = this;
    const places = loras.map((lora) => (lora ? this.loraRows.get(lora) : undefined));
    const stack = places.find((place) => place)?.stack;
    if (!stack || loras.some((lora, index) => lora && places[index]?.stack !== stack)) return undefined;
    const segments = spanRuns(places, spanRows).map(({ value: place, first, rows }) => {
      const lora = loras[first];
      return place && lora
        ? { rows, start: place.start, rank: lora.a.shape[1]!, scale: lora.scale }
        : { rows, start: 0, rank: 0, scale: 0 };
    });
    const updated = backend.addLowRank(y, x, stack.aRows, stack.bRows, segments);
    if (!stack.bias) return updated;
    const none = stack.bias.shape[0]! - 1;
    const biasRows = new Int32Array(y.shape[0]!);
    let row = 0;
    for (const [index, count] of spanRows.entries()) {
      biasRows.fill(places[index]?.index ?? none, row, row + count);
      row += count;
    }
    return backend.add(updated, backend.gather(stack.bias, backend.fromArray(biasRows, [row], 'int32')));
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

/** RoPE tables on the host ({@link ropeTables}). */
type RopeTables = ReturnType<typeof ropeTables>;

/** A run of consecutive spans with one value: spans `first … end − 1`, rows `start … start + rows − 1`. */
interface SpanRun<T> {
  value: T;
  first: number;
  end: number;
  start: number;
  rows: number;
}

/**
 * Groups consecutive spans whose `values` are the same (`===` unless `same` says otherwise) into runs, so
 * a ragged call does one operation per run of one LoRA, one norm weight or one KV pool (one run when the
 * whole call has one).
 */
function spanRuns<T>(
  values: readonly T[],
  spanRows: readonly number[],
  same: (a: T, b: T) => boolean = (a, b) => a === b,
): SpanRun<T>[] {
  const runs: SpanRun<T>[] = [];
  let start = 0;
  for (let first = 0; first < values.length; ) {
    let end = first + 1;
    let rows = spanRows[first]!;
    while (end < values.length && same(values[end]!, values[first]!)) rows += spanRows[end++]!;
    runs.push({ value: values[first]!, first, end, start, rows });
    start += rows;
    first = end;
  }
  return runs;
}

/** One call of {@link Decoder.layer}: the rows, and per span its LoRAs, loop norms and KV history. */
interface LayerStep {
  rows: RaggedRows;
  /** Rows of each span (`batch · length`). */
  spanRows: readonly number[];
  loras: readonly LoRAs[];
  loopNorms: readonly (LoopNorms | undefined)[];
  caches: readonly (LayerKV | undefined)[];
  /** The stored layer's sliding window, or undefined for full causal attention. */
  window: number | undefined;
  /** The RoPE rows this layer rotates by (Gemma 3's local layers have their own). */
  cos: Tensor;
  sin: Tensor;
  /** `masked` mode: the row masks of this call, one per column layout (made on first use). */
  masks: Map<string, Tensor>;
}

/** One stored layer and module's LoRAs of every loop, concatenated (`masked` mode). */
interface LoRAConcat {
  /** `[in, Σ rank]`: each loop's `Aᵀ`, loop order. */
  a: Tensor;
  /** `[Σ rank, out]`: each loop's `Bᵀ`, loop order. */
  b: Tensor;
  /** `Σ rank`. */
  width: number;
  /** The loops' one scale, or undefined when they differ (then each row's is in its mask). */
  scale: number | undefined;
  /** The ranks (and mask values) per loop: concatenations with one layout share a row mask. */
  layout: string;
  /** `[L, out]`: each loop's `lora_B.bias`, loop order (zeros for a loop without one); absent when none has one. */
  bias?: Tensor;
}

/** One stored layer and module's LoRAs of every loop, stacked along rows (`fused` mode). */
interface LoRAStack {
  /** `[Σ rank, in]`: each loop's `A`, loop order. */
  aRows: Tensor;
  /** `[Σ rank, out]`: each loop's `Bᵀ`, loop order. */
  bRows: Tensor;
  /** `[L + 1, out]`: each loop's `scale · lora_B.bias` (zeros without one), then a row of zeros. */
  bias?: Tensor;
}

/** Where one LoRA sits in its {@link LoRAStack}. */
interface LoRARows {
  stack: LoRAStack;
  /** Its first row of `aRows` and `bRows`. */
  start: number;
  /** Its loop's position in the stack (row of `bias`). */
  index: number;
}

/** Where one LoRA sits in its {@link LoRAConcat}. */
interface LoRAColumns {
  group: LoRAConcat;
  /** Its first column of `a` (row of `b`). */
  start: number;
  /** Its loop's position in the concatenation (row of `bias`). */
  index: number;
}
