/**
 * A small seeded PRNG for tests, so that a failure reproduces from its seed.
 *
 * @module
 */

/** Deterministic random numbers (mulberry32), seeded. */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  /** Integer uniform in [low, high). */
  int(low: number, high: number): number {
    return low + Math.floor((high - low) * this.next());
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** `count` float32-representable values uniform in [low, high). */
  floats(count: number, low = -1, high = 1): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.uniform(low, high);
    return out;
  }

  /** `count` float32-representable values whose magnitude is uniform in [low, high), random sign. */
  floatsAwayFromZero(count: number, low: number, high: number): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = (this.next() < 0.5 ? -1 : 1) * this.uniform(low, high);
    return out;
  }

  /** `count` integers uniform in [low, high). */
  ints(count: number, low: number, high: number): Int32Array {
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.int(low, high);
    return out;
  }
}
