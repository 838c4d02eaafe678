/**
 * `@rrt/eval`: how good and how costly an rrt decoder is. Perplexity in the sliding-window and documents
 * protocols, read out after every loop for recursive models; parameter, byte, FLOP and KV-cache counts;
 * reports as JSON, Markdown and SVG charts.
 *
 * @example
 * ```ts
 * import { documentsPerplexity, encodeDocuments } from '@rrt/eval';
 * const documents = encodeDocuments(tokenizer, text);
 * const { perplexity, loops } = await documentsPerplexity(model, documents, { perLoop: true });
 * ```
 *
 * @packageDocumentation
 */
export { EvalOptionError } from './errors.js';
export {
  type DocumentsOptions,
  documentsPerplexity,
  type PerplexityOptions,
  type PerplexityProgress,
  type PerplexityResult,
  type ReadoutPerplexity,
  type WindowOptions,
  windowPerplexity,
} from './perplexity.js';
export { encodeDocuments, encodeStream, splitDocuments } from './text.js';
export {
  type CheckpointStorage,
  checkpointStorage,
  type FlopsPerToken,
  type ModelCost,
  type ModelCostOptions,
  modelCost,
  type ParameterCounts,
  type ParameterGroups,
  type StorageTally,
  type TensorHeader,
  tensorGroup,
} from './cost.js';
export {
  type ChartSpec,
  type LoopPoint,
  type ParameterPoint,
  parametersVsPerplexityChart,
  perLoopChart,
  perplexityVsRankChart,
  type RankPoint,
  renderSvg,
} from './charts.js';
export {
  type EvalEntry,
  type EvalReport,
  reportChartSpecs,
  reportCharts,
  reportJson,
  reportMarkdown,
} from './report.js';
