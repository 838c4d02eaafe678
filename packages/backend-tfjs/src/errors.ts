/**
 * Every error that `@rrt/backend-tfjs` raises: each names the backend, package or tensor at fault and says
 * what was expected.
 *
 * @module
 */

/** Base class of this package's typed errors. */
export class TfjsBackendError extends Error {
  override name = 'TfjsBackendError';
}

/**
 * A backend that was asked for explicitly (not through `"auto"`) cannot run here: its package is not
 * installed, its native addon is missing, or (WebGPU) no adapter was found.
 */
export class BackendUnavailableError extends TfjsBackendError {
  override name = 'BackendUnavailableError';
  constructor(
    /** The backend kind that was asked for, e.g. `"node"`. */
    readonly kind: string,
    /** The package that provides it, e.g. `"@tensorflow/tfjs-node"`. */
    readonly packageName: string,
    /** Why it cannot be used, in one line. */
    readonly reason: string,
  ) {
    super(`backend "${kind}" (${packageName}) is unavailable: ${reason}`);
  }
}

/**
 * An op was called on a backend object whose tfjs backend is not the active one. tfjs keeps one global
 * engine with one active backend; creating a second backend of another kind switches it.
 */
export class BackendNotActiveError extends TfjsBackendError {
  override name = 'BackendNotActiveError';
  constructor(
    /** The tfjs backend this object runs on, e.g. `"wasm"`. */
    readonly expected: string,
    /** The tfjs backend that is active now. */
    readonly active: string,
  ) {
    super(
      `this rrt backend runs on tfjs backend "${expected}", but the global tfjs engine has "${active}" active ` +
        `(a backend of another kind was created since); call \`await backend.activate()\` to switch back`,
    );
  }
}

/** Data handed to `fromArray` or `fromBytes` does not hold as many elements as the shape needs. */
export class TensorDataError extends TfjsBackendError {
  override name = 'TensorDataError';
  constructor(
    /** The method that was called, e.g. `"fromBytes"`. */
    readonly method: string,
    /** What is wrong. */
    readonly problem: string,
  ) {
    super(`${method}: ${problem}`);
  }
}
