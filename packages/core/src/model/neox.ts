/**
 * GPT-NeoX / Pythia checkpoints seen in the tensor names every other part of rrt reads (Llama's), and
 * back: {@link neoxCheckpointView} for loading and converting, {@link neoxTensorName} and
 * {@link fuseQkvRows} for writing a plain `gpt_neox` checkpoint again.
 *
 * NOTE: why a renaming view rather than NeoX names throughout. The decoder, the loader, the converter and
 * the exporter all address a layer's tensors as `model.layers.N.self_attn.q_proj` and so on; NeoX differs
 * only in names and in one fused tensor. Splitting the fused QKV once, here, at the checkpoint boundary
 * keeps one copy of every other piece of code, and gives the converter q, k and v as the separate
 * modules the paper's per-module LoRA needs. A recursive `rrt_gpt_neox` checkpoint is rrt's own format
 * and is written in the canonical names directly.
 *
 * @module
 */
import { WeightError } from '../errors.js';
import type { Checkpoint, CheckpointTensorInfo, RawTensor } from '../safetensors/index.js';
import type { ModelConfig } from './config.js';

/** The tensor whose presence marks a checkpoint written with GPT-NeoX's own names. */
export const neoxEmbeddingName = 'gpt_neox.embed_in.weight';

const attentionParts = ['q_proj', 'k_proj', 'v_proj'] as const;

/** Where one canonical tensor lives in a NeoX checkpoint: a whole tensor, or one part of the fused QKV. */
interface NeoxSource {
  name: string;
  /** q, k or v: rows `[part·hD, (part + 1)·hD)` of each head's `3·hD` rows of `query_key_value`. */
  part?: number;
}

/**
 * The NeoX name of a canonical (Llama-layout) tensor name, or `undefined` for names NeoX does not have.
 * q, k and v map to the fused `attention.query_key_value` with the part they take.
 */
function neoxSource(name: string): NeoxSource | undefined {
  if (name === 'model.embed_tokens.weight') return { name: neoxEmbeddingName };
  if (name === 'lm_head.weight') return { name: 'embed_out.weight' };
  const final = /^model\.norm\.(weight|bias)$/.exec(name);
  if (final) return { name: `gpt_neox.final_layer_norm.${final[1]}` };
  const layer = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  if (!layer) return undefined;
  const [, index, module, kind] = layer;
  const prefix = `gpt_neox.layers.${index}`;
  if (module === 'input_layernorm' || module === 'post_attention_layernorm') {
    return { name: `${prefix}.${module}.${kind}` };
  }
  const part = attentionParts.indexOf(module!.replace('self_attn.', '') as (typeof attentionParts)[number]);
  if (module!.startsWith('self_attn.') && part >= 0) {
    return { name: `${prefix}.attention.query_key_value.${kind}`, part };
  }
  const renamed: Record<string, string> = {
    'self_attn.o_proj': 'attention.dense',
    'mlp.up_proj': 'mlp.dense_h_to_4h',
    'mlp.down_proj': 'mlp.dense_4h_to_h',
  };
  return renamed[module!] ? { name: `${prefix}.${renamed[module!]}.${kind}` } : undefined;
}

/**
 * The NeoX tensor name of a canonical one, for writing a plain `gpt_neox` checkpoint; the three attention
 * parts all name the fused `query_key_value` (write them with {@link fuseQkvRows}).
 *
 * @example
 * ```ts
 * neoxTensorName('model.layers.3.mlp.up_proj.weight'); // 'gpt_neox.layers.3.mlp.dense_h_to_4h.weight'
 * ```
 */
export function neoxTensorName(name: string): string {
  const source = neoxSource(name);
  if (!source) throw new RangeError(`${name} has no GPT-NeoX counterpart`);
  return source.name;
}

/**
 * Copies the rows of part `part` (0: q, 1: k, 2: v) out of a fused `query_key_value` weight or bias,
 * stored `[heads, 3, headDim, ...]` row-major, as `[heads·headDim, ...]`. Works on the raw bytes, so the
 * stored dtype is kept exactly.
 */
function splitQkvBytes(fused: Uint8Array, heads: number, part: number): Uint8Array {
  const rowBlock = fused.length / (heads * 3); // bytes of one head's q (or k or v) rows
  const out = new Uint8Array(heads * rowBlock);
  for (let head = 0; head < heads; head++) {
    const from = (head * 3 + part) * rowBlock;
    out.set(fused.subarray(from, from + rowBlock), head * rowBlock);
  }
  return out;
}

/**
 * Interleaves q, k and v (`[heads·headDim, ...]` each, row-major, any element type) into the fused
 * NeoX layout `[heads, 3, headDim, ...]`: q, k, v of head 0, then of head 1, and so on. The inverse of the
 * split {@link neoxCheckpointView} makes.
 */
