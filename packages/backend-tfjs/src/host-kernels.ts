/**
 * Fused kernels written in JavaScript over the tensors' own memory, registered with tfjs for its `cpu`
 * and `wasm` backends: RMSNorm, LayerNorm, exact GELU, RoPE, causal grouped-query attention (over
 * contiguous keys, and over a paged KV pool for a ragged batch of spans) and the gated activation of the
 * feed-forward network, each one dispatch instead of 2–15; and a row gather (axis 0), which copies
 * whole rows where tfjs-wasm's GatherV2 maps every value through its strides.
 *
 * NOTE: why JavaScript and not the wasm backend's C++ kernels. A decode step of a small model is bound
 * by dispatches (≈ 3 µs each on wasm, bench/profile.ts), not by arithmetic, and the attention products
 * of a decode step are batched and transposed, a shape tfjs-wasm runs outside XNNPACK at ≈ 0.5–2
 * GFLOP/s — no faster than a plain loop. A JS kernel reads the wasm heap in place (`typedArrayFromHeap`)
 * or the cpu backend's arrays, so nothing is copied. Sums run in float64 in a fixed order per output
 * row, so a row's value never depends on the batch or on how many other rows there are.
 *
 * On wasm, attention and paged attention (with a head size that is a multiple of 4), attention's
 * gradient and SwiGLU run in a small SIMD module instead (`kernels/attention.as.ts`, ≈ 4 kB) that imports tfjs's own WebAssembly
 * memory. A plain JS loop is the bound of batched decoding: attention is the one part of a step whose
 * work grows with context and is not a weight product for XNNPACK. The SIMD module measured ≈ 7×
 * faster than the JS loop (batch 64, 128 keys: 0.62–0.78 against 5.1–5.5 ms per call, CPU time on a
 * loaded machine). Its sums are float32, still in a fixed order per output row.
 *
 * Attention has a gradient (`RrtAttentionGrad`, one kernel for all three inputs) and so has RoPE (the
 * inverse rotation, by the same kernel); RMSNorm, LayerNorm, GELU and the gated activation have none, and
 * {@link TfjsBackend} uses their composite ops while it is taking gradients (inside `valueAndGrad`).
 *
 * @module
 */
import { erfcCoefficients } from '@rrt/tensor';
import * as tf from '@tensorflow/tfjs-core';
import { attentionWasmBase64 } from './attention-wasm.js';
import { unbroadcast } from './gradients.js';

/** Kernel names, distinct from tfjs's own. */
export const fusedKernelNames = {
  rmsNorm: 'RrtRmsNorm',
  layerNorm: 'RrtLayerNorm',
  gelu: 'RrtGelu',
  rope: 'RrtRope',
  attention: 'RrtAttention',
  attentionGrad: 'RrtAttentionGrad',
  pagedAttention: 'RrtPagedAttention',
  gatedActivation: 'RrtGatedActivation',
  addLowRank: 'RrtAddLowRank',
  gatherRows: 'RrtGatherRows',
} as const;

/** The tfjs backends these kernels run on. */
export const hostKernelBackends = ['cpu', 'wasm'] as const;

interface WasmLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array;
}
interface WasmBackendLike extends WasmLike {
  wasm: { asm?: { memory?: unknown }; _malloc(bytes: number): number; _free(pointer: number): void };
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
}

type SimdAttention = (
  q: number,
  k: number,
  v: number,
  out: number,
  scratch: number,
  batch: number,
  length: number,
  heads: number,
  kvHeads: number,
  headDim: number,
  slots: number,
  scale: number,
  queryOffset: number,
  keyLength: number,
  window: number,
  softCap: number,
) => void;

type SimdPagedAttention = (
  q: number,
  keyPool: number,
  valuePool: number,
  out: number,
  scratch: number,
  meta: number,
  spanCount: number,
  heads: number,
  kvHeads: number,
  headDim: number,
  scale: number,
  window: number,
  softCap: number,
) => void;

/** The SIMD module bound to tfjs-wasm's memory, with its scratch buffer; null if it cannot run. */
let simd:
  | {
      attention: SimdAttention;
      attentionGrad: (...args: number[]) => void;
      siluGate: (gate: number, up: number, out: number, count: number) => void;
      pagedAttention: SimdPagedAttention;
      addLowRank: (...args: number[]) => void;
      memory: WebAssembly.Memory;
      /** Softmax weights of one query row (f32). */
      scratch: HeapBuffer;
      /** Span headers and key offsets (paged attention), segment headers (low-rank update). */
      meta: HeapBuffer;
    }
  | null
  | undefined;

function simdAttention(backend: WasmBackendLike): typeof simd {
  if (simd !== undefined) return simd;
  simd = null;
  const memory = backend.wasm.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return simd;
  try {
    const bytes = Uint8Array.from(atob(attentionWasmBase64), (c) => c.charCodeAt(0));
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
    simd = {
      attention: instance.exports['attention'] as SimdAttention,
      attentionGrad: instance.exports['attentionGrad'] as (...args: number[]) => void,
      siluGate: instance.exports['siluGate'] as (
        gate: number,
        up: number,
        out: number,
        count: number,
      ) => void,
      pagedAttention: instance.exports['pagedAttention'] as SimdPagedAttention,
      addLowRank: instance.exports['addLowRank'] as (...args: number[]) => void,
      memory,
      scratch: { at: 0, bytes: 0 },
      meta: { at: 0, bytes: 0 },
    };
  } catch {
    // No SIMD in this engine, or a tfjs build whose memory is not exported: the JS kernel runs.
  }
  return simd;
}

/** Whether the wasm SIMD module has been instantiated on tfjs-wasm's memory (it is on first use). */
export function wasmSimdKernelsActive(): boolean {
  return simd != null;
}

