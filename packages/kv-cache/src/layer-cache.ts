import type { Backend, Tensor } from '@rrt/tensor';
import { KVCacheError } from './errors.js';

/**
 * What a layer's attention reads after an append: the cache's buffers, `[batch, capacity, kvHeads,
 * headDim]` each, of which positions `0 … length − 1` hold keys and values (the rest is unspecified).
 */
export interface KeyValues {
  keys: Tensor;
  values: Tensor;
  /** Positions filled. */
  length: number;
}

/**
 * The cache of one effective layer: preallocated key and value buffers of `capacity` positions, which
 * each append writes into in place ({@link Backend.writeRows}), so that an append costs the new rows, not
 * a copy of the history.
 *
 * NOTE: the buffers are allocated on the first append (that is when the batch size and head shape are
 * known) and `keep`-ed, so that the caller's `tidy` scope does not free them; {@link bytes} counts them
 * whole from then on.
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
   * Appends `keys`/`values` (`[batch, newLength, kvHeads, headDim]`, the layout projections produce) and
   * returns the buffers with everything cached, including them. The buffers belong to the cache: do not
   * dispose them, and read them before the next append (which writes into them).
   */
  updateAndFetch(keys: Tensor, values: Tensor): KeyValues {
    const [batch, newLength, kvHeads, headDim] = keys.shape as [number, number, number, number];
    if (this.offset + newLength > this.capacity) {
      throw new KVCacheError(
        `KV cache full: ${this.offset} positions cached + ${newLength} new > capacity ${this.capacity}`,
      );
    }
    const shape = [batch, this.capacity, kvHeads, headDim];
    if (this.keys?.shape.some((dim, axis) => dim !== shape[axis])) {
      throw new KVCacheError(
        `KV cache holds [${this.keys.shape}] (batch, capacity, kvHeads, headDim); keys [${keys.shape}] do not fit`,
      );
    }
    if (!this.keys || !this.values) {
      this.keys = this.backend.keep(this.backend.fill(shape, 0));
      this.values = this.backend.keep(this.backend.fill(shape, 0));
    }
    // Row b·capacity + position of the buffers (seen as [batch·capacity, kvHeads, headDim]) for each new
    // (b, t), in the order of the new rows.
    const indices = new Int32Array(batch * newLength);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < newLength; t++) indices[b * newLength + t] = b * this.capacity + this.offset + t;
    }
    // [batch, newLength, kvHeads, headDim] is batch·newLength rows of [kvHeads, headDim], (b, t) order.
    this.backend.writeRows(this.keys, indices, keys);
    this.backend.writeRows(this.values, indices, values);
    this.offset += newLength;
    return { keys: this.keys, values: this.values, length: this.offset };
  }

  /** Drops the last `count` positions (for speculative or rejected tokens); nothing is copied. */
  trim(count: number): void {
    if (count <= 0) return;
    this.offset = Math.max(0, this.offset - count);
  }

  /** Bytes held by the buffers (float32), allocated whole on the first append. */
  bytes(): number {
    if (!this.keys) return 0;
    return 2 * 4 * this.keys.shape.reduce((product, dim) => product * dim, 1);
  }

  /** Frees the buffers; the cache becomes empty. */
  dispose(): void {
    if (this.keys) this.backend.dispose(this.keys);
    if (this.values) this.backend.dispose(this.values);
    this.keys = undefined;
    this.values = undefined;
    this.offset = 0;
  }
}
