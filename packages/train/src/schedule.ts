/**
 * The learning-rate schedule: linear warmup from 0, then cosine decay to a floor.
 *
 * @module
 */

/** Options of {@link learningRateAt}. */
export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warmup. */
  learningRate: number;
  /** Steps of linear warmup. */
  warmupSteps: number;
  /** Total optimizer steps of the run. */
  totalSteps: number;
  /** The rate at the last step, as a fraction of the peak. */
  minLearningRateRatio: number;
}

/**
 * The learning rate of optimizer step `step` (1-based): `peak · step / warmup` during warmup, then a
 * cosine from the peak down to `peak · minLearningRateRatio` at `totalSteps`.
 */
export function learningRateAt(step: number, options: ScheduleOptions): number {
  const { learningRate: peak, warmupSteps, totalSteps, minLearningRateRatio } = options;
  if (step <= warmupSteps) return (peak * step) / warmupSteps;
  const decaySteps = Math.max(1, totalSteps - warmupSteps);
  const progress = Math.min(1, (step - warmupSteps) / decaySteps);
  const floor = peak * minLearningRateRatio;
  return floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