/** Attention on wasm through the SIMD module; false if it cannot run for these shapes. */
function attentionOnWasmSimd(
  backend: WasmBackendLike,
  inputs: readonly [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo],
  s: AttentionShape,
): tf.TensorInfo | undefined {
  if (s.headDim % 4 !== 0) return undefined;
  const kernel = simdAttention(backend);
  if (!kernel) return undefined;
  const output = backend.makeOutput([s.batch, s.length, s.heads, s.headDim], 'float32');
  reserve(backend, kernel.scratch, 4 * (Math.ceil(s.keyLength / 4) * 4 + s.headDim));
  const at = (info: tf.TensorInfo) => backend.dataIdMap.get(info.dataId).memoryOffset;
  kernel.attention(
    at(inputs[0]),
    at(inputs[1]),
    at(inputs[2]),
    at(output),
    kernel.scratch.at,
    s.batch,
    s.length,
    s.heads,
    s.kvHeads,
    s.headDim,
    s.slots,
    s.scale,
    s.queryOffset,
    s.keyLength,
    s.window ?? 0,
    s.softCap ?? 0,
  );
  return output;
}

/** The attention gradient on wasm through the SIMD module; undefined if it cannot run for these shapes. */
function attentionGradOnWasmSimd(
  backend: WasmBackendLike,
  inputs: readonly tf.TensorInfo[],
  s: AttentionShape,
): tf.TensorInfo[] | undefined {
  // The SIMD gradient has neither window nor soft-cap: those run in the JS kernel.
  if (s.headDim % 4 !== 0 || s.window !== undefined || s.softCap !== undefined) return undefined;
  const kernel = simdAttention(backend);
  if (!kernel) return undefined;
  const [queries, keys, values] = inputs as [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo];
  const outputs = [queries, keys, values].map((input) => backend.makeOutput([...input.shape], 'float32'));
  reserve(backend, kernel.scratch, 4 * (Math.ceil(s.keyLength / 4) * 4 + s.headDim));
  for (const output of outputs.slice(1)) backend.typedArrayFromHeap(output).fill(0);
  const at = (info: tf.TensorInfo) => backend.dataIdMap.get(info.dataId).memoryOffset;
  kernel.attentionGrad(
    ...inputs.map(at),
    ...outputs.map(at),
    kernel.scratch.at,
    s.batch,
    s.length,
    s.heads,
    s.kvHeads,
    s.headDim,
    s.slots,
    s.scale,
    s.queryOffset,
    s.keyLength,
  );
  return outputs;
}

/**
 * Paged attention on wasm through the SIMD module; undefined if it cannot run for these shapes. The span
 * headers and each key position's byte offset in the pools go into a buffer in tfjs's heap (`meta`).
 */
function pagedAttentionOnWasmSimd(
  backend: WasmBackendLike,
  inputs: readonly [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo],
  s: PagedAttentionShape,
): tf.TensorInfo | undefined {
  if (s.headDim % 4 !== 0) return undefined;
  const kernel = simdAttention(backend);
  if (!kernel) return undefined;
  const output = backend.makeOutput([...inputs[0].shape], 'float32');
  let longest = 0;
  let positions = 0;
  for (const span of s.spans) {
    longest = Math.max(longest, span.keyLength);
    positions += span.keyLength;
  }
  reserve(backend, kernel.scratch, 4 * (Math.ceil(longest / 4) * 4 + s.headDim));
  const metaLength = 4 * s.spans.length + positions;
  reserve(backend, kernel.meta, 4 * metaLength);
  // A view made after the allocations above (a heap that grew detaches earlier views).
  const meta = new Int32Array(kernel.memory.buffer, kernel.meta.at, metaLength);
  const rowBytes = 4 * s.kvHeads * s.headDim;
  let start = 4 * s.spans.length;
  for (const [index, span] of s.spans.entries()) {
    meta.set([span.rows, span.queryOffset, span.keyLength, start], 4 * index);
    for (let j = 0; j < span.keyLength; j++) {
      meta[start + j] = (span.pages[Math.floor(j / s.pageSize)]! * s.pageSize + (j % s.pageSize)) * rowBytes;
    }
    start += span.keyLength;
  }
  const at = (info: tf.TensorInfo) => backend.dataIdMap.get(info.dataId).memoryOffset;
  kernel.pagedAttention(
    at(inputs[0]),
    at(inputs[1]),
    at(inputs[2]),
    at(output),
    kernel.scratch.at,
    kernel.meta.at,
    s.spans.length,
    s.heads,
    s.kvHeads,
    s.headDim,
    s.scale,
    s.window ?? 0,
    s.softCap ?? 0,
  );
  return output;
}

/**
 * The low-rank update on wasm through the SIMD module; undefined if it cannot run. The segment headers
 * (`[rows, start, rank, scale]`, 16 bytes each) go into the module's `meta` buffer in tfjs's heap.
 */
function addLowRankOnWasmSimd(
  backend: WasmBackendLike,
  inputs: readonly [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo, tf.TensorInfo],
  { table, scales }: LowRankTable,
): tf.TensorInfo | undefined {
  const kernel = simdAttention(backend);
  if (!kernel) return undefined;
  const [base, x] = inputs;
  const output = backend.makeOutput([...base.shape], 'float32');
  reserve(backend, kernel.meta, 16 * scales.length);
  // Views made after the allocations above (a heap that grew detaches earlier views).
  const headers = new Int32Array(kernel.memory.buffer, kernel.meta.at, 4 * scales.length);
  const headerScales = new Float32Array(kernel.memory.buffer, kernel.meta.at, 4 * scales.length);
  for (let segment = 0; segment < scales.length; segment++) {
    headers.set(table.slice(3 * segment, 3 * segment + 3), 4 * segment);
    headerScales[4 * segment + 3] = scales[segment]!;
  }
  const at = (info: tf.TensorInfo) => backend.dataIdMap.get(info.dataId).memoryOffset;
  kernel.addLowRank(
    ...inputs.map(at),
    at(output),
    kernel.meta.at,
    scales.length,
    x.shape[1]!,
    base.shape[1]!,
  );
  return output;
}