export function fuseQkvRows<T extends Uint8Array | Float32Array | Float64Array>(
  parts: readonly [T, T, T],
  heads: number,
): T {
  const [q] = parts;
  const block = q.length / heads; // elements of one head's rows of one part
  const out = new (q.constructor as new (length: number) => T)(3 * q.length);
  for (let head = 0; head < heads; head++) {
    for (let part = 0; part < 3; part++) {
      out.set(parts[part]!.subarray(head * block, (head + 1) * block), (head * 3 + part) * block);
    }
  }
  return out;
}

/**
 * A view of a checkpoint with GPT-NeoX tensor names in the canonical names the loader and the converter
 * read: `gpt_neox.embed_in` as `model.embed_tokens`, `gpt_neox.layers.N.attention.query_key_value` as
 * `model.layers.N.self_attn.{q,k,v}_proj` (de-interleaved per head on read), `attention.dense` as
 * `o_proj`, `mlp.dense_h_to_4h` / `dense_4h_to_h` as `up_proj` / `down_proj`, the LayerNorms' weights and
 * biases under their own names, `final_layer_norm` as `model.norm`, `embed_out` as `lm_head`. Tensors
 * with no canonical name (old checkpoints' attention-mask and `inv_freq` buffers) stay as they are, so
 * that the loader reports them as unused. A checkpoint without `gpt_neox.embed_in.weight` (a recursive
 * `rrt_gpt_neox` one, written in canonical names) is returned unchanged.
 */
export function neoxCheckpointView(checkpoint: Checkpoint, config: ModelConfig): Checkpoint {
  if (!checkpoint.has(neoxEmbeddingName)) return checkpoint;
  const heads = config.numAttentionHeads;
  const headDim = config.headDim;
  const sources = new Map<string, NeoxSource>();
  const entries = new Map<string, CheckpointTensorInfo>();
  const canonicalNames = (neoxName: string): string[] => {
    const final = /^gpt_neox\.final_layer_norm\.(weight|bias)$/.exec(neoxName);
    if (final) return [`model.norm.${final[1]}`];
    if (neoxName === neoxEmbeddingName) return ['model.embed_tokens.weight'];
    if (neoxName === 'embed_out.weight') return ['lm_head.weight'];
    const layer = /^gpt_neox\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(neoxName);
    if (!layer) return [];
    const [, index, module, kind] = layer;
    const prefix = `model.layers.${index}`;
    const byModule: Record<string, string[]> = {
      input_layernorm: ['input_layernorm'],
      post_attention_layernorm: ['post_attention_layernorm'],
      'attention.query_key_value': attentionParts.map((part) => `self_attn.${part}`),
      'attention.dense': ['self_attn.o_proj'],
      'mlp.dense_h_to_4h': ['mlp.up_proj'],
      'mlp.dense_4h_to_h': ['mlp.down_proj'],
    };
    return (byModule[module!] ?? []).map((name) => `${prefix}.${name}.${kind}`);
  };
  for (const [neoxName, info] of checkpoint.entries) {
    const names = canonicalNames(neoxName);
    if (names.length === 0) {
      entries.set(neoxName, info);
      continue;
    }
    for (const name of names) {
      const source = neoxSource(name)!;
      sources.set(name, source);
      const fused = source.part !== undefined;
      if (fused) checkFusedShape(neoxName, info, 3 * heads * headDim, config.hiddenSize);
      // The header's name stays in `info.name`, so that errors about this entry name the stored tensor.
      const shape = fused ? [heads * headDim, ...info.shape.slice(1)] : info.shape;
      const byteLength = fused ? info.byteLength / 3 : info.byteLength;
      entries.set(name, { ...info, shape, byteLength });
    }
  }
  const readTensor = async (name: string): Promise<RawTensor> => {
    const source = sources.get(name);
    if (!source) return checkpoint.readTensor(name);
    const raw = await checkpoint.readTensor(source.name);
    if (source.part === undefined) return { ...raw, name };
    const bytes = splitQkvBytes(raw.bytes, heads, source.part);
    return { ...raw, name, shape: [heads * headDim, ...raw.shape.slice(1)], bytes };
  };
  return {
    path: checkpoint.path,
    indexFile: checkpoint.indexFile,
    shards: checkpoint.shards,
    entries,
    has: (name) => entries.has(name),
    readTensor,
    close: () => checkpoint.close(),
  };
}

/** A fused `query_key_value` must be `[3·heads·headDim, hidden]` (weight) or `[3·heads·headDim]` (bias). */
function checkFusedShape(name: string, info: CheckpointTensorInfo, rows: number, hidden: number): void {
  const expected = name.endsWith('.weight') ? [rows, hidden] : [rows];
  if (info.shape.length !== expected.length || info.shape.some((dim, axis) => dim !== expected[axis])) {
    throw new WeightError(
      info.file,
      name,
      `has shape [${info.shape.join(', ')}], expected [${expected.join(', ')}] (q, k and v of every head)`,
    );
  }
}
