/**
 * An independent float64 reference of the decoder, for tests only. It is written from the papers and the
 * Hugging Face modelling code, deliberately without sharing anything with `src/model`: plain nested loops
 * over Float64Arrays, one token position at a time, full recompute (no cache).
 */

/** What the reference needs to know about a model (Hugging Face field meanings). */
export interface ReferenceConfig {
  /** `gemma`: norms by `1 + w`, embeddings by √hidden, tanh-GELU (Gemma 1, 2 and 3). */
  family: 'llama' | 'gemma';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScalingFactor: number;
  /** Llama 3.x `rope_scaling` (`rope_type: "llama3"`); replaces the linear factor when present. */
  llama3Rope?: {
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositions: number;
  };
  tieWordEmbeddings: boolean;
  /** Feed-forward activation; absent: the family's own (SiLU for Llama, tanh-GELU for Gemma). */
  hiddenAct?: 'silu' | 'gelu_tanh';
  /** Linear modules with a bias, by Hugging Face module name (`q_proj`, …, `down_proj`). */
  biases: readonly string[];
  /** Qwen3 / Gemma 3: RMSNorm of each query and key head (`self_attn.q_norm`, `k_norm`, `[headDim]`). */
  qkNorm?: boolean;
  /**
   * Gemma 2 / 3: `post_attention_layernorm` on the attention output, `pre_feedforward_layernorm` before
   * and `post_feedforward_layernorm` after the MLP.
   */
  sandwichNorms?: boolean;
  /** Gemma 2 / 3: scores scaled by `queryPreAttnScalar^−½` instead of `headDim^−½`. */
  queryPreAttnScalar?: number;
  /** Gemma 2: `cap·tanh(score/cap)` on the scaled scores. */
  attnLogitSoftcapping?: number;
  /** Gemma 2: `cap·tanh(logit/cap)` on the output logits. */
  finalLogitSoftcapping?: number;
  /** Sliding window of each layer (`undefined` or absent: full): position p sees keys j with p − j < window. */
  windows?: readonly (number | undefined)[];
  /** Gemma 3: RoPE base of the sliding layers, which run it without `ropeScalingFactor`. */
  localRopeTheta?: number;
}

/** Float64 weights of an unrolled (vanilla) model, keyed by Hugging Face tensor name, row-major. */
export type ReferenceWeights = Map<string, Float64Array>;

const linearNames = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/** Logits `[tokens.length][vocab]` of the full model, teacher-forced. */
export function referenceLogits(
  config: ReferenceConfig,
  weights: ReferenceWeights,
  tokens: number[],
): number[][] {
  const d = config.hiddenSize;
  const get = (name: string): Float64Array => {
    const value = weights.get(name);
    if (!value) throw new Error(`reference: missing ${name}`);
    return value;
  };
  const embed = get('model.embed_tokens.weight');
  const scale = config.family === 'gemma' ? Math.fround(Math.sqrt(d)) : 1;
  const gelu = (config.hiddenAct ?? (config.family === 'gemma' ? 'gelu_tanh' : 'silu')) === 'gelu_tanh';
  // hidden[t] for each position
  let hidden: Float64Array[] = tokens.map((token) => {
    const row = new Float64Array(d);
    for (let i = 0; i < d; i++) row[i] = embed[token * d + i]! * scale;
    return row;
  });

  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const attnNorm = get(`${prefix}.input_layernorm.weight`);
    const normed = hidden.map((row) => rmsNorm(row, attnNorm, config));
    let attended = attention(config, weights, prefix, normed, layer);
    if (config.sandwichNorms) {
      const outNorm = get(`${prefix}.post_attention_layernorm.weight`);
      attended = attended.map((row) => rmsNorm(row, outNorm, config));
    }
    hidden = hidden.map((row, t) => row.map((value, i) => value + attended[t]![i]!));
    const mlpNorm = get(
      `${prefix}.${config.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`,
    );
    const mlpOutNorm = config.sandwichNorms ? get(`${prefix}.post_feedforward_layernorm.weight`) : undefined;
    hidden = hidden.map((row) => {
      const x = rmsNorm(row, mlpNorm, config);
      const mlpBias = (name: string) =>
        config.biases.includes(name) ? weights.get(`${prefix}.mlp.${name}.bias`) : undefined;
      const gate = addBias(
        linear(x, get(`${prefix}.mlp.gate_proj.weight`), config.intermediateSize),
        mlpBias('gate_proj'),
      );
      const up = addBias(
        linear(x, get(`${prefix}.mlp.up_proj.weight`), config.intermediateSize),
        mlpBias('up_proj'),
      );
      const act = gate.map((g, i) => (gelu ? geluTanh(g) : g / (1 + Math.exp(-g))) * up[i]!);
      let down = addBias(linear(act, get(`${prefix}.mlp.down_proj.weight`), d), mlpBias('down_proj'));
      if (mlpOutNorm) down = rmsNorm(down, mlpOutNorm, config);
      return row.map((value, i) => value + down[i]!);
    });
  }
  const finalNorm = get('model.norm.weight');
  const head = config.tieWordEmbeddings ? embed : get('lm_head.weight');
  const cap = config.finalLogitSoftcapping;
  return hidden.map((row) => {
    const logits = Array.from(linear(rmsNorm(row, finalNorm, config), head, config.vocabSize));
    return cap === undefined ? logits : logits.map((logit) => cap * Math.tanh(logit / cap));
  });
}