/** A buffer the SIMD kernels use in tfjs's heap: its address and size (0 until first reserved). */
interface HeapBuffer {
  at: number;
  bytes: number;
}

/** Makes `buffer` (in tfjs's heap) at least `bytes` long, doubling as it grows. */
function reserve(backend: WasmBackendLike, buffer: HeapBuffer, bytes: number): void {
  if (buffer.bytes >= bytes) return;
  if (buffer.at !== 0) backend.wasm._free(buffer.at);
  buffer.bytes = Math.max(bytes, 2 * buffer.bytes);
  buffer.at = backend.wasm._malloc(buffer.bytes);
}

/** SwiGLU on wasm through the SIMD module; undefined if it cannot run. */
function siluGateOnWasmSimd(
  backend: WasmBackendLike,
  gate: tf.TensorInfo,
  up: tf.TensorInfo,
): tf.TensorInfo | undefined {
  const kernel = simdAttention(backend);
  if (!kernel) return undefined;
  const output = backend.makeOutput([...gate.shape], 'float32');
  const at = (info: tf.TensorInfo) => backend.dataIdMap.get(info.dataId).memoryOffset;
  kernel.siluGate(at(gate), at(up), at(output), tf.util.sizeFromShape(gate.shape));
  return output;
}

interface CpuLike {
  data: { get(dataId: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

/**
 * Runs `compute` on float32 views of `inputs` and of a new output of `shape`, on either backend. On wasm
 * the output is allocated first: an allocation may grow the heap, which detaches earlier views.
 */
function hostCompute(
  backendName: string,
  backend: unknown,
  inputs: readonly tf.TensorInfo[],
  shape: number[],
  compute: (ins: Float32Array[], out: Float32Array) => void,
): tf.TensorInfo {
  if (backendName === 'wasm') {
    const wasm = backend as WasmLike;
    const output = wasm.makeOutput(shape, 'float32');
    compute(
      inputs.map((input) => wasm.typedArrayFromHeap(input)),
      wasm.typedArrayFromHeap(output),
    );
    return output;
  }
  const cpu = backend as CpuLike;
  const out = new Float32Array(shape.reduce((n, d) => n * d, 1));
  compute(
    inputs.map((input) => cpu.data.get(input.dataId).values),
    out,
  );
  return cpu.makeTensorInfo(shape, 'float32', out);
}

/** {@link hostCompute} with several outputs, each zero-filled first. */
function hostComputeMany(
  backendName: string,
  backend: unknown,
  inputs: readonly tf.TensorInfo[],
  shapes: number[][],
  compute: (ins: Float32Array[], outs: Float32Array[]) => void,
): tf.TensorInfo[] {
  if (backendName === 'wasm') {
    const wasm = backend as WasmLike;
    const outputs = shapes.map((shape) => wasm.makeOutput(shape, 'float32'));
    const views = outputs.map((output) => wasm.typedArrayFromHeap(output));
    for (const view of views) view.fill(0);
    compute(
      inputs.map((input) => wasm.typedArrayFromHeap(input)),
      views,
    );
    return outputs;
  }
  const cpu = backend as CpuLike;
  const outs = shapes.map((shape) => new Float32Array(shape.reduce((n, d) => n * d, 1)));
  compute(
    inputs.map((input) => cpu.data.get(input.dataId).values),
    outs,
  );
  return outs.map((out, i) => cpu.makeTensorInfo(shapes[i]!, 'float32', out));
}

/** `x / √(mean(x²) + eps) · w` per row of the last axis. */
function rmsNorm(x: Float32Array, w: Float32Array, eps: number, out: Float32Array): void {
  const width = w.length;
  for (let start = 0; start < x.length; start += width) {
    let sum = 0;
    for (let i = 0; i < width; i++) sum += x[start + i]! * x[start + i]!;
    const inverse = 1 / Math.sqrt(sum / width + eps);
    for (let i = 0; i < width; i++) out[start + i] = x[start + i]! * inverse * w[i]!;
  }
}

/** `(x − mean) / √(var + eps) · w + b` per row of the last axis (two passes, float64 sums). */
function layerNorm(x: Float32Array, w: Float32Array, b: Float32Array, eps: number, out: Float32Array): void {
  const width = w.length;
  for (let start = 0; start < x.length; start += width) {
    let sum = 0;
    for (let i = 0; i < width; i++) sum += x[start + i]!;
    const mean = sum / width;
    let squares = 0;
    for (let i = 0; i < width; i++) squares += (x[start + i]! - mean) ** 2;
    const inverse = 1 / Math.sqrt(squares / width + eps);
    for (let i = 0; i < width; i++) out[start + i] = (x[start + i]! - mean) * inverse * w[i]! + b[i]!;
  }
}

/** Exact GELU as `compositeGelu` computes it (`max(x, 0) − ½|x|·erfc(|x|/√2)`), in float64 per element. */
function gelu(x: Float32Array, out: Float32Array): void {
  const last = erfcCoefficients.length - 1;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    const magnitude = Math.abs(v);
    const z = magnitude * Math.SQRT1_2;
    const t = 1 / (1 + 0.5 * z);
    let polynomial = erfcCoefficients[last]!;
    for (let k = last - 1; k >= 0; k--) polynomial = polynomial * t + erfcCoefficients[k]!;
    out[i] = Math.max(v, 0) - 0.5 * magnitude * t * Math.exp(polynomial - z * z);
  }
}

/**
 * For each row of `x`'s leading shape, the row of a table whose leading shape broadcasts against it
 * (right-aligned; axes of size 1 repeat).
 */
function broadcastRows(xLead: readonly number[], tableLead: readonly number[]): Int32Array {
  const rank = xLead.length;
  const padded = [...new Array<number>(rank - tableLead.length).fill(1), ...tableLead];
  const strides = new Array<number>(rank).fill(0);
  let stride = 1;
  for (let axis = rank - 1; axis >= 0; axis--) {
    strides[axis] = padded[axis] === 1 ? 0 : stride;
    stride *= padded[axis]!;
  }
  const rows = xLead.reduce((n, d) => n * d, 1);
  const map = new Int32Array(rows);
  const index = new Array<number>(rank).fill(0);
  for (let row = 0; row < rows; row++) {
    let at = 0;
    for (let axis = 0; axis < rank; axis++) at += index[axis]! * strides[axis]!;
    map[row] = at;
    for (let axis = rank - 1; axis >= 0; axis--) {
      if (++index[axis]! < xLead[axis]!) break;
      index[axis] = 0;
    }
  }
  return map;
}

/** Rotate-half RoPE: `[x₁·cos − x₂·sin, x₂·cos + x₁·sin]` per row, table rows by {@link broadcastRows}. */
function rope(
  x: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  tableRows: Int32Array,
  width: number,
  out: Float32Array,
): void {
  const half = width / 2;
  for (let row = 0; row < tableRows.length; row++) {
    const base = row * width;
    const table = tableRows[row]! * half;
    for (let i = 0; i < half; i++) {
      const a = x[base + i]!;
      const b = x[base + half + i]!;
      const c = cos[table + i]!;
      const s = sin[table + i]!;
      out[base + i] = a * c - b * s;
      out[base + half + i] = b * c + a * s;
    }
  }
}

interface AttentionShape {
  batch: number;
  length: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  slots: number;
  scale: number;
  queryOffset: number;
  keyLength: number;
  /** Sliding window (`window` of the attention options); undefined: none. */
  window: number | undefined;
  /** Score soft-cap (`softCap` of the attention options); undefined: none. */
  softCap: number | undefined;
}

/** The keys query row `t` sees: `first … end − 1`. */
function visibleKeys(
  s: Pick<AttentionShape, 'queryOffset' | 'keyLength' | 'window'>,
  t: number,
): { first: number; end: number } {
  const end = Math.min(s.queryOffset + t, s.keyLength - 1) + 1;
  const first = s.window === undefined ? 0 : Math.max(0, s.queryOffset + t + 1 - s.window);
  return { first, end };
}

/**
 * One query row and head of causal GQA in float64: scores of keys `first … end − 1` (`keyRows[j] + head`
 * is the element offset of key position `j`'s head), optionally soft-capped, softmax, weighted sum of the
 * values at the same offsets into `out[qBase …]`. Both JS attention kernels run every row through it,
 * so contiguous and paged attention do the same sums in the same order.
 */
function attendRow(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  qBase: number,
  keyRows: Int32Array,
  head: number,
  keys: { first: number; end: number },
  s: { headDim: number; scale: number; softCap: number | undefined },
  scratch: { scores: Float64Array; accumulator: Float64Array },
  out: Float32Array,
): void {
  const { headDim, scale, softCap } = s;
  const { scores, accumulator } = scratch;
  const { first, end } = keys;
  let max = Number.NEGATIVE_INFINITY;
  for (let j = first; j < end; j++) {
    const at = keyRows[j]! + head;
    let dot = 0;
    for (let i = 0; i < headDim; i++) dot += q[qBase + i]! * k[at + i]!;
    const score = softCap === undefined ? dot * scale : softCap * Math.tanh((dot * scale) / softCap);
    scores[j] = score;
    if (score > max) max = score;
  }
  let total = 0;
  accumulator.fill(0);
  for (let j = first; j < end; j++) {
    const weight = Math.exp(scores[j]! - max);
    total += weight;
    const at = keyRows[j]! + head;
    for (let i = 0; i < headDim; i++) accumulator[i]! += weight * v[at + i]!;
  }
  for (let i = 0; i < headDim; i++) out[qBase + i] = accumulator[i]! / total;
}

/** Causal GQA: one query row at a time, scores and the weighted sum in float64. */
function attention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  s: AttentionShape,
  out: Float32Array,
): void {
  const { batch, length, heads, kvHeads, headDim, slots, keyLength } = s;
  const scratch = { scores: new Float64Array(keyLength), accumulator: new Float64Array(headDim) };
  const kvWidth = kvHeads * headDim;
  const keyRows = new Int32Array(slots);
  for (let b = 0; b < batch; b++) {
    for (let j = 0; j < slots; j++) keyRows[j] = (b * slots + j) * kvWidth;
    for (let t = 0; t < length; t++) {
      const keys = visibleKeys(s, t);
      for (let h = 0; h < heads; h++) {
        const head = Math.floor((h * kvHeads) / heads) * headDim;
        attendRow(q, k, v, ((b * length + t) * heads + h) * headDim, keyRows, head, keys, s, scratch, out);
      }
    }
  }
}

/** A {@link PagedAttentionShape} span, decoded from the kernel's flat `table` attribute. */
interface PagedSpan {
  rows: number;
  queryOffset: number;
  keyLength: number;
  pages: Int32Array;
}

interface PagedAttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  pageSize: number;
  scale: number;
  /** Sliding window; undefined: none (the JS kernel only: the SIMD one declines it). */
  window: number | undefined;
  /** Score soft-cap; undefined: none (the JS kernel only). */
  softCap: number | undefined;
  spans: PagedSpan[];
}

