import type { Backend, Tensor } from '@rrt/tensor';
import { KVCacheError } from './errors.js';

/** Keys and values of all cached positions of one layer, `[batch, kvHeads, length, headDim]` each. */
export interface KeyValues {
  keys: Tensor;
  values: Tensor;
}

/**
 * The cache of one effective layer: keys and values grow along the sequence axis as tokens are appended.
 *
 * NOTE: tensors are immutable on our backends, so an append concatenates and frees the previous buffer;
 * the cached tensors are `keep`-ed so that the caller's `tidy` scope does not free them.
 */
export class LayerKVCache {
  /** Number of positions cached. */
  offset = 0;
  private keys: Tensor | undefined;
  private values: Tensor | undefined;

  constructor(
    private readonly backend: Backend,
    /** Most positions this layer may hold. */
    readonly capacity: number,
  ) {}

  /**
   * Appends `keys`/`values` (`[batch, kvHeads, newLength, headDim]`) and returns everything cached,
   * including them. The returned tensors belong to the cache: do not dispose them.
   */
  updateAndFetch(keys: Tensor, values: Tensor): KeyValues {
    const newLength = keys.shape[2]!;
    if (this.offset + newLength > this.capacity) {
      throw new KVCacheError(
        `KV cache full: ${this.offset} positions cached + ${newLength} new > capacity ${this.capacity}`,
      );
    }
    const nextKeys = this.keys ? this.backend.concat([this.keys, keys], 2) : this.backend.add(keys, 0);
    const nextValues = this.values
      ? this.backend.concat([this.values, values], 2)
      : this.backend.add(values, 0);
    this.replace(this.backend.keep(nextKeys), this.backend.keep(nextValues));
    this.offset += newLength;
    return { keys: nextKeys, values: nextValues };
  }

  /** Drops the last `count` positions (for speculative or rejected tokens). */
  trim(count: number): void {
    if (count <= 0 || !this.keys || !this.values) return;
    const kept = Math.max(0, this.offset - count);
    if (kept === 0) {
      this.replace(undefined, undefined);
    } else {
      const [batch, heads, , headDim] = this.keys.shape as [number, number, number, number];
      const size = [batch, heads, kept, headDim];
      const keys = this.backend.keep(this.backend.slice(this.keys, [0, 0, 0, 0], size));
      const values = this.backend.keep(this.backend.slice(this.values, [0, 0, 0, 0], size));
      this.replace(keys, values);
    }
    this.offset = kept;
  }

  /** Bytes held by the cached tensors (float32). */
  bytes(): number {
    if (!this.keys) return 0;
    return 2 * 4 * this.keys.shape.reduce((product, dim) => product * dim, 1);
  }

  /** Frees the cached tensors; the cache becomes empty. */
  dispose(): void {
    this.replace(undefined, undefined);
    this.offset = 0;
  }

  private replace(keys: Tensor | undefined, values: Tensor | undefined): void {
    if (this.keys) this.backend.dispose(this.keys);
    if (this.values) this.backend.dispose(this.values);
    this.keys = keys;
    this.values = values;
  }
}
