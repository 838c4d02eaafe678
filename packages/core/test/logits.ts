/**
 * Comparisons of logits read back from a backend, for tests: against the float64 reference and against
 * another forward of the same model.
 */
import type { Backend, Tensor } from '@rrt/tensor';
import { seededRandom } from '../src/generate/sampling.js';

/**
 * Worst error of `actual` (`[positions, vocab]` flat, starting at row `firstRow`) against `expected`
 * (`[positions][vocab]`), each position relative to its largest expected magnitude (at least 1): float32
 * accumulation error scales with the magnitudes summed.
 */
export function worstRelativeError(
  actual: ArrayLike<number>,
  expected: readonly (readonly number[])[],
  firstRow = 0,
): number {
  let worst = 0;
  expected.forEach((row, position) => {
    const scale = Math.max(1, ...row.map(Math.abs));
    const base = (firstRow + position) * row.length;
    row.forEach((value, index) => {
      worst = Math.max(worst, Math.abs(actual[base + index]! - value) / scale);
    });
  });
  return worst;
}

/** Largest `|a[i] − b[offset + i]|` over `a`'s length (0 when bit-identical, barring signed zeros). */
export function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>, offset = 0): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[offset + i]!));
  return worst;
}

/** `count` token ids below `vocab` from a seeded stream. */
export function randomTokens(seed: number, count: number, vocab: number): number[] {
  const uniform = seededRandom(seed);
  return Array.from({ length: count }, () => Math.floor(uniform() * vocab));
}

/** An int32 `[rows.length, rows[0].length]` tensor of token ids (every row the same length). */
export function idsTensor(backend: Backend, rows: readonly (readonly number[])[]): Tensor {
  return backend.fromArray(Int32Array.from(rows.flat()), [rows.length, rows[0]!.length], 'int32');
}

/** Reads a tensor's values and disposes it. */
export async function readAndDispose(backend: Backend, tensor: Tensor): Promise<Float32Array> {
  const values = (await backend.read(tensor)) as Float32Array;
  backend.dispose(tensor);
  return values;
}