/**
 * {@link attention} for a ragged batch of spans over paged pools `[pages, pageSize, kvH, D]`, read in
 * place by page: the same rows through {@link attendRow}, only the key rows' addresses differ.
 */
function pagedAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  s: PagedAttentionShape,
  out: Float32Array,
): void {
  const { heads, kvHeads, headDim, pageSize } = s;
  const kvWidth = kvHeads * headDim;
  let firstRow = 0;
  for (const { rows, queryOffset, keyLength, pages } of s.spans) {
    const scratch = { scores: new Float64Array(keyLength), accumulator: new Float64Array(headDim) };
    // Element offset in a pool of each key position's row.
    const keyRows = new Int32Array(keyLength);
    for (let j = 0; j < keyLength; j++) {
      keyRows[j] = (pages[Math.floor(j / pageSize)]! * pageSize + (j % pageSize)) * kvWidth;
    }
    const span = { queryOffset, keyLength, window: s.window };
    for (let t = 0; t < rows; t++) {
      const keys = visibleKeys(span, t);
      for (let h = 0; h < heads; h++) {
        const head = Math.floor((h * kvHeads) / heads) * headDim;
        attendRow(q, k, v, ((firstRow + t) * heads + h) * headDim, keyRows, head, keys, s, scratch, out);
      }
    }
    firstRow += rows;
  }
}

