/**
 * `@rrt/batching`: a serving engine for recursive models. A scheduler plans each step's rows as plain
 * data (vLLM v1's split), an executor runs them with `@rrt/core`'s step API over a paged KV cache, and
 * batching modes (static, sequence-wise, depth-wise) and exit policies (none, confidence, agreement,
 * oracle) are values handed to it. Tokens that exit early get their skipped depths' keys and values by
 * CALM-style state propagation (or FREE-style
 * completion, `exitKV: 'complete'`).
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
export { type ExitPolicy, type ExitRule, exitRule, type LoopReadout } from './exit.js';
export { type ExitKV, type ExitKVRule, exitKVRule } from './exit-kv.js';
export { type BatchingMode, type ModeRule, modeRule } from './modes.js';
export type { Propagation, StepOutput, StepPlan, StepRow } from './plan.js';
export { type FinishReason, type Request, Scheduler, type SchedulerOptions } from './scheduler.js';
export { Executor } from './executor.js';
