/**
 * `@rrt/kv-cache`: key/value caches for rrt decoders, one per effective depth.
 *
 * @packageDocumentation
 */
export { KVCacheError } from './errors.js';
export { createKVCache, KVCache, type KVCacheOptions } from './kv-cache.js';
export { type KeyValues, LayerKVCache } from './layer-cache.js';
