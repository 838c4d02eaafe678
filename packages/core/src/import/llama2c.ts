/**
 * Imports a llama2.c checkpoint (the "legacy" fp32 `.bin` of karpathy/llama2.c and karpathy/tinyllamas)
 * and its tokenizer into rrt's canonical layout, a Hugging Face Llama directory: `config.json`,
 * `generation_config.json`, `tokenizer.json`, `tokenizer_config.json` and `model.safetensors`.
 *
 * The checkpoint layout (run.c `memory_map_weights`): a header of 7 little-endian int32 `dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len`, then fp32 arrays, matrices row-major [out, in]:
 *
 * ```
 * token_embedding [vocab, dim]        rms_att [layers, dim]           wq [layers, dim, dim]
 * wk [layers, kv_dim, dim]            wv [layers, kv_dim, dim]        wo [layers, dim, dim]
 * rms_ffn [layers, dim]               w1 [layers, hidden, dim]        w2 [layers, dim, hidden]
 * w3 [layers, hidden, dim]            rms_final [dim]
 * freq_cis_real [seq_len, head_dim/2] freq_cis_imag [seq_len, head_dim/2]
 * wcls [vocab, dim]                   (only when vocab_size < 0: an untied classifier)
 * ```
 *
 * @module
 */

import { randomBytes } from 'node:crypto';
import { type FileHandle, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { assertOutputApart, createTempDirectory } from '../output-directory.js';
import { replaceDirectory } from '../replace-directory.js';
import { writeSafetensors, type TensorToWrite } from '../safetensors/index.js';
import { buildLlamaTokenizerConfig, buildLlamaTokenizerJson } from '../tokenizer/llama-tokenizer-json.js';
import {
  detectTokenizerFormat,
  parseSentencePieceVocab,
  type TokenizerFileFormat,
} from '../tokenizer/sentencepiece.js';
import { ImportError, InterruptedError, TokenizerError } from '../errors.js';
import { tokenizerFromJson } from '../tokenizer/tokenizer.js';

/** The hyper-parameters in a llama2.c checkpoint header. */
export interface Llama2cHeader {
  /** Model width (`hidden_size`). */
  dim: number;
  /** FFN width (`intermediate_size`). */
  hiddenDim: number;
  /** Number of layers. */
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (GQA when fewer than `nHeads`). */
  nKvHeads: number;
  /** Vocabulary size (the absolute value of the header's field). */
  vocabSize: number;
  /** Maximum sequence length (`max_position_embeddings`). */
  seqLen: number;
  /** Whether the classifier shares the embedding (the header's vocab_size is positive). */
  sharedClassifier: boolean;
}

/** Progress of {@link importLlama2c}, one event per step, for a CLI progress bar. */
export type ImportProgress =
  | { stage: 'header'; header: Llama2cHeader; checkpointBytes: number }
  | { stage: 'tokenizer'; format: TokenizerFileFormat; vocabSize: number }
  | { stage: 'tensor'; name: string; index: number; count: number; bytesDone: number; bytesTotal: number }
  | { stage: 'done'; outDir: string };

/** Options of {@link importLlama2c}. */
export interface ImportLlama2cOptions {
  /** The llama2.c checkpoint (`stories15M.bin`, ...). */
  checkpointPath: string;
  /**
   * Its tokenizer: llama2.c's `tokenizer.bin`, a SentencePiece `tokenizer.model`, or an HF
   * `tokenizer.json`; told apart by content.
   */
  tokenizerPath: string;
  /** The directory to create. It must not exist, or be empty, unless `overwrite` is set. */
  outDir: string;
  /** Replace an existing, non-empty `outDir` (only once the new one is complete). Default `false`. */
  overwrite?: boolean;
  /** Called after each step. */
  onProgress?: (progress: ImportProgress) => void;
  /** Stops the import before the next tensor: its temporary output is removed, nothing is written. */
  signal?: AbortSignal;
}

/** What {@link importLlama2c} wrote. */
export interface ImportLlama2cResult {
  /** The directory written (absolute). */
  outDir: string;
  /** The checkpoint's header. */
  header: Llama2cHeader;
  /** The `config.json` written. */
  config: Record<string, unknown>;
  /** The format the tokenizer file was in. */
  tokenizerFormat: TokenizerFileFormat;
  /** The files written, relative to `outDir`. */
  files: string[];
  /** Number of tensors in `model.safetensors`. */
  tensorCount: number;
}

const HEADER_BYTES = 7 * 4;
const FLOAT_BYTES = 4;
/** llama2.c's newer exports (version 1 and 2) start with this magic instead of the legacy header. */
const LLAMA2C_MAGIC = 0x616b3432;
/** RoPE base of llama2.c (model.py `precompute_freqs_cis`); not stored in the checkpoint. */
const LLAMA2C_ROPE_THETA = 10000;

/**
 * Parses and checks a legacy llama2.c checkpoint header.
 *
 * @throws {@link ImportError} (`bad-header`, or `unsupported-format` for a version-1/2 export) naming `file`
 */
export function parseLlama2cHeader(bytes: Uint8Array, file: string): Llama2cHeader {
  if (bytes.length < HEADER_BYTES) {
    throw new ImportError(
      file,
      'size-mismatch',
      `is ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte llama2.c header`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const field = (i: number) => view.getInt32(i * 4, true);
  if (field(0) === LLAMA2C_MAGIC) {
    throw new ImportError(
      file,
      'unsupported-format',
      `is a llama2.c version-${field(1)} export (magic "ak42"); only the legacy fp32 format (export.py ` +
        '--version 0) is read',
    );
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = [0, 1, 2, 3, 4, 5, 6].map(field) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const header: Llama2cHeader = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(rawVocab),
    seqLen,
    sharedClassifier: rawVocab > 0,
  };
  const bad = (problem: string): never => {
    throw new ImportError(
      file,
      'bad-header',
      `header [dim ${dim}, hidden_dim ${hiddenDim}, n_layers ${nLayers}, n_heads ${nHeads}, n_kv_heads ${nKvHeads}, ` +
        `vocab_size ${rawVocab}, seq_len ${seqLen}] is not a llama2.c checkpoint: ${problem}`,
    );
  };
  const inRange = (name: string, value: number, max: number) => {
    if (value < 1 || value > max) bad(`${name} must be in [1, ${max}]`);
  };
  inRange('dim', dim, 1 << 16);
  inRange('hidden_dim', hiddenDim, 1 << 18);
  inRange('n_layers', nLayers, 1024);
  inRange('n_heads', nHeads, dim);
  inRange('n_kv_heads', nKvHeads, nHeads);
  inRange('|vocab_size|', header.vocabSize, 1 << 22);
  inRange('seq_len', seqLen, 1 << 22);
  if (dim % nHeads !== 0) bad('dim must be a multiple of n_heads');
  if ((dim / nHeads) % 2 !== 0) bad('the head size dim / n_heads must be even for RoPE');
  if (nHeads % nKvHeads !== 0) bad('n_heads must be a multiple of n_kv_heads');
  return header;
}

/** One array of the checkpoint: where it is and what it becomes. */
interface CheckpointArray {
  /** The llama2.c name (`wq`, `rms_att`, ...). */
  name: string;
  /** Byte offset of the whole array (all layers). */
  offset: number;
  /** Elements per layer (or in total, for arrays without layers). */
  layerElements: number;
  /** Number of layers stacked (1 for arrays without layers). */
  layers: number;
}

/** The checkpoint's arrays in file order, and its implied total size. */
function checkpointLayout(header: Llama2cHeader): {
  arrays: Map<string, CheckpointArray>;
  byteLength: number;
} {
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = header;
  const headDim = dim / nHeads;
  const kvDim = headDim * nKvHeads;
  const order: [string, number, number][] = [
    ['token_embedding', vocabSize * dim, 1],
    ['rms_att', dim, nLayers],
    ['wq', dim * dim, nLayers],
    ['wk', kvDim * dim, nLayers],
    ['wv', kvDim * dim, nLayers],
    ['wo', dim * dim, nLayers],
    ['rms_ffn', dim, nLayers],
    ['w1', hiddenDim * dim, nLayers],
    ['w2', dim * hiddenDim, nLayers],
    ['w3', hiddenDim * dim, nLayers],
    ['rms_final', dim, 1],
    ['freq_cis_real', (seqLen * headDim) / 2, 1],
    ['freq_cis_imag', (seqLen * headDim) / 2, 1],
  ];
  if (!header.sharedClassifier) order.push(['wcls', vocabSize * dim, 1]);
  const arrays = new Map<string, CheckpointArray>();
  let offset = HEADER_BYTES;
  for (const [name, layerElements, layers] of order) {
    arrays.set(name, { name, offset, layerElements, layers });
    offset += layerElements * layers * FLOAT_BYTES;
  }
  return { arrays, byteLength: offset };
}

/**
 * Reorders the rows of a query or key projection from llama2.c's RoPE layout to Hugging Face's: llama2.c
 * (like Meta's reference code) rotates adjacent pairs of dimensions `(2i, 2i+1)` of each head, HF rotates
 * halves `(i, i + headDim/2)`. Row `h·headDim + 2i + j` moves to `h·headDim + j·headDim/2 + i`; this is
 * `permute()` of transformers' `convert_llama_weights_to_hf.py`:
 * `w.view(n_heads, dim1 / n_heads / 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)`.
 *
 * @param rows - the matrix, row-major [nHeads · headDim, rowBytes / elementBytes], as bytes.
 * @param nHeads - heads in the matrix (`n_kv_heads` for the key projection).
 * @param rowBytes - bytes per row.
 */
export function permuteRopeRows(rows: Uint8Array, nHeads: number, rowBytes: number): Uint8Array {
  const headDim = rows.length / rowBytes / nHeads;
  const half = headDim / 2;
  const out = new Uint8Array(rows.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h * headDim + 2 * i + j;
        const to = h * headDim + j * half + i;
        out.set(rows.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

/** The HF `config.json` of a llama2.c model. */
function llamaConfig(header: Llama2cHeader, endIds: number[], bosId: number): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: header.dim,
    intermediate_size: header.hiddenDim,
    num_hidden_layers: header.nLayers,
    num_attention_heads: header.nHeads,
    num_key_value_heads: header.nKvHeads,
    head_dim: header.dim / header.nHeads,
    vocab_size: header.vocabSize,
    max_position_embeddings: header.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: LLAMA2C_ROPE_THETA,
    rope_scaling: null,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: header.sharedClassifier,
    bos_token_id: bosId,
    eos_token_id: endIds,
    torch_dtype: 'float32',
    initializer_range: 0.02,
    use_cache: true,
  };
}

/** The tokenizer files to write, converted as needed, with the facts the import checks. */
interface ConvertedTokenizer {
  format: TokenizerFileFormat;
  vocabSize: number;
  bosId: number;
  eosId: number;
  files: Record<string, unknown>;
}

async function convertTokenizer(tokenizerPath: string, modelMaxLength: number): Promise<ConvertedTokenizer> {
  const bytes = await readInput(tokenizerPath);
  const format = detectTokenizerFormat(bytes);
  try {
    if (format === 'tokenizer-json') {
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(bytes));
      } catch (error) {
        throw new TokenizerError(tokenizerPath, `is not valid JSON: ${(error as Error).message}`);
      }
      const tokenizer = tokenizerFromJson(json, { source: path.dirname(tokenizerPath) });
      return {
        format,
        vocabSize: tokenizer.vocabSize,
        bosId: tokenizer.bosId ?? 1,
        eosId: tokenizer.eosId ?? 2,
        files: { 'tokenizer.json': json },
      };
    }
    const vocab = parseSentencePieceVocab(bytes, tokenizerPath);
    return {
      format: vocab.format,
      vocabSize: vocab.pieces.length,
      bosId: vocab.bosId >= 0 ? vocab.bosId : 1,
      eosId: vocab.eosId >= 0 ? vocab.eosId : 2,
      files: {
        'tokenizer.json': buildLlamaTokenizerJson(vocab),
        'tokenizer_config.json': buildLlamaTokenizerConfig(vocab, modelMaxLength),
      },
    };
  } catch (error) {
    if (error instanceof TokenizerError) {
      throw new ImportError(tokenizerPath, 'bad-tokenizer', error.problem, { cause: error });
    }
    throw error;
  }
}

async function readInput(file: string): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (error) {
    throw missingFile(file, error);
  }
}

function missingFile(file: string, error: unknown): ImportError {
  const code = (error as NodeJS.ErrnoException).code;
  const problem = code === 'ENOENT' ? 'not found' : `cannot be read: ${(error as Error).message}`;
  return new ImportError(file, 'missing-file', problem, { cause: error });
}

/** Reads `length` bytes at `offset` into a fresh buffer. */
async function readAt(handle: FileHandle, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(out, done, length - done, offset + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${offset + done}`);
    done += bytesRead;
  }
  return out;
}

/**
 * Checks the stored RoPE tables against llama2.c's `theta = 10000`: the theta is not in the header, and a
 * model trained with another one would otherwise import silently wrong.
 */
async function checkRopeTables(
  handle: FileHandle,
  arrays: Map<string, CheckpointArray>,
  header: Llama2cHeader,
  file: string,
): Promise<void> {
  const half = header.dim / header.nHeads / 2;
  const positions = Math.min(header.seqLen, 32);
  const read = async (name: string) => {
    const array = arrays.get(name)!;
    const bytes = await readAt(handle, array.offset, positions * half * FLOAT_BYTES);
    return new Float32Array(bytes.buffer, bytes.byteOffset, positions * half);
  };
  const real = await read('freq_cis_real');
  const imag = await read('freq_cis_imag');
  for (let pos = 0; pos < positions; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * LLAMA2C_ROPE_THETA ** (-(2 * i) / (2 * half));
      const error = Math.max(
        Math.abs(real[pos * half + i]! - Math.cos(angle)),
        Math.abs(imag[pos * half + i]! - Math.sin(angle)),
      );
      if (!(error < 1e-3)) {
        throw new ImportError(
          file,
          'unsupported-format',
          `RoPE table at position ${pos}, frequency ${i} is not that of theta ${LLAMA2C_ROPE_THETA} ` +
            `(cos ${real[pos * half + i]}, expected ${Math.cos(angle)})`,
        );
      }
    }
  }
}

/** The tensors of `model.safetensors`, HF names, each read (and permuted) when the writer gets to it. */
function plannedTensors(
  handle: FileHandle,
  header: Llama2cHeader,
  arrays: Map<string, CheckpointArray>,
  onTensor: (name: string, bytes: number) => void,
): TensorToWrite[] {
  const { dim, hiddenDim, nHeads, nKvHeads, vocabSize } = header;
  const kvDim = (dim / nHeads) * nKvHeads;
  const tensors: TensorToWrite[] = [];
  const add = (name: string, source: string, layer: number, shape: number[], ropeHeads?: number) => {
    const array = arrays.get(source)!;
    const byteLength = array.layerElements * FLOAT_BYTES;
    tensors.push({
      name,
      dtype: 'F32',
      shape,
      bytes: async () => {
        const raw = await readAt(handle, array.offset + layer * byteLength, byteLength);
        const bytes =
          ropeHeads === undefined ? raw : permuteRopeRows(raw, ropeHeads, shape[1]! * FLOAT_BYTES);
        onTensor(name, byteLength);
        return bytes;
      },
    });
  };
  add('model.embed_tokens.weight', 'token_embedding', 0, [vocabSize, dim]);
  for (let i = 0; i < header.nLayers; i++) {
    const layer = `model.layers.${i}`;
    add(`${layer}.input_layernorm.weight`, 'rms_att', i, [dim]);
    add(`${layer}.self_attn.q_proj.weight`, 'wq', i, [dim, dim], nHeads);
    add(`${layer}.self_attn.k_proj.weight`, 'wk', i, [kvDim, dim], nKvHeads);
    add(`${layer}.self_attn.v_proj.weight`, 'wv', i, [kvDim, dim]);
    add(`${layer}.self_attn.o_proj.weight`, 'wo', i, [dim, dim]);
    add(`${layer}.post_attention_layernorm.weight`, 'rms_ffn', i, [dim]);
    add(`${layer}.mlp.gate_proj.weight`, 'w1', i, [hiddenDim, dim]);
    add(`${layer}.mlp.down_proj.weight`, 'w2', i, [dim, hiddenDim]);
    add(`${layer}.mlp.up_proj.weight`, 'w3', i, [hiddenDim, dim]);
  }
  add('model.norm.weight', 'rms_final', 0, [dim]);
  if (!header.sharedClassifier) add('lm_head.weight', 'wcls', 0, [vocabSize, dim]);
  return tensors;
}

/** Whether `dir` exists as a non-empty directory or as a file. */
async function outputState(dir: string): Promise<'absent' | 'empty' | 'occupied'> {
  try {
    const info = await stat(dir);
    if (!info.isDirectory()) return 'occupied';
    return (await readdir(dir)).length === 0 ? 'empty' : 'occupied';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw error;
  }
}

/**
 * Imports a llama2.c checkpoint and its tokenizer into a Hugging Face Llama directory. Query and key
 * projections are permuted from llama2.c's adjacent-pair RoPE to HF's rotate-half RoPE (see
 * {@link permuteRopeRows}); everything else is copied bit for bit. Tensors are read and written one at a
 * time. Everything is written to a temporary sibling directory that is renamed to `outDir` only when
 * complete, so a failure leaves no output.
 *
 * @throws {@link ImportError} for a missing input, a checkpoint whose size disagrees with its header, an
 *   impossible header, a malformed tokenizer, a tokenizer whose vocabulary size differs from the
 *   checkpoint's, or an occupied `outDir`.
 *
 * @example
 * ```ts
 * const result = await importLlama2c({
 *   checkpointPath: 'stories260K.bin',
 *   tokenizerPath: 'tok512.bin',
 *   outDir: 'models/stories260K',
 *   onProgress: (p) => { if (p.stage === 'tensor') console.log(`${p.index + 1}/${p.count} ${p.name}`); },
 * });
 * const model = await loadModel(result.outDir);
 * ```
 */
export async function importLlama2c(options: ImportLlama2cOptions): Promise<ImportLlama2cResult> {
  const { checkpointPath, tokenizerPath, onProgress, signal } = options;
  const outDir = path.resolve(options.outDir);
  await assertOutputApart(outDir, [{ path: checkpointPath }, { path: tokenizerPath }]);

  let handle: FileHandle;
  try {
    handle = await open(checkpointPath, 'r');
  } catch (error) {
    throw missingFile(checkpointPath, error);
  }
  try {
    const checkpointBytes = (await handle.stat()).size;
    const header = parseLlama2cHeader(
      await readAt(handle, 0, Math.min(HEADER_BYTES, checkpointBytes)),
      checkpointPath,
    );
    const { arrays, byteLength } = checkpointLayout(header);
    if (byteLength !== checkpointBytes) {
      const how = checkpointBytes < byteLength ? 'truncated' : 'longer than its header implies';
      throw new ImportError(
        checkpointPath,
        'size-mismatch',
        `is ${how}: the header implies ${byteLength} bytes ` +
          `(${header.sharedClassifier ? 'shared' : 'untied'} classifier), the file has ${checkpointBytes}`,
      );
    }
    await checkRopeTables(handle, arrays, header, checkpointPath);
    onProgress?.({ stage: 'header', header, checkpointBytes });

    const tokenizer = await convertTokenizer(tokenizerPath, header.seqLen);
    if (tokenizer.vocabSize !== header.vocabSize) {
      throw new ImportError(
        tokenizerPath,
        'vocab-mismatch',
        `has ${tokenizer.vocabSize} tokens, but the checkpoint ${checkpointPath} has vocab_size ${header.vocabSize}`,
      );
    }
    onProgress?.({ stage: 'tokenizer', format: tokenizer.format, vocabSize: tokenizer.vocabSize });

    const state = await outputState(outDir);
    if (state === 'occupied' && !options.overwrite) {
      throw new ImportError(outDir, 'output-exists', 'exists and is not empty; pass overwrite to replace it');
    }

    // NOTE: llama2.c models end a sequence with BOS, not EOS (run.c stops when it samples id 1: "the BOS
    // token delimits sequences"), so both end generation.
    const endIds = [...new Set([tokenizer.eosId, tokenizer.bosId])];
    const config = llamaConfig(header, endIds, tokenizer.bosId);
    const jsonFiles: Record<string, unknown> = {
      'config.json': config,
      'generation_config.json': { bos_token_id: tokenizer.bosId, eos_token_id: endIds },
      ...tokenizer.files,
    };
    const tempDir = await createTempDirectory(outDir);
    try {
      for (const [name, json] of Object.entries(jsonFiles)) {
        await writeFile(path.join(tempDir, name), `${JSON.stringify(json, null, 2)}\n`);
      }
      // Every array but the RoPE tables is written.
      const bytesTotal =
        byteLength - HEADER_BYTES - 2 * arrays.get('freq_cis_real')!.layerElements * FLOAT_BYTES;
      let index = 0;
      let bytesDone = 0;
      const tensors = plannedTensors(handle, header, arrays, (name, bytes) => {
        if (signal?.aborted) throw new InterruptedError('import', { cause: signal.reason });
        bytesDone += bytes;
        onProgress?.({ stage: 'tensor', name, index: index++, count: tensors.length, bytesDone, bytesTotal });
      });
      await writeSafetensors(path.join(tempDir, 'model.safetensors'), tensors, {
        format: 'pt',
        source: `llama2.c checkpoint ${path.basename(checkpointPath)}`,
      });
      await moveIntoPlace(tempDir, outDir, state);
    } catch (error) {
      await rm(tempDir, { recursive: true, force: true });
      throw error;
    }
    onProgress?.({ stage: 'done', outDir });
    return {
      outDir,
      header,
      config,
      tokenizerFormat: tokenizer.format,
      files: [...Object.keys(jsonFiles), 'model.safetensors'],
      tensorCount: 2 + header.nLayers * 9 + (header.sharedClassifier ? 0 : 1),
    };
  } finally {
    await handle.close();
  }
}

/** Renames the finished temporary directory to `outDir`, replacing an empty or (when allowed) old one. */
async function moveIntoPlace(
  tempDir: string,
  outDir: string,
  state: 'absent' | 'empty' | 'occupied',
): Promise<void> {
  if (state === 'absent') {
    await rename(tempDir, outDir);
    return;
  }
  await replaceDirectory(tempDir, outDir, `${outDir}.old-${randomBytes(6).toString('hex')}`);
}
