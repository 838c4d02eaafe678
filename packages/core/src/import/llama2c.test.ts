import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors, toFloat32 } from '../safetensors/index.js';
import {
  type Llama2cToken,
  seededRandom,
  trainTinyBpeVocab,
  writeLlama2cTokenizerBin,
} from '../tokenizer/llama2c-reference.test-util.js';
import { loadTokenizer } from '../tokenizer/load.js';
import { ImportError, type ImportErrorReason } from '../errors.js';
import { type ImportProgress, importLlama2c } from './llama2c.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const assets = path.resolve(repoRoot, '../shared/assets');
const hasAssets = existsSync(path.join(assets, 'stories260K/stories260K.bin'));
const skipReason = hasAssets ? '' : ` (skipped: ${assets} is absent)`;

const workDir = mkdtempSync(path.join(tmpdir(), 'rrt-import-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));
let dirCount = 0;
/** A fresh directory inside the work dir. */
const freshDir = () => {
  const dir = path.join(workDir, `case-${dirCount++}`);
  mkdirSync(dir);
  return dir;
};

// ---- An independent llama2.c checkpoint writer (export.py's legacy_export, transcribed) ----------------

interface Hyper {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
}

/** The checkpoint's arrays in file order, as float32 values; `ropeTheta` sets the stored RoPE tables. */
function syntheticArrays(h: Hyper, seed: number, ropeTheta = 10000): [string, Float32Array][] {
  const random = seededRandom(seed);
  const headDim = h.dim / h.nHeads;
  const kvDim = headDim * h.nKvHeads;
  const randomArray = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1);
  const half = headDim / 2;
  const real = new Float32Array(h.seqLen * half);
  const imag = new Float32Array(h.seqLen * half);
  for (let p = 0; p < h.seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * ropeTheta ** (-(2 * i) / headDim);
      real[p * half + i] = Math.cos(angle);
      imag[p * half + i] = Math.sin(angle);
    }
  }
  const L = h.nLayers;
  const arrays: [string, Float32Array][] = [
    ['token_embedding', randomArray(h.vocabSize * h.dim)],
    ['rms_att', randomArray(L * h.dim)],
    ['wq', randomArray(L * h.dim * h.dim)],
    ['wk', randomArray(L * kvDim * h.dim)],
    ['wv', randomArray(L * kvDim * h.dim)],
    ['wo', randomArray(L * h.dim * h.dim)],
    ['rms_ffn', randomArray(L * h.dim)],
    ['w1', randomArray(L * h.hiddenDim * h.dim)],
    ['w2', randomArray(L * h.dim * h.hiddenDim)],
    ['w3', randomArray(L * h.hiddenDim * h.dim)],
    ['rms_final', randomArray(h.dim)],
    ['freq_cis_real', real],
    ['freq_cis_imag', imag],
  ];
  if (!h.shared) arrays.push(['wcls', randomArray(h.vocabSize * h.dim)]);
  return arrays;
}

function checkpointBytes(h: Hyper, arrays: [string, Float32Array][]): Uint8Array {
  const header = new Int32Array([
    h.dim,
    h.hiddenDim,
    h.nLayers,
    h.nHeads,
    h.nKvHeads,
    h.shared ? h.vocabSize : -h.vocabSize,
    h.seqLen,
  ]);
  const parts = [new Uint8Array(header.buffer), ...arrays.map(([, a]) => new Uint8Array(a.buffer))];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

const tinyVocab: Llama2cToken[] = trainTinyBpeVocab('the cat sat on the mat and the dog ran to the cat', 20);
const tinyHyper = (shared: boolean): Hyper => ({
  // head size 8: the RoPE permutation (0 2 4 6 1 3 5 7) differs from its inverse, as it must to be tested.
  dim: 32,
  hiddenDim: 24,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: tinyVocab.length,
  seqLen: 32,
  shared,
});

/** Writes a synthetic checkpoint and tokenizer; returns their paths and the arrays written. */
function writeSynthetic(
  shared: boolean,
  options: { theta?: number; mutate?: (bytes: Uint8Array) => Uint8Array } = {},
) {
  const dir = freshDir();
  const hyper = tinyHyper(shared);
  const arrays = syntheticArrays(hyper, shared ? 11 : 12, options.theta);
  const checkpointPath = path.join(dir, 'model.bin');
  const tokenizerPath = path.join(dir, 'tok.bin');
  const bytes = checkpointBytes(hyper, arrays);
  writeFileSync(checkpointPath, options.mutate ? options.mutate(bytes) : bytes);
  writeFileSync(tokenizerPath, writeLlama2cTokenizerBin(tinyVocab));
  return {
    dir,
    hyper,
    arrays: new Map(arrays),
    checkpointPath,
    tokenizerPath,
    outDir: path.join(dir, 'out'),
  };
}

// ---- The invariant: attention scores under llama2.c RoPE and under HF RoPE agree ----------------------

/** y = W x in float64, W row-major [rows, cols]. */
function matVec(w: ArrayLike<number>, rows: number, cols: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += w[r * cols + c]! * x[c]!;
    y[r] = sum;
  }
  return y;
}