function attention(
  config: ReferenceConfig,
  weights: ReferenceWeights,
  prefix: string,
  xs: Float64Array[],
  layer: number,
): Float64Array[] {
  const { numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim } = config;
  const w = (name: string) => weights.get(`${prefix}.self_attn.${name}.weight`)!;
  const b = (name: string) =>
    config.biases.includes(name) ? weights.get(`${prefix}.self_attn.${name}.bias`) : undefined;
  const window = config.windows?.[layer];
  // Gemma 3's sliding layers rotate by their own base, unscaled.
  const ropeConfig =
    window !== undefined && config.localRopeTheta !== undefined
      ? { ...config, ropeTheta: config.localRopeTheta, ropeScalingFactor: 1, llama3Rope: undefined }
      : config;
  // Per-head RMSNorm (Qwen3, Gemma 3): each head's headDim slice normalised with the same weight.
  const headNorm = (x: Float64Array, count: number, name: string): Float64Array => {
    if (!config.qkNorm) return x;
    const weight = w(name);
    const out = new Float64Array(x.length);
    for (let h = 0; h < count; h++)
      out.set(rmsNorm(x.subarray(h * headDim, (h + 1) * headDim), weight, config), h * headDim);
    return out;
  };
  const q = xs.map((x, t) =>
    rope(
      headNorm(addBias(linear(x, w('q_proj'), heads * headDim), b('q_proj')), heads, 'q_norm'),
      t,
      heads,
      ropeConfig,
    ),
  );
  const k = xs.map((x, t) =>
    rope(
      headNorm(addBias(linear(x, w('k_proj'), kvHeads * headDim), b('k_proj')), kvHeads, 'k_norm'),
      t,
      kvHeads,
      ropeConfig,
    ),
  );
  const v = xs.map((x) => addBias(linear(x, w('v_proj'), kvHeads * headDim), b('v_proj')));
  const perKvHead = heads / kvHeads;
  const scale = 1 / Math.sqrt(config.queryPreAttnScalar ?? headDim);
  const cap = config.attnLogitSoftcapping;
  return xs.map((_, t) => {
    const out = new Float64Array(heads * headDim);
    // Keys s ≤ t, and within a window only those with t − s < window.
    const first = window === undefined ? 0 : Math.max(0, t - window + 1);
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / perKvHead);
      const scores: number[] = [];
      for (let s = first; s <= t; s++) {
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += q[t]![h * headDim + i]! * k[s]![kvh * headDim + i]!;
        const score = dot * scale;
        scores.push(cap === undefined ? score : cap * Math.tanh(score / cap));
      }
      const max = Math.max(...scores);
      const exps = scores.map((score) => Math.exp(score - max));
      const total = exps.reduce((sum, e) => sum + e, 0);
      for (let s = first; s <= t; s++) {
        for (let i = 0; i < headDim; i++)
          out[h * headDim + i]! += (exps[s - first]! / total) * v[s]![kvh * headDim + i]!;
      }
    }
    return addBias(linear(out, w('o_proj'), config.hiddenSize), b('o_proj'));
  });
}

