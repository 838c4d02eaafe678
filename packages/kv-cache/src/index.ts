/**
 * `@rrt/kv-cache`: key/value caches for rrt decoders, one per effective depth: a contiguous cache for one batch, and a
 * paged cache for a serving engine's many sequences.
 *
 * @packageDocumentation
 */
export { KVCacheError, KVCapacityError } from './errors.js';
export { createKVCache, KVCache, type KVCacheOptions } from './kv-cache.js';
export { type KeyValues, LayerKVCache } from './layer-cache.js';
export {
  createPagedKVCache,
  type KVSharing,
  type PagedAttentionPath,
  PagedKVCache,
  type PagedKVCacheOptions,
  type PagedKeyValues,
  PagedLayer,
  PagedSequence,
} from './paged-cache.js';
