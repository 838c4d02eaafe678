/**
 * `@rrt/tensor/testing`: the conformance suite that every {@link Backend} implementation must pass, and
 * the float64 reference arithmetic, seeded PRNG and comparison helpers it is built from (usable by any
 * package's tests). Imports `vitest`.
 *
 * @example
 * ```ts
 * import { describeBackendConformance } from '@rrt/tensor/testing';
 * import { createBackend } from '@rrt/backend-tfjs';
 * describeBackendConformance('tfjs-cpu', async () => (await createBackend('cpu')).backend);
 * ```
 *
 * @packageDocumentation
 */
export type { Backend } from '../backend.js';
export { expectClose, expectExact, expectShape, expectWithin, type Tolerance } from './compare.js';
export {
  type ConformanceOptions,
  type ConformanceTolerances,
  defaultTolerances,
  describeBackendConformance,
} from './conformance.js';
export { SeededRandom } from './random.js';
export * as reference from './reference.js';
export type { RefArray } from './reference.js';