/** The shape record of the paged kernels, from the queries `[1, M, H, D]`, the key pool and the attrs. */
function pagedAttentionShape(
  queries: tf.TensorInfo,
  keyPool: tf.TensorInfo,
  attrs: unknown,
): PagedAttentionShape {
  const {
    scale,
    spans: count,
    table,
    window,
    softCap,
  } = attrs as {
    scale: number;
    spans: number;
    table: number[];
    window?: number;
    softCap?: number;
  };
  const pageSize = keyPool.shape[1]!;
  const spans: PagedSpan[] = [];
  for (let span = 0, at = 0; span < count; span++) {
    const [rows, queryOffset, keyLength] = [table[at]!, table[at + 1]!, table[at + 2]!];
    const pageCount = Math.ceil(keyLength / pageSize);
    spans.push({
      rows,
      queryOffset,
      keyLength,
      pages: Int32Array.from(table.slice(at + 3, at + 3 + pageCount)),
    });
    at += 3 + pageCount;
  }
  return {
    heads: queries.shape[2]!,
    headDim: queries.shape[3]!,
    kvHeads: keyPool.shape[2]!,
    pageSize,
    scale,
    window,
    softCap,
    spans,
  };
}

/**
 * The gradient of {@link attention} for all three inputs at once, recomputing the softmax weights row by
 * row: with `P` the weights of a query row, `O` its output and `dO` its upstream gradient,
 * `dV_j += P_j·dO`, `dS_j = P_j·(dO·V_j − dO·O)`, `dQ = scale·Σ_j dS_j·K_j`, `dK_j += scale·dS_j·Q`.
 * `dK` and `dV` must be zero on entry (slots past `keyLength` stay zero).
 */
function attentionGrad(
  [q, k, v, o, dO]: Float32Array[],
  s: AttentionShape,
  [dQ, dK, dV]: Float32Array[],
): void {
  const { batch, length, heads, kvHeads, headDim, slots, scale, keyLength, softCap } = s;
  const weights = new Float64Array(keyLength);
  // d(capped score)/d(scaled score) = 1 − tanh² per key, 1 without a cap.
  const capSlope = new Float64Array(keyLength).fill(1);
  const dQRow = new Float64Array(headDim);
  const kvWidth = kvHeads * headDim;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      const { first, end: visible } = visibleKeys(s, t);
      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor((h * kvHeads) / heads);
        const row = ((b * length + t) * heads + h) * headDim;
        const kBase = b * slots * kvWidth + kvh * headDim;
        let max = Number.NEGATIVE_INFINITY;
        for (let j = first; j < visible; j++) {
          const at = kBase + j * kvWidth;
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += q![row + i]! * k![at + i]!;
          weights[j] = dot * scale;
          if (softCap !== undefined) {
            const capped = Math.tanh(weights[j]! / softCap);
            capSlope[j] = 1 - capped * capped;
            weights[j] = softCap * capped;
          }
          if (weights[j]! > max) max = weights[j]!;
        }
        let total = 0;
        for (let j = first; j < visible; j++) {
          weights[j] = Math.exp(weights[j]! - max);
          total += weights[j]!;
        }
        let dOdotO = 0;
        for (let i = 0; i < headDim; i++) dOdotO += dO![row + i]! * o![row + i]!;
        dQRow.fill(0);
        for (let j = first; j < visible; j++) {
          const p = weights[j]! / total;
          const at = kBase + j * kvWidth;
          let dP = 0;
          for (let i = 0; i < headDim; i++) {
            dP += dO![row + i]! * v![at + i]!;
            dV![at + i]! += p * dO![row + i]!;
          }
          const dS = p * (dP - dOdotO) * scale * capSlope[j]!;
          for (let i = 0; i < headDim; i++) {
            dQRow[i]! += dS * k![at + i]!;
            dK![at + i]! += dS * q![row + i]!;
          }
        }
        for (let i = 0; i < headDim; i++) dQ![row + i] = dQRow[i]!;
      }
    }
  }
}