/** llama2.c RoPE (run.c): rotate adjacent pairs (2i, 2i+1) of each head by pos · θ^(-2i/headDim). */
function ropeAdjacent(v: Float64Array, heads: number, headDim: number, pos: number): Float64Array {
  const out = new Float64Array(v.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < headDim / 2; i++) {
      const angle = pos * 10000 ** (-(2 * i) / headDim);
      const [a, b] = [v[h * headDim + 2 * i]!, v[h * headDim + 2 * i + 1]!];
      out[h * headDim + 2 * i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * headDim + 2 * i + 1] = a * Math.sin(angle) + b * Math.cos(angle);
    }
  }
  return out;
}

/** HF Llama RoPE (`rotate_half`): rotate (i, i + headDim/2) of each head by pos · θ^(-2i/headDim). */
function ropeHalves(v: Float64Array, heads: number, headDim: number, pos: number): Float64Array {
  const out = new Float64Array(v.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * 10000 ** (-(2 * i) / headDim);
      const [a, b] = [v[h * headDim + i]!, v[h * headDim + i + half]!];
      out[h * headDim + i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * headDim + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
  return out;
}

/** Attention logits q_h(m) · k_{g(h)}(n) for every head, query position m and key position n. */
function attentionScores(
  wq: ArrayLike<number>,
  wk: ArrayLike<number>,
  hyper: Pick<Hyper, 'dim' | 'nHeads' | 'nKvHeads'>,
  rope: typeof ropeAdjacent,
  x: Float64Array[],
  positions: number[],
): number[] {
  const headDim = hyper.dim / hyper.nHeads;
  const kvDim = headDim * hyper.nKvHeads;
  const scores: number[] = [];
  x.forEach((xq, a) => {
    const xk = x[(a + 1) % x.length]!;
    for (const m of positions) {
      const q = rope(matVec(wq, hyper.dim, hyper.dim, xq), hyper.nHeads, headDim, m);
      for (const n of positions) {
        const k = rope(matVec(wk, kvDim, hyper.dim, xk), hyper.nKvHeads, headDim, n);
        for (let h = 0; h < hyper.nHeads; h++) {
          const g = Math.floor(h / (hyper.nHeads / hyper.nKvHeads));
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[h * headDim + d]! * k[g * headDim + d]!;
          scores.push(dot);
        }
      }
    }
  });
  return scores;
}

/** Largest |a - b| relative to the largest |a|. */
function relativeError(a: number[], b: number[]): number {
  const scale = Math.max(...a.map(Math.abs));
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]!))) / scale;
}

/**
 * Checks, for every layer, that llama2.c attention scores with the original wq / wk equal HF scores with
 * the imported (permuted) q_proj / k_proj, on random inputs and positions; and, as a control, that HF RoPE
 * on the unpermuted weights does not.
 */
async function checkRopeInvariant(
  outDir: string,
  hyper: Pick<Hyper, 'dim' | 'nHeads' | 'nKvHeads' | 'nLayers' | 'seqLen'>,
  original: (name: 'wq' | 'wk', layer: number) => Float32Array,
  seed: number,
): Promise<void> {
  const random = seededRandom(seed);
  const x = Array.from({ length: 3 }, () => Float64Array.from({ length: hyper.dim }, () => random() * 2 - 1));
  const positions = [0, 1, 2, 7, Math.floor(random() * hyper.seqLen), hyper.seqLen - 1];
  const file = await openSafetensors(path.join(outDir, 'model.safetensors'));
  try {
    for (let layer = 0; layer < hyper.nLayers; layer++) {
      const wq = original('wq', layer);
      const wk = original('wk', layer);
      const q = toFloat32(await file.readTensor(`model.layers.${layer}.self_attn.q_proj.weight`));
      const k = toFloat32(await file.readTensor(`model.layers.${layer}.self_attn.k_proj.weight`));
      const reference = attentionScores(wq, wk, hyper, ropeAdjacent, x, positions);
      const imported = attentionScores(q, k, hyper, ropeHalves, x, positions);
      // Same float32 weights, only rows reordered: float64 sums agree to rounding.
      expect(relativeError(reference, imported)).toBeLessThan(1e-12);
      const unpermuted = attentionScores(wq, wk, hyper, ropeHalves, x, positions);
      expect(relativeError(reference, unpermuted)).toBeGreaterThan(1e-3);
    }
  } finally {
    await file.close();
  }
}

