/** Errors raised by the serving engine. @module */
import { RrtError } from '@rrt/core';

/** The engine's request queue is full: the request was refused, nothing was allocated for it. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** A request that can never run: bad options, or more KV pages than the whole pool holds. */
export class RequestError extends Error {
  override name = 'RequestError';
}

/**
 * Exit calibration, a trace or a simulation was given something it cannot use; `option` names the input
 * (`maxChange`, `tokenIds`, `requests`, ...) and the message what was expected.
 */
export class CalibrationError extends RrtError {
  constructor(
    /** The option or input concerned. */
    readonly option: string,
    detail: string,
  ) {
    super(`${option}: ${detail}`);
  }
}
