/** Errors raised by the KV caches. @module */

/** A cache was asked to hold more than its capacity, or was used inconsistently. */
export class KVCacheError extends Error {
  override name = 'KVCacheError';
}

/** A request does not fit: the pool has too few free pages for it (nothing was taken). */
export class KVCapacityError extends KVCacheError {
  override name = 'KVCapacityError';
}
