import type { Backend } from '@rrt/tensor';
import { LayerKVCache } from './layer-cache.js';

/** Options of {@link createKVCache}. */
export interface KVCacheOptions {
  /** Number of effective layers (`loops × blockSize` for a recursive model): one cache per depth. */
  depths: number;
  /** Most positions each depth may hold. */
  capacity: number;
}

/**
 * The KV cache of one batch of sequences, one {@link LayerKVCache} per effective depth
 * (`loopIndex · blockSize + blockLayer`), so that every loop of a recursive model keeps its own keys and
 * values even though the loops share weights.
 */
export class KVCache {
  /** One cache per effective depth. */
  readonly layers: LayerKVCache[];

  constructor(backend: Backend, options: KVCacheOptions) {
    this.layers = Array.from({ length: options.depths }, () => new LayerKVCache(backend, options.capacity));
  }

  /** Positions cached at depth 0: the position of the next token to feed. */
  get offset(): number {
    return this.layers[0]?.offset ?? 0;
  }

  /** Bytes held by all depths. */
  bytes(): number {
    return this.layers.reduce((total, layer) => total + layer.bytes(), 0);
  }

  /** Drops the last `count` positions at every depth. */
  trim(count: number): void {
    for (const layer of this.layers) layer.trim(count);
  }

  /** Frees every cached tensor. */
  dispose(): void {
    for (const layer of this.layers) layer.dispose();
  }
}

/**
 * Creates an empty cache.
 *
 * @example
 * ```ts
 * const cache = createKVCache(backend, { depths: model.config.numHiddenLayers, capacity: 512 });
 * // ... model.forward(ids, { cache }) ...
 * cache.dispose();
 * ```
 */
export function createKVCache(backend: Backend, options: KVCacheOptions): KVCache {
  return new KVCache(backend, options);
}
