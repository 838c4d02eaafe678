/** Errors raised by the serving engine. @module */

/** The engine's request queue is full: the request was refused, nothing was allocated for it. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** A request that can never run: bad options, or more KV pages than the whole pool holds. */
export class RequestError extends Error {
  override name = 'RequestError';
}
