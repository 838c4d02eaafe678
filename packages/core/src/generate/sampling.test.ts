import { describe, expect, it } from 'vitest';
import { argmax, createSampler, seededRandom } from './sampling.js';

/** Exact float64 distribution after temperature, top-k and top-p, written independently of the sampler. */
function expectedDistribution(logits: number[], temperature: number, topK: number, topP: number): number[] {
  const order = logits.map((value, id) => ({ value, id })).sort((a, b) => b.value - a.value || a.id - b.id);
  const kept = topK > 0 ? order.slice(0, topK) : order;
  const weights = kept.map(({ value }) => Math.exp((value - kept[0]!.value) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  let cumulative = 0;
  const probabilities = new Array(logits.length).fill(0);
  for (let i = 0; i < kept.length; i++) {
    if (cumulative >= topP * total) break;
    cumulative += weights[i]!;
    probabilities[kept[i]!.id] = weights[i]!;
  }
  return probabilities.map((p) => p / cumulative);
}

describe('sampling', () => {
  it('greedy picks the first maximum', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(createSampler({ temperature: 0 })(Float32Array.from([0.5, -1, 0.75, 0.75]))).toBe(2);
  });

  it('same seed, same tokens; different seed, different tokens', () => {
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const draw = (seed: number) => {
      const sample = createSampler({ temperature: 1, seed });
      return Array.from({ length: 40 }, () => sample(logits));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  for (const [temperature, topK, topP] of [
    [1, 0, 1],
    [0.7, 5, 1],
    [1.3, 0, 0.8],
    [1, 4, 0.6],
  ] as const) {
    it(`matches the exact distribution (T=${temperature}, k=${topK}, p=${topP})`, () => {
      const random = seededRandom(Math.floor(Math.random() * 2 ** 31));
      const logits = Array.from({ length: 12 }, () => 3 * random() - 1.5);
      const expected = expectedDistribution(logits, temperature, topK, topP);
      const sample = createSampler({ temperature, topK, topP, seed: 12345 });
      const draws = 40_000;
      const counts = new Array(logits.length).fill(0);
      const input = Float32Array.from(logits);
      for (let i = 0; i < draws; i++) counts[sample(input)]++;
      counts.forEach((count, id) => {
        const p = expected[id]!;
        // Five standard deviations of a binomial count: a correct sampler fails this about once in 10⁶.
        const tolerance = 5 * Math.sqrt(draws * p * (1 - p)) + 1;
        expect(Math.abs(count - draws * p), `token ${id}`).toBeLessThanOrEqual(tolerance);
      });
    });
  }

  it('rejects bad options', () => {
    expect(() => createSampler({ temperature: -1 })).toThrow(RangeError);
    expect(() => createSampler({ topP: 0 })).toThrow(RangeError);
    expect(() => createSampler({ topK: 1.5 })).toThrow(RangeError);
  });
});
