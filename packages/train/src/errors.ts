/**
 * Typed errors of `@rrt/train`. Each message names the option, file or tensor at fault and what was
 * expected.
 *
 * @module
 */
import { RrtError } from '@rrt/core';

/** Base class of every error `@rrt/train` raises on purpose. */
export class TrainError extends RrtError {}

/** A training option is out of range (a non-positive number of steps, a learning rate that is not finite...). */
export class TrainOptionError extends TrainError {
  /** The option at fault, as the API spells it (`steps`, `batchSize`, `learningRate`...). */
  readonly option: string;

  constructor(option: string, expected: string, got: unknown) {
    super(`option "${option}": expected ${expected}, got ${JSON.stringify(got)}`);
    this.option = option;
  }
}

/** The training text cannot give what a run needs (too few documents or tokens for the split or window). */
export class TrainingDataError extends TrainError {
  /** The text file (or a description of the source) at fault. */
  readonly source: string;

  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.source = source;
  }
}

/**
 * A training-state file cannot be resumed: it is missing a tensor, holds one of another shape, or was
 * written by a run with other settings.
 */
export class ResumeError extends TrainError {
  /** The state file. */
  readonly file: string;

  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.file = file;
  }
}

/** The teacher model does not fit the student (another vocabulary size). */
export class TeacherMismatchError extends TrainError {
  constructor(teacher: string, problem: string) {
    super(`teacher ${teacher}: ${problem}`);
  }
}

/** The model is of a kind training does not support yet (GPT-NeoX's LayerNorm biases, say). */
export class UnsupportedModelError extends TrainError {
  constructor(
    readonly model: string,
    problem: string,
  ) {
    super(`${model}: ${problem}`);
  }
}
