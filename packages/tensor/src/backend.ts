/**
 * The backend-agnostic tensor interface. Everything above this package (the model, the KV cache, the
 * converter, training) is written against {@link Backend}; a backend package (for example
 * `@rrt/backend-tfjs`) implements it and proves itself with the conformance suite in
 * `@rrt/tensor/testing`.
 *
 * NOTE: tensors are immutable values, as in tfjs and mlx. Every op returns a new tensor that the caller
 * owns: dispose it, or create it inside {@link Backend.tidy}, which disposes everything made inside the
 * scope except what the scope returns or {@link Backend.keep}s. The one exception is
 * {@link Backend.writeRows}, the interface's only mutation: it writes into a buffer the caller owns (a
 * KV cache's keys and values), so that an append costs the new rows and not a copy of the history.
 *
 * @module
 */

/** Element types that tensors compute in. */
export type DType = 'float32' | 'int32';

/**
 * Element types that weights may be stored in. Half-precision storage is decoded to float32 when a
 * tensor is created from it ({@link Backend.fromBytes}); compute happens in {@link DType}.
 */
export type StorageDType = 'float32' | 'float16' | 'bfloat16' | 'int32';

/** A tensor's shape: one non-negative integer per dimension; `[]` is a scalar. */
export type Shape = readonly number[];

declare const tensorBrand: unique symbol;

/**
 * An opaque tensor owned by one {@link Backend}. Only its shape and dtype are visible; read its values
 * with {@link Backend.read}. Tensors from different backends must not be mixed.
 */
export interface Tensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** @internal brands the type so that plain objects are not tensors. */
  readonly [tensorBrand]: true;
}

/** A trainable tensor: its value can be replaced in place, and {@link Backend.valueAndGrad} differentiates with respect to it. */
export interface Variable extends Tensor {
  /** @internal */
  readonly [variableBrand]: true;
}
declare const variableBrand: unique symbol;

/** Typed array that holds a tensor's values on the host. */
export type TensorData = Float32Array | Int32Array;

/** Options of {@link Backend.matmul}. */
export interface MatmulOptions {
  /** Use `aᵀ` (the last two dimensions swapped) instead of `a`. */
  transposeA?: boolean;
  /** Use `bᵀ` (the last two dimensions swapped) instead of `b`. Linear layers stored `[out, in]` use this. */
  transposeB?: boolean;
}

/** Result of {@link Backend.topk}. */
export interface TopK {
  /** The k largest values along the last axis, in descending order. */
  values: Tensor;
  /** Their int32 indices along the last axis. */
  indices: Tensor;
}

/** Result of {@link Backend.valueAndGrad}. */
export interface ValueAndGrad {
  /** The scalar value of the function. */
  value: Tensor;
  /** The gradient of the value with respect to each variable, in the order the variables were given. */
  grads: Tensor[];
}

/** Options of {@link Backend.attention}. */
export interface AttentionOptions {
  /** Multiplies every query·key product; usually `1/√headDim`. */
  scale: number;
  /**
   * Position of the first query: query `t` attends to keys `0 … queryOffset + t` (causal). 0 when the
   * queries are the whole sequence; the number of cached positions when they follow a cache.
   */
  queryOffset: number;
  /**
   * Keys `0 … keyLength − 1` are read; the rest of `keys` and `values` is ignored (a preallocated cache
   * buffer passes its filled length). Default: all of them.
   */
  keyLength?: number;
  /**
   * Sliding window: query `t` (at position `p = queryOffset + t`) sees only the keys `j` with
   * `p − window < j ≤ p`, the last `window` positions itself included (Hugging Face's
   * `kv_idx > q_idx − sliding_window`). Default: no window (every earlier key).
   */
  window?: number;
  /**
   * Soft-capping of the scaled scores before the mask and softmax (Gemma 2's `attn_logit_softcapping`):
   * `softCap · tanh(scale·q·k / softCap)`. Default: none.
   */
  softCap?: number;
}

/**
 * One span of a {@link Backend.pagedAttention} call: `rows` consecutive query rows of one sequence, at
 * positions `queryOffset …`, reading that sequence's keys and values through its block table.
 */
export interface PagedAttentionSpan {
  /** Query rows of the span (consecutive along the queries' `M` axis, spans in order). */
  rows: number;
  /** Position of the span's first query: query row `t` sees keys `0 … queryOffset + t` (causal). */
  queryOffset: number;
  /** Keys `0 … keyLength − 1` of the sequence are filled and may be read (at least 1). */
  keyLength: number;
  /**
   * Block table: `pages[p]` is the pool page that holds positions `p·pageSize … (p+1)·pageSize − 1`, in
   * any order of page ids; at least `⌈keyLength / pageSize⌉` entries (more are ignored).
   */
  pages: readonly number[];
}

