/**
 * The baseline of bench/decode.ts: a plain scalar forward of a Llama-family decoder (RMSNorm, RoPE
 * "rotate half", grouped-query attention, SwiGLU), written the obvious way — Float32Array loops, one
 * token at a time, its own KV cache — with no library. It is what a person would write to run a small
 * model in JavaScript, and the bar rrt's single stream should clear.
 *
 * Only what stories260K needs: no biases, no LoRA, no Gemma details; it refuses other configs.
 */
import type { Decoder } from '@rrt/core';
import { ropeTables } from '@rrt/core';

interface ScalarLayer {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  /** `[in, out]` row-major, as rrt holds them. */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

/** One sequence's forward with its own KV cache, `[position][kvHeads · headDim]` per layer. */
export class ScalarForward {
  private position = 0;
  private readonly keyCache: Float32Array[];
  private readonly valueCache: Float32Array[];
  private readonly cos: Float32Array;
  private readonly sin: Float32Array;

  private constructor(
    private readonly config: Decoder['config'],
    private readonly embedding: Float32Array,
    private readonly layers: ScalarLayer[],
    private readonly finalNorm: Float32Array,
    private readonly lmHead: Float32Array,
    capacity: number,
  ) {
    const kvWidth = config.numKeyValueHeads * config.headDim;
    this.keyCache = layers.map(() => new Float32Array(capacity * kvWidth));
    this.valueCache = layers.map(() => new Float32Array(capacity * kvWidth));
    ({ cos: this.cos, sin: this.sin } = ropeTables(config));
  }

  /** Copies a loaded rrt model's weights to the host. */
  static async from(model: Decoder, capacity: number): Promise<ScalarForward> {
    const { backend, config, weights } = model;
    if (config.hiddenAct !== 'silu' || config.embeddingScale !== 1 || weights.loras.size > 0) {
      throw new Error('ScalarForward: only plain Llama-family models (SiLU, no LoRA) are supported');
    }
    if (config.recursion) throw new Error('ScalarForward: recursive models are not supported');
    const read = async (t: Parameters<typeof backend.read>[0]) => (await backend.read(t)) as Float32Array;
    const layers: ScalarLayer[] = [];
    for (const layer of weights.layers) {
      const l = layer.linears;
      if (Object.values(l).some((linear) => linear.bias))
        throw new Error('ScalarForward: biases are not supported');
      layers.push({
        inputNorm: await read(layer.inputNorm),
        postNorm: await read(layer.postAttentionNorm),
        q: await read(l.q_proj.weight),
        k: await read(l.k_proj.weight),
        v: await read(l.v_proj.weight),
        o: await read(l.o_proj.weight),
        gate: await read(l.gate_proj!.weight), // SiLU models are gated
        up: await read(l.up_proj.weight),
        down: await read(l.down_proj.weight),
      });
    }
    return new ScalarForward(
      config,
      await read(weights.embedding),
      layers,
      await read(weights.finalNorm),
      await read(weights.lmHead),
      capacity,
    );
  }

  /** Forgets the cached positions. */
  reset(): void {
    this.position = 0;
  }

  /** Feeds one token at the next position; returns its logits. */
  step(token: number): Float32Array {
    const c = this.config;
    const d = c.hiddenSize;
    const heads = c.numAttentionHeads;
    const kvHeads = c.numKeyValueHeads;
    const headDim = c.headDim;
    const half = headDim / 2;
    const kvWidth = kvHeads * headDim;
    const groups = heads / kvHeads;
    const pos = this.position;
    const x = this.embedding.slice(token * d, (token + 1) * d);
    const normed = new Float32Array(d);
    const q = new Float32Array(heads * headDim);
    const attended = new Float32Array(heads * headDim);
    const scores = new Float32Array(pos + 1);
    const gate = new Float32Array(c.intermediateSize);
    const up = new Float32Array(c.intermediateSize);
    const scale = 1 / Math.sqrt(headDim);

    for (let li = 0; li < this.layers.length; li++) {
      const layer = this.layers[li]!;
      const keys = this.keyCache[li]!;
      const values = this.valueCache[li]!;
      rmsNorm(normed, x, layer.inputNorm, c.rmsNormEps);
      matvec(q, normed, layer.q);
      const k = keys.subarray(pos * kvWidth, (pos + 1) * kvWidth);
      const v = values.subarray(pos * kvWidth, (pos + 1) * kvWidth);
      matvec(k, normed, layer.k);
      matvec(v, normed, layer.v);
      rope(q, heads, headDim, this.cos, this.sin, pos * half);
      rope(k, kvHeads, headDim, this.cos, this.sin, pos * half);

      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor(h / groups);
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j <= pos; j++) {
          let dot = 0;
          for (let i = 0; i < headDim; i++)
            dot += q[h * headDim + i]! * keys[j * kvWidth + kvh * headDim + i]!;
          scores[j] = dot * scale;
          if (scores[j]! > max) max = scores[j]!;
        }
        let total = 0;
        for (let j = 0; j <= pos; j++) {
          scores[j] = Math.exp(scores[j]! - max);
          total += scores[j]!;
        }
        for (let i = 0; i < headDim; i++) {
          let sum = 0;
          for (let j = 0; j <= pos; j++) sum += scores[j]! * values[j * kvWidth + kvh * headDim + i]!;
          attended[h * headDim + i] = sum / total;
        }
      }
      const projected = new Float32Array(d);
      matvec(projected, attended, layer.o);
      for (let i = 0; i < d; i++) x[i]! += projected[i]!;

      rmsNorm(normed, x, layer.postNorm, c.rmsNormEps);
      matvec(gate, normed, layer.gate);
      matvec(up, normed, layer.up);
      for (let i = 0; i < gate.length; i++) gate[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
      matvec(projected, gate, layer.down);
      for (let i = 0; i < d; i++) x[i]! += projected[i]!;
    }
    rmsNorm(normed, x, this.finalNorm, c.rmsNormEps);
    const logits = new Float32Array(c.vocabSize);
    matvec(logits, normed, this.lmHead);
    this.position++;
    return logits;
  }
}

function rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, eps: number): void {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]! * x[i]!;
  const inverse = 1 / Math.sqrt(sum / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * inverse * weight[i]!;
}

/** `out = x · W` with `W: [in, out]` row-major. */
function matvec(out: Float32Array, x: Float32Array, w: Float32Array): void {
  const n = out.length;
  out.fill(0);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]!;
    const row = i * n;
    for (let o = 0; o < n; o++) out[o]! += xi * w[row + o]!;
  }
}

/** Rotate-half RoPE of each head of `x` in place, with the table row starting at `tableOffset`. */
function rope(
  x: Float32Array,
  heads: number,
  headDim: number,
  cos: Float32Array,
  sin: Float32Array,
  tableOffset: number,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const a = x[base + i]!;
      const b = x[base + half + i]!;
      const c = cos[tableOffset + i]!;
      const s = sin[tableOffset + i]!;
      x[base + i] = a * c - b * s;
      x[base + half + i] = b * c + a * s;
    }
  }
}