/** The layer-th slice of a stacked llama2.c array. */
const layerSlice = (array: Float32Array, layers: number, layer: number) => {
  const size = array.length / layers;
  return array.subarray(layer * size, (layer + 1) * size);
};

async function expectImportError(promise: Promise<unknown>, reason: ImportErrorReason, ...parts: string[]) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ImportError);
  expect((error as ImportError).reason).toBe(reason);
  for (const part of parts) expect((error as ImportError).message).toContain(part);
}

/** Names in `dir` other than the inputs: an import that failed must leave none (no output, no temp dir). */
const leftovers = (dir: string) =>
  readdirSync(dir).filter((name) => name !== 'model.bin' && name !== 'tok.bin');

describe('importLlama2c on synthetic checkpoints', () => {
  it.each([
    ['untied', false],
    ['shared', true],
  ])(
    'writes the HF layout of a %s-classifier checkpoint, every tensor where it belongs',
    async (_, shared) => {
      const synthetic = writeSynthetic(shared);
      const events: ImportProgress[] = [];
      const result = await importLlama2c({ ...synthetic, onProgress: (p) => events.push(p) });
      const { hyper, arrays } = synthetic;
      expect(readdirSync(synthetic.outDir).sort()).toEqual(
        [
          'config.json',
          'generation_config.json',
          'model.safetensors',
          'tokenizer.json',
          'tokenizer_config.json',
        ].sort(),
      );
      const config = JSON.parse(readFileSync(path.join(synthetic.outDir, 'config.json'), 'utf8'));
      expect(config).toMatchObject({
        model_type: 'llama',
        architectures: ['LlamaForCausalLM'],
        hidden_size: 32,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: tinyVocab.length,
        max_position_embeddings: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 10000,
        tie_word_embeddings: shared,
        bos_token_id: 1,
        // llama2.c models end a sequence with BOS (run.c stops at id 1), so both ids end generation.
        eos_token_id: [2, 1],
        torch_dtype: 'float32',
        hidden_act: 'silu',
      });
      expect(result.config).toEqual(config);

      const file = await openSafetensors(path.join(synthetic.outDir, 'model.safetensors'));
      try {
        const expectedCount = 2 + 9 * hyper.nLayers + (shared ? 0 : 1);
        expect(file.entries.size).toBe(expectedCount);
        expect(result.tensorCount).toBe(expectedCount);
        expect(file.has('lm_head.weight')).toBe(!shared);
        // Everything but q / k is a bit-exact copy.
        const copies: [string, string, number | undefined][] = [
          ['model.embed_tokens.weight', 'token_embedding', undefined],
          ['model.norm.weight', 'rms_final', undefined],
        ];
        if (!shared) copies.push(['lm_head.weight', 'wcls', undefined]);
        for (let i = 0; i < hyper.nLayers; i++) {
          copies.push(
            [`model.layers.${i}.input_layernorm.weight`, 'rms_att', i],
            [`model.layers.${i}.post_attention_layernorm.weight`, 'rms_ffn', i],
            [`model.layers.${i}.self_attn.v_proj.weight`, 'wv', i],
            [`model.layers.${i}.self_attn.o_proj.weight`, 'wo', i],
            [`model.layers.${i}.mlp.gate_proj.weight`, 'w1', i],
            [`model.layers.${i}.mlp.down_proj.weight`, 'w2', i],
            [`model.layers.${i}.mlp.up_proj.weight`, 'w3', i],
          );
        }
        for (const [name, source, layer] of copies) {
          const expected =
            layer === undefined ? arrays.get(source)! : layerSlice(arrays.get(source)!, hyper.nLayers, layer);
          expect(toFloat32(await file.readTensor(name)), name).toEqual(expected);
        }
        expect(file.entries.get('model.layers.1.mlp.down_proj.weight')!.shape).toEqual([32, 24]);
        expect(file.entries.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([16, 32]);
      } finally {
        await file.close();
      }
      await checkRopeInvariant(
        synthetic.outDir,
        hyper,
        (name, layer) => layerSlice(arrays.get(name)!, 2, layer),
        5,
      );

      const tensorEvents = events.filter((e) => e.stage === 'tensor');
      expect(tensorEvents.length).toBe(result.tensorCount);
      expect(tensorEvents.at(-1)).toMatchObject({ index: result.tensorCount - 1, count: result.tensorCount });
      const last = tensorEvents.at(-1) as Extract<ImportProgress, { stage: 'tensor' }>;
      expect(last.bytesDone).toBe(last.bytesTotal);
      expect(events.map((e) => e.stage).filter((s) => s !== 'tensor')).toEqual([
        'header',
        'tokenizer',
        'done',
      ]);
      expect(leftovers(synthetic.dir)).toEqual(['out']);
    },
  );

  it('refuses a truncated checkpoint, naming it and both byte counts, and writes nothing', async () => {
    const synthetic = writeSynthetic(false, { mutate: (b) => b.subarray(0, b.length - 4) });
    const size = readFileSync(synthetic.checkpointPath).length;
    await expectImportError(
      importLlama2c(synthetic),
      'size-mismatch',
      synthetic.checkpointPath,
      'truncated',
      String(size + 4),
      String(size),
    );
    expect(leftovers(synthetic.dir)).toEqual([]);
  });

  it('refuses trailing bytes, e.g. a shared-classifier header over an untied file', async () => {
    const synthetic = writeSynthetic(false, {
      mutate: (b) => {
        new DataView(b.buffer, b.byteOffset).setInt32(20, tinyVocab.length, true);
        return b;
      },
    });
    await expectImportError(
      importLlama2c(synthetic),
      'size-mismatch',
      'longer than its header implies',
      'shared',
    );
    expect(leftovers(synthetic.dir)).toEqual([]);
  });

  it('refuses absurd headers and newer export versions', async () => {
    const setHeader = (index: number, value: number) => (b: Uint8Array) => {
      new DataView(b.buffer, b.byteOffset).setInt32(index * 4, value, true);
      return b;
    };
    await expectImportError(
      importLlama2c(writeSynthetic(true, { mutate: setHeader(3, 3) })),
      'bad-header',
      'n_heads',
    );
    await expectImportError(
      importLlama2c(writeSynthetic(true, { mutate: setHeader(0, -5) })),
      'bad-header',
      'dim',
    );
    await expectImportError(
      importLlama2c(writeSynthetic(true, { mutate: setHeader(4, 3) })),
      'bad-header',
      'n_heads must be a multiple of n_kv_heads',
    );
    await expectImportError(
      importLlama2c(writeSynthetic(true, { mutate: setHeader(0, 0x616b3432) })),
      'unsupported-format',
      'ak42',
    );
    await expectImportError(
      importLlama2c(writeSynthetic(true, { mutate: (b) => b.subarray(0, 10) })),
      'size-mismatch',
      '10 bytes',
    );
  });

  it('refuses RoPE tables of another theta', async () => {
    await expectImportError(
      importLlama2c(writeSynthetic(true, { theta: 500000 })),
      'unsupported-format',
      'theta',
    );
  });

  it('refuses a tokenizer whose vocabulary size differs, and a malformed tokenizer', async () => {
    const synthetic = writeSynthetic(true);
    writeFileSync(synthetic.tokenizerPath, writeLlama2cTokenizerBin(tinyVocab.slice(0, -1)));
    await expectImportError(
      importLlama2c(synthetic),
      'vocab-mismatch',
      synthetic.tokenizerPath,
      `${tinyVocab.length - 1} tokens`,
      `vocab_size ${tinyVocab.length}`,
    );
    expect(leftovers(synthetic.dir)).toEqual([]);
    writeFileSync(synthetic.tokenizerPath, Uint8Array.from([1, 2, 3]));
    await expectImportError(importLlama2c(synthetic), 'bad-tokenizer', synthetic.tokenizerPath);
  });

  it('refuses missing inputs', async () => {
    const synthetic = writeSynthetic(true);
    await expectImportError(
      importLlama2c({ ...synthetic, checkpointPath: path.join(synthetic.dir, 'nope.bin') }),
      'missing-file',
      'nope.bin: not found',
    );
    await expectImportError(
      importLlama2c({ ...synthetic, tokenizerPath: path.join(synthetic.dir, 'nope.model') }),
      'missing-file',
      'nope.model: not found',
    );
    expect(leftovers(synthetic.dir)).toEqual([]);
  });

  it('refuses an occupied output directory unless told to overwrite, and then replaces it', async () => {
    const synthetic = writeSynthetic(true);
    mkdirSync(synthetic.outDir);
    writeFileSync(path.join(synthetic.outDir, 'old.txt'), 'old');
    await expectImportError(importLlama2c(synthetic), 'output-exists', synthetic.outDir);
    await importLlama2c({ ...synthetic, overwrite: true });
    expect(readdirSync(synthetic.outDir)).not.toContain('old.txt');
    expect(readdirSync(synthetic.outDir)).toContain('model.safetensors');
    expect(leftovers(synthetic.dir)).toEqual(['out']);
  });
});

describe.skipIf(!hasAssets)(`importLlama2c on stories260K${skipReason}`, () => {
  const dir = path.join(assets, 'stories260K');
  const checkpointPath = path.join(dir, 'stories260K.bin');

  it('imports with either tokenizer file; config, tensors, RoPE invariant and tokenizer all right', async () => {
    const outDir = path.join(freshDir(), 'stories260K');
    const result = await importLlama2c({
      checkpointPath,
      tokenizerPath: path.join(dir, 'tok512.bin'),
      outDir,
    });
    expect(result.header).toEqual({
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      seqLen: 512,
      sharedClassifier: true,
    });
    expect(result.config).toMatchObject({
      hidden_size: 64,
      intermediate_size: 172,
      num_hidden_layers: 5,
      num_attention_heads: 8,
      num_key_value_heads: 4,
      vocab_size: 512,
      max_position_embeddings: 512,
      tie_word_embeddings: true,
    });
    expect(result.tokenizerFormat).toBe('llama2c');

    // The original wq / wk straight from the checkpoint, by the README's layout.
    const raw = readFileSync(checkpointPath);
    const floats = new Float32Array(raw.buffer.slice(raw.byteOffset + 28, raw.byteOffset + raw.length));
    const [dim, layers, kvDim, vocab] = [64, 5, 32, 512];
    const wqStart = vocab * dim + layers * dim;
    const wkStart = wqStart + layers * dim * dim;
    const original = (name: 'wq' | 'wk', layer: number) =>
      name === 'wq'
        ? floats.subarray(wqStart + layer * dim * dim, wqStart + (layer + 1) * dim * dim)
        : floats.subarray(wkStart + layer * kvDim * dim, wkStart + (layer + 1) * kvDim * dim);
    await checkRopeInvariant(
      outDir,
      { dim, nHeads: 8, nKvHeads: 4, nLayers: layers, seqLen: 512 },
      original,
      260,
    );

    const file = await openSafetensors(path.join(outDir, 'model.safetensors'));
    try {
      expect(file.entries.size).toBe(47);
      expect(file.has('lm_head.weight')).toBe(false);
      expect(toFloat32(await file.readTensor('model.embed_tokens.weight'))).toEqual(
        floats.subarray(0, vocab * dim),
      );
    } finally {
      await file.close();
    }

    const reference = JSON.parse(readFileSync(path.join(dir, 'reference_logits.json'), 'utf8'));
    const tokenizer = await loadTokenizer(outDir);
    expect([tokenizer.bosId, tokenizer.eosId, tokenizer.vocabSize]).toEqual([1, 2, 512]);
    expect(tokenizer.encode(reference.text, { addBos: true })).toEqual(reference.tokens);

    const fromModel = await importLlama2c({
      checkpointPath,
      tokenizerPath: path.join(dir, 'tok512.model'),
      outDir: path.join(freshDir(), 'stories260K'),
    });
    expect(fromModel.tokenizerFormat).toBe('sentencepiece');
    expect(readFileSync(path.join(fromModel.outDir, 'tokenizer.json'), 'utf8')).toBe(
      readFileSync(path.join(outDir, 'tokenizer.json'), 'utf8'),
    );
  });
});