/**
 * Options of {@link Backend.pagedAttention}: those of {@link AttentionOptions} that apply to every span
 * (each span carries its own `queryOffset` and `keyLength`).
 */
export type PagedAttentionOptions = Omit<AttentionOptions, 'queryOffset' | 'keyLength'>;

/**
 * One run of consecutive rows of a {@link Backend.addLowRank} call and the low-rank update they all get:
 * rows `r` of the segment get `scale · (x[r] · aRows[start … start + rank − 1]ᵀ) · bRows[start … start + rank − 1]`.
 */
export interface LowRankSegment {
  /** Rows of the segment (consecutive along `M`, segments in order, `Σ rows = M`). */
  rows: number;
  /** The first row of `aRows` and `bRows` the segment's adapter uses. */
  start: number;
  /** Rows of `aRows` and `bRows` the adapter uses (0: no update, the rows keep `base`). */
  rank: number;
  /** The adapter's scale (LoRA's `alpha / r`). */
  scale: number;
}

/** The activation of a gated linear unit ({@link Backend.gatedActivation}). */
export type GateActivation = 'silu' | 'gelu-tanh';

/** A tensor or a number that broadcasts as a scalar. */
export type TensorOrScalar = Tensor | number;

/**
 * What a decoder forward pass, a KV cache and training need from a tensor library.
 *
 * Shapes broadcast as in NumPy for the elementwise binary ops. Axes may be negative (counted from the
 * end). Every op returns a new tensor.
 *
 * @example
 * ```ts
 * const { backend } = await createBackend('auto'); // from @rrt/backend-tfjs
 * const y = backend.tidy(() => {
 *   const a = backend.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
 *   return backend.matmul(a, a, { transposeB: true });
 * });
 * console.log(await backend.read(y)); // Float32Array [5, 11, 11, 25]
 * backend.dispose(y);
 * ```
 */
export interface Backend {
  /** Short name of the implementation that runs the ops, e.g. `"tfjs-wasm"`. */
  readonly name: string;

  // ---- creation and read-back ----

  /** A tensor holding `data` (row-major) with the given shape. The array is copied. */
  fromArray(data: TensorData | readonly number[], shape: Shape, dtype?: DType): Tensor;
  /**
   * A tensor decoded from little-endian bytes in a storage dtype. float16 and bfloat16 become float32
   * tensors; the bytes are not retained.
   */
  fromBytes(bytes: Uint8Array, dtype: StorageDType, shape: Shape): Tensor;
  /** A tensor of the given shape filled with `value`. */
  fill(shape: Shape, value: number, dtype?: DType): Tensor;
  /** Reads a tensor's values back to the host (row-major). Does not dispose the tensor. */
  read(x: Tensor): Promise<TensorData>;

  // ---- matrix products ----

  /**
   * Matrix product over the last two dimensions, batched over the leading ones (which broadcast).
   * `a: [..., m, k]`, `b: [..., k, n]` → `[..., m, n]` (before the transpose flags apply).
   */
  matmul(a: Tensor, b: Tensor, options?: MatmulOptions): Tensor;

  // ---- elementwise ----

  /** `a + b`, broadcasting. */
  add(a: Tensor, b: TensorOrScalar): Tensor;
  /** `a − b`, broadcasting. */
  sub(a: Tensor, b: TensorOrScalar): Tensor;
  /** `a · b`, broadcasting. */
  mul(a: Tensor, b: TensorOrScalar): Tensor;
  /** `a / b`, broadcasting. */
  div(a: Tensor, b: TensorOrScalar): Tensor;
  /** Elementwise maximum, broadcasting. */
  maximum(a: Tensor, b: TensorOrScalar): Tensor;
  /** `−x`. */
  neg(x: Tensor): Tensor;
  /** `eˣ`. */
  exp(x: Tensor): Tensor;
  /** Natural logarithm. */
  log(x: Tensor): Tensor;
  /** `√x`. */
  sqrt(x: Tensor): Tensor;
  /** `1/√x`. */
  rsqrt(x: Tensor): Tensor;
  /** `x²`. */
  square(x: Tensor): Tensor;
  /** Hyperbolic tangent. */
  tanh(x: Tensor): Tensor;
  /** Logistic sigmoid `1/(1+e⁻ˣ)`. */
  sigmoid(x: Tensor): Tensor;
  /** SiLU (swish): `x·σ(x)`. */
  silu(x: Tensor): Tensor;
  /** GELU, tanh approximation: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`. */
  geluTanh(x: Tensor): Tensor;
  /**
   * GELU, exact (erf) form: `x·Φ(x) = ½x(1 + erf(x/√2))` (PyTorch's default `nn.GELU()`, GPT-NeoX's
   * `hidden_act: "gelu"`).
   */
  gelu(x: Tensor): Tensor;
  /** Converts between float32 and int32 (float → int truncates toward zero). */
  cast(x: Tensor, dtype: DType): Tensor;

