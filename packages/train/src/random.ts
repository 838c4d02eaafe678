/**
 * The seeded random stream of a training run, with its state exposed so that a checkpoint can save it and
 * a resumed run continue it exactly.
 *
 * @module
 */

/**
 * mulberry32: a 32-bit state, uniform doubles in [0, 1). NOTE: core's `seededRandom` is the same
 * generator but hides its state; a resumable run needs to save and restore it, hence this class.
 */
export class TrainRandom {
  private current: number;

  constructor(seed: number) {
    this.current = seed >>> 0;
  }

  /** The generator's state (a uint32): pass it to {@link TrainRandom.fromState} to continue the stream. */
  get state(): number {
    return this.current;
  }

  /** A generator that continues from a saved {@link TrainRandom.state}. */
  static fromState(state: number): TrainRandom {
    return new TrainRandom(state);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.current = (this.current + 0x6d2b79f5) >>> 0;
    let t = this.current;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer uniform in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}
