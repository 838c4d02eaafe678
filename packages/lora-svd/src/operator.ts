/**
 * The two products a randomized SVD needs from a large matrix `A` (`[rows, cols]`), on vector sets
 * (`k` vectors stored one after another): either on a tensor {@link Backend}, where `A` is uploaded once
 * and kept as one long-lived tensor, or on the host in float64.
 *
 * @internal
 * @module
 */
import type { Backend, Tensor } from '@rrt/tensor';
import { LoraSvdError } from './errors.js';
import type { Matrix, MatrixData } from './matrix.js';

/** Products with a fixed matrix `A` of shape `[rows, cols]`. */
export interface MatrixOperator {
  readonly rows: number;
  readonly cols: number;
  /** `X·Aᵀ` for `X` given as `k` vectors of length `cols` (i.e. `(A·Xᵀ)ᵀ`): `k` vectors of length `rows`. */
  timesTransposed(x: Float64Array, k: number): Promise<Float64Array>;
  /** `Y·A` for `Y` given as `k` vectors of length `rows` (i.e. `(Aᵀ·Yᵀ)ᵀ`): `k` vectors of length `cols`. */
  leftTimes(y: Float64Array, k: number): Promise<Float64Array>;
  /** Frees what the operator holds (the uploaded tensor). */
  dispose(): void;
}

/**
 * `A` on a tensor backend: uploaded once as float32; each product uploads the small operand, runs one
 * `matmul` and reads the result back.
 *
 * NOTE: both products are plain `matmul`s with no transpose flag (`A·X` with `X = [cols, k]`, and `Y·A`),
 * the small operand transposed on the host instead (O(k·(rows + cols)), negligible). On tfjs-wasm 4.22 a
 * 2048 × 5632 by 5632 × 266 product takes ≈ 0.4 s plain and 4–8 s with `transposeA` or `transposeB`
 * (measured here), and `A` never changes layout, so a backend that packs a long-lived operand once can
 * reuse that work across the power iterations.
 */
export class BackendMatrixOperator implements MatrixOperator {
  readonly rows: number;
  readonly cols: number;
  private readonly backend: Backend;
  private a: Tensor | null;

  constructor(backend: Backend, matrix: Matrix) {
    this.backend = backend;
    this.rows = matrix.rows;
    this.cols = matrix.cols;
    const data = matrix.data instanceof Float32Array ? matrix.data : Float32Array.from(matrix.data);
    this.a = backend.fromArray(data, [matrix.rows, matrix.cols]);
  }

  async timesTransposed(x: Float64Array, k: number): Promise<Float64Array> {
    // A·Xᵀ with Xᵀ uploaded as [cols, k]; the [rows, k] result is transposed back into k vectors.
    const product = await this.product(transposeToFloat32(x, k, this.cols), [this.cols, k], false);
    const out = new Float64Array(k * this.rows);
    for (let i = 0; i < this.rows; i++) {
      for (let t = 0; t < k; t++) out[t * this.rows + i] = product[i * k + t]!;
    }
    return out;
  }

  async leftTimes(y: Float64Array, k: number): Promise<Float64Array> {
    // Y·A with Y as [k, rows]: the result's rows are already the k output vectors.
    return Float64Array.from(await this.product(Float32Array.from(y), [k, this.rows], true));
  }

  /** `X·A` when `aSecond`, else `A·X`, for `X` uploaded with `shape`; read back. */
  private async product(x: Float32Array, shape: [number, number], aSecond: boolean): Promise<Float32Array> {
    const a = this.a;
    if (a === null)
      throw new LoraSvdError('BackendMatrixOperator: the matrix tensor was used after dispose()');
    const operand = this.backend.fromArray(x, shape);
    let out: Tensor | null = null;
    try {
      out = aSecond ? this.backend.matmul(operand, a) : this.backend.matmul(a, operand);
      const values = await this.backend.read(out);
      return values instanceof Float32Array ? values : Float32Array.from(values);
    } finally {
      this.backend.dispose(operand);
      if (out !== null) this.backend.dispose(out);
    }
  }

