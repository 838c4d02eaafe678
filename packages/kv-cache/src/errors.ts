/** Errors raised by the KV caches. @module */

/** A cache was asked to hold more than its capacity, or was used inconsistently. */
export class KVCacheError extends Error {
  override name = 'KVCacheError';
}
