/**
 * Comparisons of logits read back from a backend, for tests: against the float64 reference and against
 * another forward of the same model.
 */
import type { Backend, Tensor } from '@rrt/tensor';
import { seededRandom } from '../src/generate/sampling.js';
import type { Decoder } from '../src/model/decoder.js';

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

/**
 * The logits `[length, vocab]` of two sequences run through `model`'s step API with sequence 1 one loop
 * behind sequence 0: call j runs sequence 0 at depth j and sequence 1 at depth j − K in one
 * `Decoder.layer` call (the same stored layer with another loop's LoRA), each alone where only one is
 * active. Each keeps its own hidden rows between calls. Call inside `backend.tidy`.
 */
export function staggeredLoopLogits(model: Decoder, tokens: readonly [number[], number[]]): Tensor[] {
  const { backend } = model;
  const depths = model.schedule.length;
  const blockSize = model.config.recursion?.blockSize ?? depths;
  const spans = tokens.map((t) => ({ batch: 1, length: t.length, offset: 0 }));
  const rows = model.rows(spans);
  const single = spans.map((span) => model.rows([span]));
  const hidden: Tensor[] = tokens.map((t) =>
    model.embed(backend.fromArray(Int32Array.from(t), [t.length], 'int32')),
  );
  for (let call = 0; call < depths + blockSize; call++) {
    const active = [call, call - blockSize]
      .map((depth, s) => ({ s, depth }))
      .filter(({ depth }) => depth >= 0 && depth < depths);
    if (active.length === 1) {
      const { s, depth } = active[0]!;
      hidden[s] = model.layer(hidden[s]!, single[s]!, [{ depth }]);
      continue;
    }
    const out = model.layer(
      backend.concat(hidden, 0),
      rows,
      active.map(({ depth }) => ({ depth })),
    );
    hidden[0] = backend.slice(out, [0, 0], [tokens[0].length, -1]);
    hidden[1] = backend.slice(out, [tokens[0].length, 0], [-1, -1]);
  }
  return hidden.map((h) => model.readout(h));
}