  dispose(): void {
    if (this.a !== null) this.backend.dispose(this.a);
    this.a = null;
  }
}

/** `k` vectors of length `len` → their `[len, k]` matrix (vectors as columns), float32. */
function transposeToFloat32(x: Float64Array, k: number, len: number): Float32Array {
  const out = new Float32Array(len * k);
  for (let t = 0; t < k; t++) {
    const o = t * len;
    for (let i = 0; i < len; i++) out[i * k + t] = x[o + i]!;
  }
  return out;
}

/** Columns per chunk of the host products, so that a chunk of every operand stays in cache. */
const HOST_CHUNK = 512;

/** `A` on the host: float64 products over `A`'s data as given (float32 or float64). */
export class HostMatrixOperator implements MatrixOperator {
  readonly rows: number;
  readonly cols: number;
  private readonly data: MatrixData;

  constructor(matrix: Matrix) {
    this.rows = matrix.rows;
    this.cols = matrix.cols;
    this.data = matrix.data;
  }

  async timesTransposed(x: Float64Array, k: number): Promise<Float64Array> {
    const { rows, cols, data } = this;
    const out = new Float64Array(k * rows);
    // out[t][a] = Σ_j x[t][j]·A[a][j]: dot products over chunks of j, two rows of A at a time.
    for (let j0 = 0; j0 < cols; j0 += HOST_CHUNK) {
      const j1 = Math.min(cols, j0 + HOST_CHUNK);
      let a = 0;
      for (; a + 1 < rows; a += 2) {
        const r0 = a * cols;
        const r1 = r0 + cols;
        for (let t = 0; t < k; t++) {
          const xo = t * cols;
          let s0 = 0;
          let s1 = 0;
          for (let j = j0; j < j1; j++) {
            const xj = x[xo + j]!;
            s0 += xj * data[r0 + j]!;
            s1 += xj * data[r1 + j]!;
          }
          out[t * rows + a]! += s0;
          out[t * rows + a + 1]! += s1;
        }
      }
      for (; a < rows; a++) {
        const r0 = a * cols;
        for (let t = 0; t < k; t++) {
          const xo = t * cols;
          let s0 = 0;
          for (let j = j0; j < j1; j++) s0 += x[xo + j]! * data[r0 + j]!;
          out[t * rows + a]! += s0;
        }
      }
    }
    return out;
  }

  async leftTimes(y: Float64Array, k: number): Promise<Float64Array> {
    const { rows, cols, data } = this;
    const out = new Float64Array(k * cols);
    // out[t] = Σ_a y[t][a]·A[a]: axpys of A's rows, two at a time, over chunks of columns.
    for (let j0 = 0; j0 < cols; j0 += HOST_CHUNK) {
      const j1 = Math.min(cols, j0 + HOST_CHUNK);
      let a = 0;
      for (; a + 1 < rows; a += 2) {
        const r0 = a * cols;
        const r1 = r0 + cols;
        for (let t = 0; t < k; t++) {
          const y0 = y[t * rows + a]!;
          const y1 = y[t * rows + a + 1]!;
          if (y0 === 0 && y1 === 0) continue;
          const o = t * cols;
          for (let j = j0; j < j1; j++) out[o + j]! += y0 * data[r0 + j]! + y1 * data[r1 + j]!;
        }
      }
      for (; a < rows; a++) {
        const r0 = a * cols;
        for (let t = 0; t < k; t++) {
          const y0 = y[t * rows + a]!;
          if (y0 === 0) continue;
          const o = t * cols;
          for (let j = j0; j < j1; j++) out[o + j]! += y0 * data[r0 + j]!;
        }
      }
    }
    return out;
  }

  dispose(): void {}
}
