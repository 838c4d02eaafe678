/**
 * Comparison of a backend's output with a float64 reference, with an error message that names the op,
 * the shape and the worst elements.
 *
 * @module
 */

/** An absolute and a relative tolerance: `|got − want| ≤ abs + rel·|want|`. */
export interface Tolerance {
  abs: number;
  rel: number;
}

/**
 * Throws unless every `got[i]` is within `bound(i)` of `want[i]`. NaN must meet NaN, ±∞ the same ±∞.
 *
 * @param what - names the case in the message, e.g. `"matmul [2,3]·[3,4]"`.
 */
export function expectClose(
  what: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: (i: number) => number,
): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: got ${got.length} values, want ${want.length}`);
  }
  const bad: string[] = [];
  let count = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const ok = Number.isNaN(w)
      ? Number.isNaN(g)
      : !Number.isFinite(w)
        ? g === w
        : Number.isFinite(g) && Math.abs(g - w) <= bound(i);
    if (!ok) {
      count++;
      if (bad.length < 5) bad.push(`[${i}] got ${g}, want ${w} (|diff| ${Math.abs(g - w)} > ${bound(i)})`);
    }
  }
  if (count > 0) throw new Error(`${what}: ${count} of ${want.length} values off:\n  ${bad.join('\n  ')}`);
}

/** {@link expectClose} with a fixed {@link Tolerance}. */
export function expectWithin(
  what: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tolerance,
): void {
  expectClose(what, got, want, (i) => tol.abs + tol.rel * Math.abs(want[i]!));
}

/** Throws unless `got` equals `want` exactly, element by element (−0 equals 0; NaN equals NaN). */
export function expectExact(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expectClose(what, got, want, () => 0);
}

/** Throws unless two shapes are equal. */
export function expectShape(what: string, got: readonly number[], want: readonly number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new Error(`${what}: shape [${got.join(', ')}], want [${want.join(', ')}]`);
  }
}