function rope(x: Float64Array, position: number, heads: number, config: ReferenceConfig): Float64Array {
  const { headDim } = config;
  const half = headDim / 2;
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = position * ropeFrequency(i, config);
      const a = x[h * headDim + i]!;
      const b = x[h * headDim + i + half]!;
      out[h * headDim + i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * headDim + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
  return out;
}

/**
 * Inverse frequency of pair `i`. Llama 3 (Meta's `apply_scaling` in llama-models): a wavelength below
 * `original / high` keeps its frequency, above `original / low` it is divided by the factor, and between
 * them the frequency is `(1 − s)·f/factor + s·f` with `s = (original/wavelength − low) / (high − low)`.
 */
function ropeFrequency(i: number, config: ReferenceConfig): number {
  const frequency = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  const scaling = config.llama3Rope;
  if (!scaling) return frequency / config.ropeScalingFactor;
  const wavelength = (2 * Math.PI) / frequency;
  const highWavelength = scaling.originalMaxPositions / scaling.highFreqFactor;
  const lowWavelength = scaling.originalMaxPositions / scaling.lowFreqFactor;
  if (wavelength < highWavelength) return frequency;
  if (wavelength > lowWavelength) return frequency / scaling.factor;
  const smooth =
    (scaling.originalMaxPositions / wavelength - scaling.lowFreqFactor) /
    (scaling.highFreqFactor - scaling.lowFreqFactor);
  return (1 - smooth) * (frequency / scaling.factor) + smooth * frequency;
}

function rmsNorm(x: Float64Array, weight: Float64Array, config: ReferenceConfig): Float64Array {
  let meanSquare = 0;
  for (const value of x) meanSquare += value * value;
  meanSquare /= x.length;
  const inv = 1 / Math.sqrt(meanSquare + config.rmsNormEps);
  const offset = config.family === 'gemma' ? 1 : 0;
  return x.map((value, i) => value * inv * (offset + weight[i]!));
}

/** `W·x` with `W: [out, in]` row-major. */
function linear(x: Float64Array, w: Float64Array, outFeatures: number): Float64Array {
  const inFeatures = x.length;
  const out = new Float64Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let sum = 0;
    for (let i = 0; i < inFeatures; i++) sum += w[o * inFeatures + i]! * x[i]!;
    out[o] = sum;
  }
  return out;
}

function addBias(x: Float64Array, bias: Float64Array | undefined): Float64Array {
  return bias ? x.map((value, i) => value + bias[i]!) : x;
}

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

/** Names of every tensor a vanilla model of this config has, with shapes. */
export function referenceTensorShapes(config: ReferenceConfig): Map<string, number[]> {
  const {
    hiddenSize: d,
    intermediateSize: ffn,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
  } = config;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [config.vocabSize, d]);
  const linearShape: Record<(typeof linearNames)[number], number[]> = {
    q_proj: [heads * headDim, d],
    k_proj: [kvHeads * headDim, d],
    v_proj: [kvHeads * headDim, d],
    o_proj: [d, heads * headDim],
    gate_proj: [ffn, d],
    up_proj: [ffn, d],
    down_proj: [d, ffn],
  };
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const name of linearNames) {
      const group =
        name.endsWith('proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(name) ? 'mlp' : 'self_attn';
      shapes.set(`model.layers.${layer}.${group}.${name}.weight`, linearShape[name]);
      if (config.biases.includes(name)) {
        shapes.set(`model.layers.${layer}.${group}.${name}.bias`, [linearShape[name][0]!]);
      }
    }
    shapes.set(`model.layers.${layer}.input_layernorm.weight`, [d]);
    shapes.set(`model.layers.${layer}.post_attention_layernorm.weight`, [d]);
    if (config.sandwichNorms) {
      shapes.set(`model.layers.${layer}.pre_feedforward_layernorm.weight`, [d]);
      shapes.set(`model.layers.${layer}.post_feedforward_layernorm.weight`, [d]);
    }
    if (config.qkNorm) {
      shapes.set(`model.layers.${layer}.self_attn.q_norm.weight`, [headDim]);
      shapes.set(`model.layers.${layer}.self_attn.k_norm.weight`, [headDim]);
    }
  }
  shapes.set('model.norm.weight', [d]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [config.vocabSize, d]);
  return shapes;
}