const SQRT_TWO_OVER_PI = Math.sqrt(2 / Math.PI);

function gatedActivation(gate: Float32Array, up: Float32Array, silu: boolean, out: Float32Array): void {
  if (silu) {
    for (let i = 0; i < gate.length; i++) out[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
  } else {
    for (let i = 0; i < gate.length; i++) {
      const x = gate[i]!;
      out[i] = 0.5 * x * (1 + Math.tanh(SQRT_TWO_OVER_PI * (x + 0.044715 * x * x * x))) * up[i]!;
    }
  }
}

/** Attributes of the `addLowRank` kernel: `[rows, start, rank]` per segment, and the segments' scales. */
interface LowRankTable {
  table: number[];
  scales: number[];
}

/**
 * `out = base + scale·(x·Aᵀ)·B` per segment of rows (see `Backend.addLowRank`): per row, each adapter row
 * `k`'s dot product with `x`, then that times `B`'s row `k` summed into a float64 row, added to `base`
 * once. Each row alone, in a fixed order.
 */
function addLowRank(
  base: Float32Array,
  x: Float32Array,
  aRows: Float32Array,
  bRows: Float32Array,
  inner: number,
  out: number,
  { table, scales }: LowRankTable,
  output: Float32Array,
): void {
  const update = new Float64Array(out);
  let row = 0;
  for (let segment = 0; segment < scales.length; segment++) {
    const [rows, start, rank] = [table[3 * segment]!, table[3 * segment + 1]!, table[3 * segment + 2]!];
    const scale = scales[segment]!;
    for (let r = row; r < row + rows; r++) {
      update.fill(0);
      for (let k = start; k < start + rank; k++) {
        let shrunk = 0;
        for (let i = 0; i < inner; i++) shrunk += x[r * inner + i]! * aRows[k * inner + i]!;
        shrunk *= scale;
        for (let j = 0; j < out; j++) update[j]! += shrunk * bRows[k * out + j]!;
      }
      for (let j = 0; j < out; j++) output[r * out + j] = base[r * out + j]! + update[j]!;
    }
    row += rows;
  }
}

/**
 * `table[indices]` along axis 0: output row `i` is a copy of table row `indices[i]` (`rowSize` values).
 *
 * NOTE: tfjs-wasm's own GatherV2 costs ≈ 10 µs a call plus ≈ 45 ns a value (bench/depth-overhead.ts: a
 * `[512, 64]` table, 8 rows, 32 µs); its C++ loop maps every output value back to an index through the
 * strides one at a time. Copying whole rows is a plain memcpy per row, which an embedding lookup and the
 * serving engine's row gathers (a few rows a step, every step) are.
 */
function gatherRows(
  table: Float32Array | Int32Array,
  indices: Int32Array,
  rowSize: number,
  out: Float32Array | Int32Array,
): void {
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i]!;
    out.set(table.subarray(index * rowSize, (index + 1) * rowSize), i * rowSize);
  }
}

/** Throws a RangeError naming the first index outside a table of `rows` rows (before any allocation). */
function checkRowIndices(indices: Int32Array, rows: number): void {
  for (const index of indices) {
    if (!(index >= 0 && index < rows)) {
      throw new RangeError(`gather: index ${index} is outside the table's rows 0…${rows - 1}`);
    }
  }
}

