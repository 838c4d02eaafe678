/**
 * A small dense matrix type (row-major) and the few helpers the SVD code and its callers need.
 *
 * @module
 */
import { InvalidMatrixError } from './errors.js';

/** Element storage of a {@link Matrix}: float32 (weights as loaded) or float64 (results of this package). */
export type MatrixData = Float32Array | Float64Array;

/**
 * A dense matrix stored row-major: entry `(i, j)` is `data[i * cols + j]`.
 *
 * @example
 * ```ts
 * const m: Matrix = { rows: 2, cols: 3, data: new Float32Array([1, 2, 3, 4, 5, 6]) };
 * ```
 */
export interface Matrix<D extends MatrixData = MatrixData> {
  /** Number of rows (for a linear layer's weight `[out, in]`: `out`). */
  readonly rows: number;
  /** Number of columns (for a linear layer's weight: `in`). */
  readonly cols: number;
  /** `rows × cols` entries, row-major. */
  readonly data: D;
}

/**
 * Checks that `m` is a well-formed matrix (integer, non-negative dimensions and a data array of length
 * `rows × cols`) and throws {@link InvalidMatrixError} naming `what` otherwise.
 */
export function assertMatrix(m: Matrix, what = 'matrix'): void {
  if (!Number.isInteger(m.rows) || !Number.isInteger(m.cols) || m.rows < 0 || m.cols < 0) {
    throw new InvalidMatrixError(
      `${what}: expected non-negative integer dimensions, got ${m.rows} × ${m.cols}`,
    );
  }
  if (!(m.data instanceof Float32Array || m.data instanceof Float64Array)) {
    throw new InvalidMatrixError(`${what}: expected data to be a Float32Array or Float64Array`);
  }
  if (m.data.length !== m.rows * m.cols) {
    throw new InvalidMatrixError(
      `${what}: expected ${m.rows} × ${m.cols} = ${m.rows * m.cols} entries, got ${m.data.length}`,
    );
  }
}

/**
 * A `rows × cols` matrix over `data` (not copied), or a new zero float64 matrix when `data` is omitted.
 *
 * @throws {@link InvalidMatrixError} when the dimensions and the data length disagree.
 * @example
 * ```ts
 * const w = createMatrix(2, 2, new Float32Array([1, 0, 0, 1]));
 * const z = createMatrix(3, 4); // zeros, Float64Array
 * ```
 */
export function createMatrix<D extends MatrixData = Float64Array>(
  rows: number,
  cols: number,
  data?: D,
): Matrix<D> {
  const m = { rows, cols, data: (data ?? new Float64Array(Math.max(0, rows * cols))) as D };
  assertMatrix(m);
  return m;
}

/** The `n × n` identity matrix, float64. */
export function identityMatrix(n: number): Matrix<Float64Array> {
  const m = createMatrix(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** The transpose `mᵀ` as a new float64 matrix. */
export function transposeMatrix(m: Matrix): Matrix<Float64Array> {
  const { rows, cols, data } = m;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j]!;
  }
  return { rows: cols, cols: rows, data: out };
}

/** Options of {@link multiplyMatrices}. */
export interface MultiplyOptions {
  /** Use `aᵀ` instead of `a`. */
  transposeA?: boolean;
  /** Use `bᵀ` instead of `b`. */
  transposeB?: boolean;
}

/**
 * The product `op(a) · op(b)` in float64 on the host (`op` is the identity or the transpose, per the
 * options). Meant for small and medium matrices; large products belong on a tensor backend.
 *
 * @throws {@link InvalidMatrixError} when the inner dimensions differ.
 * @example
 * ```ts
 * const gram = multiplyMatrices(u, u, { transposeA: true }); // uᵀu
 * ```
 */
export function multiplyMatrices(a: Matrix, b: Matrix, options: MultiplyOptions = {}): Matrix<Float64Array> {
  // NOTE: both operands are first brought to the layouts that make the inner loop a contiguous axpy:
  // a row-major (m × k) and b row-major (k × n). Transposed copies cost O(size), the product O(m·k·n).
  const left = options.transposeA ? transposeMatrix(a) : a;
  const right = options.transposeB ? transposeMatrix(b) : b;
  if (left.cols !== right.rows) {
    throw new InvalidMatrixError(
      `multiplyMatrices: inner dimensions differ: ${left.rows} × ${left.cols} times ${right.rows} × ${right.cols}`,
    );
  }
  const m = left.rows;
  const k = left.cols;
  const n = right.cols;
  const out = new Float64Array(m * n);
  const ld = left.data;
  const rd = right.data;
  for (let i = 0; i < m; i++) {
    const o = i * n;
    for (let p = 0; p < k; p++) {
      const s = ld[i * k + p]!;
      if (s === 0) continue;
      const r = p * n;
      for (let j = 0; j < n; j++) out[o + j]! += s * rd[r + j]!;
    }
  }
  return { rows: m, cols: n, data: out };
}

/** The Frobenius norm `‖m‖_F = √(Σ m_ij²)`, accumulated in float64. */
export function frobeniusNorm(m: Matrix): number {
  return Math.sqrt(sumOfSquares(m.data));
}

/** `Σ x_i²` accumulated in float64. */
export function sumOfSquares(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    s += v * v;
  }
  return s;
}

/** A float64 copy of `m`. */
export function toFloat64(m: Matrix): Matrix<Float64Array> {
  return { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) };
}