  // ---- reductions ----

  /** Sum over `axes` (all axes when omitted). */
  sum(x: Tensor, axes?: number | readonly number[], keepDims?: boolean): Tensor;
  /** Mean over `axes` (all axes when omitted). */
  mean(x: Tensor, axes?: number | readonly number[], keepDims?: boolean): Tensor;
  /** Maximum over `axes` (all axes when omitted). */
  max(x: Tensor, axes?: number | readonly number[], keepDims?: boolean): Tensor;
  /** Int32 index of the maximum along `axis` (the first one on ties); the axis is removed. */
  argmax(x: Tensor, axis?: number): Tensor;
  /** The `k` largest entries along the last axis, sorted descending. */
  topk(x: Tensor, k: number): TopK;

  // ---- normalisation and activations of the transformer ----

  /** Softmax along `axis` (default last). */
  softmax(x: Tensor, axis?: number): Tensor;
  /** Log-softmax along `axis` (default last), computed stably. */
  logSoftmax(x: Tensor, axis?: number): Tensor;
  /** RMSNorm over the last axis: `x / √(mean(x²) + eps) · weight`, `weight: [d]`. */
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor;
  /**
   * LayerNorm over the last axis: `(x − mean(x)) / √(var(x) + eps) · weight + bias` with the biased
   * variance `mean((x − mean(x))²)` (PyTorch's `nn.LayerNorm`), `weight`, `bias: [d]`.
   */
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor;
  /**
   * Rotary position embedding, "rotate half" layout (Hugging Face Llama): with `x = [x₁, x₂]` split in
   * halves along the last axis, returns `[x₁·cos − x₂·sin, x₂·cos + x₁·sin]`.
   * `x: [..., T, D]`; `cos`, `sin`: `[..., T, D/2]` broadcasting against `x`'s leading dimensions.
   */
  rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor;
  /**
   * Causal scaled dot-product attention with grouped-query heads, in the layout projections produce:
   * `queries: [B, T, H, D]`, `keys` and `values: [B, S, kvH, D]` (`H` a multiple of `kvH`; query head `h`
   * reads key/value head `⌊h·kvH/H⌋`) → `[B, T, H, D]`. Row `(b, t, h)` is
   * `softmax(scale · q·kⱼ over j ≤ min(queryOffset + t, keyLength − 1)) · v`, with `window` only the
   * keys `j > queryOffset + t − window`, with `softCap` the scores capped first.
   *
   * NOTE: each output row depends only on its own query and the keys it sees, so a token decoded against
   * a cache gets the same value as in a full recompute (fused implementations are asserted bit-exact
   * that way in the decoder tests on wasm).
   */
  attention(queries: Tensor, keys: Tensor, values: Tensor, options: AttentionOptions): Tensor;
  /**
   * {@link Backend.attention} for a ragged batch of spans read straight from a paged KV pool, in one call
   * and without copying any history: `queries: [1, M, H, D]` (the rows of every span, in span order,
   * `M = Σ rows`), `keyPool` and `valuePool: [pages, pageSize, kvH, D]` → `[1, M, H, D]`. Key position
   * `j` of a span lives at page `span.pages[⌊j / pageSize⌋]`, slot `j mod pageSize`. Row `t` of a span is
   * exactly what {@link Backend.attention} gives for that span's queries against its pages gathered in
   * table order, with the span's `queryOffset` and `keyLength` (the composite in `composite.ts` is that
   * definition).
   *
   * NOTE: a serving step attends every sequence's rows in one dispatch per layer; the fused kernels read
   * the pools by page and compute each row in the same order as `attention` does, so decoding through
   * the paged op gets the same values as through a contiguous cache (asserted bit-exact on cpu and wasm).
   */
  pagedAttention(
    queries: Tensor,
    keyPool: Tensor,
    valuePool: Tensor,
    spans: readonly PagedAttentionSpan[],
    options: PagedAttentionOptions,
  ): Tensor;
  /**
   * Every row's own low-rank update added to `base`, in one call: `base: [M, out]`, `x: [M, in]`, `aRows:
   * [W, in]` (each adapter's `A`, PEFT's `lora_A` layout, stacked along `W`) and `bRows: [W, out]` (each
   * adapter's `Bᵀ` stacked the same way) → `[M, out]`, where the rows of segment `s` get
   * `base + scale_s · (x · A_sᵀ) · B_sᵀ` with `A_s = aRows[start_s … start_s + rank_s − 1]` (see
   * {@link LowRankSegment}). The multi-adapter LoRA product of Punica's SGMV ("shrink, expand"): a
   * depth-wise batch applies each row's loop's LoRA without a product per loop or a mask over all loops'
   * columns. `composite.ts` holds the definition (slices and two products per segment).
   *
   * NOTE: each output row depends only on its own `base` and `x` rows and its segment's adapter, computed
   * in the same order whatever the other rows, so a row gets the same bits alone or in any batch (the
   * decoder tests assert it on cpu and wasm). Not differentiable through the fused kernels: under
   * {@link Backend.valueAndGrad} the composite runs.
   */
  addLowRank(
    base: Tensor,
    x: Tensor,
    aRows: Tensor,
    bRows: Tensor,
    segments: readonly LowRankSegment[],
  ): Tensor;
  /**
   * Gated linear unit of the feed-forward network: `activation(gate) · up`, elementwise, same shapes
   * (SwiGLU for `"silu"`, GeGLU with the tanh GELU for `"gelu-tanh"`).
   */
  gatedActivation(gate: Tensor, up: Tensor, activation: GateActivation): Tensor;
  /**
   * Additive causal mask `[queryLength, keyLength]`: 0 where key `j ≤ offset + i` (query `i` sits at
   * position `offset + i`), −∞ elsewhere.
   */
  causalMask(queryLength: number, keyLength: number, offset: number): Tensor;

