/**
 * `@rrt/convert`: turns a pretrained decoder checkpoint into a Recursive Transformer (K shared layers
 * looped L times) or a Relaxed one (plus a LoRA per loop, layer and module, initialised by truncated SVD
 * of the residuals), streaming and atomically; and back into N plain layers with {@link exportUnrolled}.
 *
 * @example
 * ```ts
 * import { convertToRecursive, exportUnrolled } from '@rrt/convert';
 * await convertToRecursive('tinyllama', 'tinyllama-rrt', { loops: 2, init: 'average', ranks: 64 });
 * await exportUnrolled('tinyllama-rrt', 'tinyllama-rrt-unrolled');
 * ```
 *
 * @packageDocumentation
 */
export {
  type ConversionResult,
  type ConvertOptions,
  convertToRecursive,
  type GroupReconstruction,
  type ParameterCounts,
} from './convert.js';
export {
  ConvertError,
  IncompatibleLayoutError,
  InvalidOptionError,
  type LayoutPair,
  OutputExistsError,
  SourceChangedError,
  SourceCheckpointError,
  UnsupportedArchitectureError,
} from './errors.js';
export { type ExportOptions, type ExportResult, exportUnrolled } from './export.js';
export type { SvdOptions } from './factorize.js';
export {
  type LayoutRequest,
  linspace,
  planLayout,
  type RecursiveLayout,
  roundHalfToEven,
  type SharedInit,
  seededSortedChoice,
  sharedInits,
  type StoredLayerPlan,
  stepwiseLayers,
  validLayoutPairs,
} from './layout.js';
export type { FloatDType } from './numeric.js';
export type { TensorProgress } from './output.js';
export {
  groupOf,
  type ModuleGroup,
  moduleGroupNames,
  moduleGroups,
  type RankOption,
  resolveRanks,
} from './ranks.js';