function kernels(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: fusedKernelNames.addLowRank,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { base, x, aRows, bRows } = inputs as Record<'base' | 'x' | 'aRows' | 'bRows', tf.TensorInfo>;
        const [inner, out] = [x.shape[1]!, base.shape[1]!];
        const segments = attrs as unknown as LowRankTable;
        if (backendName === 'wasm') {
          const output = addLowRankOnWasmSimd(backend as WasmBackendLike, [base, x, aRows, bRows], segments);
          if (output) return output;
        }
        return hostCompute(
          backendName,
          backend,
          [base, x, aRows, bRows],
          [...base.shape],
          ([b, xs, a, bs], o) => addLowRank(b!, xs!, a!, bs!, inner, out, segments, o),
        );
      },
    },
    {
      kernelName: fusedKernelNames.gatherRows,
      backendName,
      kernelFunc: ({ inputs, backend }) => {
        const { table, indices } = inputs as { table: tf.TensorInfo; indices: tf.TensorInfo };
        const rowShape = table.shape.slice(1);
        const rowSize = rowShape.reduce((n, d) => n * d, 1);
        const shape = [...indices.shape, ...rowShape];
        const size = shape.reduce((n, d) => n * d, 1);
        const dtype = table.dtype as 'float32' | 'int32';
        const rows = table.shape[0]!;
        if (backendName === 'wasm') {
          const wasm = backend as WasmLike;
          const view = (info: tf.TensorInfo) =>
            wasm.typedArrayFromHeap(info) as unknown as Float32Array | Int32Array;
          checkRowIndices(view(indices) as Int32Array, rows);
          // Views after the output's allocation, which may grow the heap (detaching earlier views).
          const output = wasm.makeOutput(shape, dtype);
          gatherRows(view(table), view(indices) as Int32Array, rowSize, view(output));
          return output;
        }
        const cpu = backend as CpuLike;
        const values = (info: tf.TensorInfo) =>
          cpu.data.get(info.dataId).values as unknown as Float32Array | Int32Array;
        checkRowIndices(values(indices) as Int32Array, rows);
        const out = dtype === 'int32' ? new Int32Array(size) : new Float32Array(size);
        gatherRows(values(table), values(indices) as Int32Array, rowSize, out);
        return cpu.makeTensorInfo(shape, dtype, out as Float32Array);
      },
    },
    {
      kernelName: fusedKernelNames.rmsNorm,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x, weight } = inputs as { x: tf.TensorInfo; weight: tf.TensorInfo };
        const eps = (attrs as { eps: number }).eps;
        return hostCompute(backendName, backend, [x, weight], [...x.shape], ([xs, ws], out) =>
          rmsNorm(xs!, ws!, eps, out),
        );
      },
    },
    {
      kernelName: fusedKernelNames.layerNorm,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x, weight, bias } = inputs as Record<'x' | 'weight' | 'bias', tf.TensorInfo>;
        const eps = (attrs as { eps: number }).eps;
        return hostCompute(backendName, backend, [x, weight, bias], [...x.shape], ([xs, ws, bs], out) =>
          layerNorm(xs!, ws!, bs!, eps, out),
        );
      },
    },
    {
      kernelName: fusedKernelNames.gelu,
      backendName,
      kernelFunc: ({ inputs, backend }) => {
        const { x } = inputs as { x: tf.TensorInfo };
        return hostCompute(backendName, backend, [x], [...x.shape], ([xs], out) => gelu(xs!, out));
      },
    },
    {
      kernelName: fusedKernelNames.rope,
      backendName,
      kernelFunc: ({ inputs, backend }) => {
        const { x, cos, sin } = inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
        const tableRows = broadcastRows(x.shape.slice(0, -1), cos.shape.slice(0, -1));
        const width = x.shape[x.shape.length - 1]!;
        return hostCompute(backendName, backend, [x, cos, sin], [...x.shape], ([xs, c, s], out) =>
          rope(xs!, c!, s!, tableRows, width, out),
        );
      },
    },
    {
      kernelName: fusedKernelNames.attention,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { queries, keys, values } = inputs as Record<'queries' | 'keys' | 'values', tf.TensorInfo>;
        const shape = attentionShape(queries, keys, attrs);
        if (backendName === 'wasm') {
          const output = attentionOnWasmSimd(backend as WasmBackendLike, [queries, keys, values], shape);
          if (output) return output;
        }
        return hostCompute(
          backendName,
          backend,
          [queries, keys, values],
          [...queries.shape],
          ([q, k, v], out) => attention(q!, k!, v!, shape, out),
        );
      },
    },
    {
      kernelName: fusedKernelNames.pagedAttention,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { queries, keyPool, valuePool } = inputs as Record<
          'queries' | 'keyPool' | 'valuePool',
          tf.TensorInfo
        >;
        const shape = pagedAttentionShape(queries, keyPool, attrs);
        if (backendName === 'wasm') {
          const output = pagedAttentionOnWasmSimd(
            backend as WasmBackendLike,
            [queries, keyPool, valuePool],
            shape,
          );
          if (output) return output;
        }
        return hostCompute(
          backendName,
          backend,
          [queries, keyPool, valuePool],
          [...queries.shape],
          ([q, k, v], out) => pagedAttention(q!, k!, v!, shape, out),
        );
      },
    },
    {
      kernelName: fusedKernelNames.attentionGrad,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { queries, keys, values, output, dy } = inputs as Record<
          'queries' | 'keys' | 'values' | 'output' | 'dy',
          tf.TensorInfo
        >;
        const shape = attentionShape(queries, keys, attrs);
        if (backendName === 'wasm') {
          const outputs = attentionGradOnWasmSimd(
            backend as WasmBackendLike,
            [queries, keys, values, output, dy],
            shape,
          );
          if (outputs) return outputs;
        }
        return hostComputeMany(
          backendName,
          backend,
          [queries, keys, values, output, dy],
          [[...queries.shape], [...keys.shape], [...values.shape]],
          (ins, outs) => attentionGrad(ins, shape, outs),
        );
      },
    },
    {
      kernelName: fusedKernelNames.gatedActivation,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo };
        const silu = (attrs as { activation: string }).activation === 'silu';
        if (silu && backendName === 'wasm') {
          const output = siluGateOnWasmSimd(backend as WasmBackendLike, gate, up);
          if (output) return output;
        }
        return hostCompute(backendName, backend, [gate, up], [...gate.shape], ([g, u], out) =>
          gatedActivation(g!, u!, silu, out),
        );
      },
    },
  ];
}

/**
 * The gradient of `RrtAttention`: one `RrtAttentionGrad` kernel computes all three input gradients when
 * tfjs asks for them. NOTE: it runs eagerly in `gradFunc`, not in the per-input closures: tfjs calls only
 * the closures of inputs on the path to the variables, each in its own scope, so tensors shared between
 * closures would be freed by the first or leak when one is never called; made here, they belong to the
 * backward pass's scope, which frees whatever is not used.
 */