  // ---- indexing and layout ----

  /** Rows of `table` picked by the int32 `indices` along `axis` (default 0): an embedding lookup. */
  gather(table: Tensor, indices: Tensor, axis?: number): Tensor;
  /** The slice starting at `begin` with extent `size` per axis (`-1`: to the end). */
  slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor;
  /** Joins tensors along `axis`. */
  concat(xs: readonly Tensor[], axis: number): Tensor;
  /** Same values in a new shape (one dimension may be `-1`). */
  reshape(x: Tensor, shape: Shape): Tensor;
  /** Permutes the axes (`perm` defaults to reversing them). */
  transpose(x: Tensor, perm?: readonly number[]): Tensor;
  /** Stacks same-shaped tensors along a new `axis`. */
  stack(xs: readonly Tensor[], axis?: number): Tensor;
  /** Elementwise choice: `condition ? a : b`, `condition` an int32 0/1 tensor, broadcasting. */
  where(condition: Tensor, a: Tensor, b: Tensor): Tensor;

  // ---- the one mutation ----

  /**
   * Writes `rows: [M, ...rowShape]` into `target: [...lead, ...rowShape]` in place: row `i` goes to
   * position `indices[i]` of `target` with its leading axes flattened (`0 ≤ indices[i] < size(lead)`).
   * `rows` may also come in any shape of `M · size(rowShape)` values whose trailing axes are `rowShape`
   * (e.g. new keys `[batch, T, kvHeads, headDim]` for `M = batch·T`): its leading axes flatten to `M`
   * in row-major order, with `M = indices.length`. The only op that changes an existing tensor: a KV cache appends keys and values with it — into
   * `[batch, capacity, kvHeads, headDim]` buffers at `b·capacity + position`, or a paged pool
   * `[pages, pageSize, kvHeads, headDim]` at `page·pageSize + slot` — without copying what it holds.
   *
   * `target` must be a float32 tensor made by this backend's ops (not a {@link Variable}) and the
   * indices distinct. Tensors that share storage with `target` (its reshapes) see the write; other
   * tensors computed from it earlier (slices, products) keep their values, except that a slice may share
   * storage on some backends: do not hold slices of a buffer across a write.
   */
  writeRows(target: Tensor, indices: ArrayLike<number>, rows: Tensor): void;

  // ---- memory ----

  /**
   * Runs `fn` in a memory scope: tensors created inside are disposed when it returns, except the ones it
   * returns (a tensor, or an array or record of tensors) and those passed to {@link Backend.keep}.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a scope may return nothing, and `() => {}` is typed `() => void`.
  tidy<T extends Tensor | Tensor[] | Record<string, Tensor> | void>(fn: () => T): T;
  /** Exempts a tensor from disposal by the enclosing {@link Backend.tidy} scopes. */
  keep<T extends Tensor>(x: T): T;
  /** Frees tensors now. Disposing a tensor twice is harmless. */
  dispose(x: Tensor | readonly Tensor[] | Record<string, Tensor>): void;
  /** Number of tensors currently alive on this backend (for leak checks). */
  numTensors(): number;

  // ---- training ----

  /** A trainable variable initialised with a copy of `initial`. */
  variable(initial: Tensor, name?: string): Variable;
  /** Replaces a variable's value with a copy of `value` (same shape and dtype). */
  assign(variable: Variable, value: Tensor): void;
  /**
   * Evaluates the scalar function `f` and its gradients with respect to `variables`.
   * The returned tensors are owned by the caller.
   */
  valueAndGrad(f: () => Tensor, variables: readonly Variable[]): ValueAndGrad;
}
