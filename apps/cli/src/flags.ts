/** Parsing of command-line flag values, shared by the commands; bad values are {@link UsageError}s. */
import type { FloatDType } from '@rrt/convert';
import { UsageError } from './cli-io.js';

const dtypes: Record<string, FloatDType> = {
  f32: 'F32',
  float32: 'F32',
  f16: 'F16',
  float16: 'F16',
  bf16: 'BF16',
  bfloat16: 'BF16',
};

/**
 * A numeric flag, or `undefined` when absent. `check` bounds it where the CLI knows the range; where a
 * library checks it (and raises its own typed error), leave `check` out.
 */
export function numberFlag(
  name: string,
  value: string | undefined,
  check: (parsed: number) => boolean = () => true,
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === '' || Number.isNaN(parsed))
    throw new UsageError(`--${name} expects a number, got "${value}"`);
  if (!check(parsed)) throw new UsageError(`--${name} got "${value}", which is out of range`);
  return parsed;
}

/** A storage dtype flag (`f32`, `f16`, `bf16` or their long names), or `undefined` when absent. */
export function dtypeFlag(name: string, value: string | undefined): FloatDType | undefined {
  if (value === undefined) return undefined;
  const dtype = dtypes[value.toLowerCase()];
  if (!dtype) throw new UsageError(`--${name} expects f32, f16 or bf16, got "${value}"`);
  return dtype;
}

/** A flag that takes one of a fixed set of words. */
export function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} expects one of ${allowed.join(', ')}, got "${value}"`);
  }
  return value as T;
}
