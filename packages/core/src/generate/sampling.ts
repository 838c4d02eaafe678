/**
 * Token sampling on the host: logits of one position come back as a Float32Array and a sampler picks the
 * next id. Greedy picks the first maximum (as llama2.c does), so results reproduce exactly.
 *
 * @module
 */

/** How the next token is chosen. `temperature: 0` is greedy decoding. */
export interface SamplingOptions {
  /** Softmax temperature; 0 (the default) means greedy argmax. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or absent: all). */
  topP?: number;
  /** Seed of the sampler's random stream: the same seed gives the same tokens. */
  seed?: number;
}

/** Picks a token id from one position's logits. */
export type Sampler = (logits: Float32Array) => number;

/** Index of the first maximum. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let index = 1; index < values.length; index++) if (values[index]! > values[best]!) best = index;
  return best;
}

/**
 * A seeded pseudo-random stream of floats in [0, 1) (mulberry32: small, fast and good enough for
 * sampling; not for cryptography).
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Makes a sampler: temperature scaling, then top-k, then top-p (nucleus) filtering, then a draw from the
 * renormalised distribution.
 *
 * @example
 * ```ts
 * const sample = createSampler({ temperature: 0.8, topP: 0.9, seed: 42 });
 * const next = sample(logits);
 * ```
 */
export function createSampler(options: SamplingOptions = {}): Sampler {
  const temperature = options.temperature ?? 0;
  if (!(temperature >= 0)) throw new RangeError(`temperature must be ≥ 0 (got ${temperature})`);
  const topK = options.topK ?? 0;
  if (!Number.isInteger(topK) || topK < 0)
    throw new RangeError(`topK must be a non-negative integer (got ${topK})`);
  const topP = options.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1] (got ${topP})`);
  if (temperature === 0) return argmax;
  const random = seededRandom(options.seed ?? Date.now());

  return (logits) => {
    // Candidates sorted by logit, most likely first; probabilities computed stably in float64.
    let candidates = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
    if (topK > 0) candidates = candidates.slice(0, topK);
    const maxLogit = logits[candidates[0]!]!;
    let probabilities = candidates.map((id) => Math.exp((logits[id]! - maxLogit) / temperature));
    let total = probabilities.reduce((sum, p) => sum + p, 0);
    if (topP < 1) {
      let cumulative = 0;
      let keep = 0;
      while (keep < candidates.length && cumulative < topP * total) cumulative += probabilities[keep++]!;
      candidates = candidates.slice(0, keep);
      probabilities = probabilities.slice(0, keep);
      total = cumulative;
    }
    let threshold = random() * total;
    for (let index = 0; index < candidates.length; index++) {
      threshold -= probabilities[index]!;
      if (threshold < 0) return candidates[index]!;
    }
    return candidates[candidates.length - 1]!;
  };
}