const attentionGradient: tf.GradConfig = {
  kernelName: fusedKernelNames.attention,
  inputsToSave: ['queries', 'keys', 'values'],
  outputsToSave: [true],
  gradFunc: (dy, saved, attrs) => {
    const [queries, keys, values, output] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    const [dQ, dK, dV] = tf
      .engine()
      .runKernel(
        fusedKernelNames.attentionGrad,
        { queries, keys, values, output, dy: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
    return { queries: () => dQ!, keys: () => dK!, values: () => dV! };
  },
};

/**
 * The gradient of `RrtRope`. With `y₁ = x₁c − x₂s`, `y₂ = x₂c + x₁s`: `dx = rope(dy, c, −s)` (the inverse
 * rotation, one fused dispatch), `dc = Σ x₁dy₁ + x₂dy₂` and `ds = Σ x₁dy₂ − x₂dy₁` over the axes the
 * tables were broadcast along (composite; the decoder's tables are constants, so it never asks).
 */
const ropeGradient: tf.GradConfig = {
  kernelName: fusedKernelNames.rope,
  inputsToSave: ['x', 'cos', 'sin'],
  gradFunc: (dyIn, saved) => {
    const dy = dyIn as tf.Tensor;
    const [x, cos, sin] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
    const halves = (t: tf.Tensor) => {
      const half = t.shape[t.rank - 1]! / 2;
      const begin = new Array<number>(t.rank).fill(0);
      const size = [...t.shape.slice(0, -1), half];
      return [tf.slice(t, begin, size), tf.slice(t, [...begin.slice(0, -1), half], size)] as const;
    };
    return {
      x: () => tf.engine().runKernel(fusedKernelNames.rope, { x: dy, cos, sin: tf.neg(sin) }) as tf.Tensor,
      cos: () => {
        const [x1, x2] = halves(x);
        const [dy1, dy2] = halves(dy);
        return unbroadcast(tf.add(tf.mul(x1, dy1), tf.mul(x2, dy2)), cos.shape);
      },
      sin: () => {
        const [x1, x2] = halves(x);
        const [dy1, dy2] = halves(dy);
        return unbroadcast(tf.sub(tf.mul(x1, dy2), tf.mul(x2, dy1)), sin.shape);
      },
    };
  },
};

/** Registers the fused kernels for `backendName` (once); returns whether it is one they run on. */
export function registerHostKernels(backendName: string): boolean {
  if (!(hostKernelBackends as readonly string[]).includes(backendName)) return false;
  for (const config of kernels(backendName)) {
    if (tf.getKernel(config.kernelName, backendName) === undefined) tf.registerKernel(config);
  }
  if (tf.getGradient(fusedKernelNames.attention) === undefined) tf.registerGradient(attentionGradient);
  if (tf.getGradient(fusedKernelNames.rope) === undefined) tf.registerGradient(ropeGradient);
  return true;
}

/**
 * Writes `rows` into `target` at flattened row `indices`, in place (see `Backend.writeRows`): on cpu and
 * wasm into the tensor's own memory, on webgpu as buffer-to-buffer copies in tfjs's command stream.
 */
export function writeRowsInPlace(target: tf.Tensor, indices: ArrayLike<number>, rows: tf.Tensor): void {
  const backendName = tf.getBackend();
  const backend = tf.backend() as unknown;
  const rowSize = rows.size / indices.length;
  if (backendName === 'wasm') {
    const wasm = backend as WasmLike;
    const to = wasm.typedArrayFromHeap(target);
    const from = wasm.typedArrayFromHeap(rows);
    for (let i = 0; i < indices.length; i++)
      to.set(from.subarray(i * rowSize, (i + 1) * rowSize), indices[i]! * rowSize);
    return;
  }
  if (backendName === 'webgpu') {
    writeRowsWebgpu(backend as WebgpuLike, target, indices, rows, rowSize);
    return;
  }
  // cpu, and any backend that keeps a typed array per tensor.
  const cpu = backend as CpuLike;
  const to = cpu.data.get(target.dataId).values;
  const from = cpu.data.get(rows.dataId).values;
  if (!to || !from) throw new Error(`writeRows: the tfjs backend "${backendName}" holds no host arrays`);
  for (let i = 0; i < indices.length; i++)
    to.set(from.subarray(i * rowSize, (i + 1) * rowSize), indices[i]! * rowSize);
}

interface WebgpuLike {
  tensorMap: { get(dataId: object): { values: unknown; resource?: unknown } };
  uploadToGPU(dataId: object): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  commandEncoder: {
    copyBufferToBuffer(src: unknown, srcOffset: number, dst: unknown, dstOffset: number, size: number): void;
  };
}

/**
 * NOTE: tfjs-webgpu has no public in-place write; this uses its backend's own upload and command-encoder
 * methods (the pattern of its `copyBuffer`), and drops any host copy of `target` so that a later read
 * fetches the new contents. Consecutive indices become one copy.
 */
function writeRowsWebgpu(
  gpu: WebgpuLike,
  target: tf.Tensor,
  indices: ArrayLike<number>,
  rows: tf.Tensor,
  rowSize: number,
): void {
  gpu.uploadToGPU(target.dataId);
  gpu.uploadToGPU(rows.dataId);
  const to = gpu.tensorMap.get(target.dataId);
  const from = gpu.tensorMap.get(rows.dataId).resource;
  gpu.ensureCommandEncoderReady();
  gpu.endComputePassEncoder();
  const rowBytes = rowSize * 4;
  for (let i = 0; i < indices.length; ) {
    let run = 1;
    while (i + run < indices.length && indices[i + run] === indices[i]! + run) run++;
    gpu.commandEncoder.copyBufferToBuffer(
      from,
      i * rowBytes,
      to.resource,
      indices[i]! * rowBytes,
      run * rowBytes,
    );
    i += run;
  }
  to.values = null;
  gpu.submitQueue();
}

/** The shape record the attention kernels take, from the queries `[B, T, H, D]`, keys `[B, S, kvH, D]` and attrs. */
function attentionShape(queries: tf.TensorInfo, keys: tf.TensorInfo, attrs: unknown): AttentionShape {
  const [batch, length, heads, headDim] = queries.shape as [number, number, number, number];
  const { scale, queryOffset, keyLength, window, softCap } = attrs as {
    scale: number;
    queryOffset: number;
    keyLength: number;
    window?: number;
    softCap?: number;
  };
  return {
    batch,
    length,
    heads,
    headDim,
    kvHeads: keys.shape[2]!,
    slots: keys.shape[1]!,
    scale,
    queryOffset,
    keyLength,
    // tfjs attrs cannot hold undefined: 0 stands for none.
    window: window ? window : undefined,
    softCap: softCap ? softCap : undefined,
  };
}
