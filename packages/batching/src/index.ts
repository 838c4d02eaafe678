/**
 * `@rrt/batching`: a serving engine for recursive models. A scheduler plans each step's rows as plain
 * data (vLLM v1's split), an executor runs them with `@rrt/core`'s step API over a paged KV cache, and
 * batching modes (static, sequence-wise, depth-wise) and exit policies (none, confidence, agreement,
 * oracle) are values handed to it. Tokens that exit early get their skipped depths' keys and values by
 * CALM-style state propagation (or FREE-style
 * completion, `exitKV: 'complete'`).
 *
 * For benchmarks and tuning: {@link calibrateExit} picks a confidence threshold on held-out text (at most
 * a given share of changed greedy tokens, with the perplexity with exits), {@link generateTrace} and
 * {@link runTrace} replay a seeded request trace, {@link simulateTrace} is the paper-style simulation from
 * {@link measureStepTimes}, and {@link runServingSuite} composes them into the serving benchmark.
 *
 * @packageDocumentation
 */
export {
  createEngine,
  type Engine,
  type EngineGenerateOptions,
  type EngineOptions,
  type EngineStats,
  type RequestStats,
} from './engine.js';
export { QueueFullError, RequestError } from './errors.js';
export { type ExitPolicy, type ExitRule, exitChecks, exitRule, type LoopReadout } from './exit.js';
export { type ExitKV, type ExitKVRule, exitKVRule } from './exit-kv.js';
export { type BatchingMode, type ModeRule, modeRule } from './modes.js';
export type { Propagation, StepOutput, StepPlan, StepRow } from './plan.js';
export { type FinishReason, type Request, Scheduler, type SchedulerOptions } from './scheduler.js';
export { Executor } from './executor.js';
export {
  type CalibrationOptions,
  calibrateExit,
  chooseThreshold,
  costPerToken,
  type ExitCalibration,
  type ExitOutcome,
  type ExitProfile,
  type ExitProfileOptions,
  exitOutcome,
  exitProfile,
} from './calibrate.js';
export { CalibrationError } from './errors.js';
export { type ReplayPolicy, replayRule } from './replay.js';
export {
  generateTrace,
  type RequestResult,
  runTrace,
  type TraceOptions,
  type TraceRequest,
  type TraceRun,
} from './trace.js';
export {
  changedTokenShare,
  identicalRequestShare,
  type Percentiles,
  percentile,
  type RunSummary,
  summarizeRun,
} from './metrics.js';
export {
  type MeasureOptions,
  measureStepTimes,
  readoutCost,
  type SimulateOptions,
  type StepTimes,
  simulateTrace,
  stepTimeAt,
} from './simulate.js';
export {
  runServingSuite,
  type ServingRow,
  type ServingSuiteOptions,
  type ServingSuiteResult,
  type SimulatedRow,
  type SuiteModel,
  servingTables,
} from './suite.js';
