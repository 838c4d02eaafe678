/**
 * `@rrt/backend-tfjs`: the rrt tensor interface ({@link Backend} from `@rrt/tensor`) on tfjs, with its
 * native (`tfjs-node-gpu`, `tfjs-node`), wasm, WebGPU and cpu backends. It is the only rrt package that
 * imports `@tensorflow/*`.
 *
 * @example
 * ```ts
 * import { createBackend } from '@rrt/backend-tfjs';
 * const { backend, kind, reason } = await createBackend('auto');
 * console.log(`backend ${kind}: ${reason}`);
 * ```
 *
 * @packageDocumentation
 */
export type { Backend } from '@rrt/tensor';
export {
  type BackendKind,
  type CreateBackendOptions,
  type CreatedBackend,
  createBackend,
} from './create-backend.js';
export {
  BackendNotActiveError,
  BackendUnavailableError,
  TensorDataError,
  TfjsBackendError,
} from './errors.js';
export { kernelsWithGradients } from './gradients.js';
export { type ResolvedKind, TfjsBackend } from './tfjs-backend.js';
