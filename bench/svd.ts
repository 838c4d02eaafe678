/**
 * Benchmark of `@rrt/lora-svd`: exact vs randomized truncated SVD of a TinyLlama-sized residual
 * (2048 × 5632), time and error relative to the Eckart–Young optimum. Not a test.
 *
 *   node --import tsx bench/svd.ts [--rows 2048] [--cols 5632] [--ranks 64,256] [--powers 2,4] [--skip-exact]
 *
 * Two matrices: a "decaying" one, `X·diag(σ)·Y + noise` with `σᵢ ∝ i^−0.5` (the slowly decaying spectrum of
 * a weight difference), and a Gaussian one (flat spectrum, the hardest case for a randomized method). The
 * exact SVD (float64, host) gives the spectrum, hence the optimum `√(Σ_{i>r} σᵢ²)`; each method's error
 * `‖A − U_r·Σ_r·V_rᵀ‖_F` is measured directly (products on the wasm backend, in float32). The randomized SVD
 * runs its products on tfjs's wasm backend (`createBackend('wasm')`, SIMD, one thread) with p = 10, q = 2.
 *
 * NOTE: imports the packages' sources (run through tsx), so no build is needed.
 */
import { parseArgs } from 'node:util';
import { createBackend } from '../packages/backend-tfjs/src/index.js';
import {
  DEFAULT_POWER_ITERATIONS,
  type Matrix,
  SeededRandom,
  type TruncatedSvd,
  truncatedSvd,
} from '../packages/lora-svd/src/index.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '2048' },
    cols: { type: 'string', default: '5632' },
    ranks: { type: 'string', default: '64,256' },
    powers: { type: 'string', default: String(DEFAULT_POWER_ITERATIONS) },
    'skip-exact': { type: 'boolean', default: false },
  },
});
const rows = Number(values.rows);
const cols = Number(values.cols);
const ranks = values.ranks.split(',').map(Number);
const powers = values.powers.split(',').map(Number);
const maxRank = Math.max(...ranks);

const { backend, reason } = await createBackend('wasm');
type BenchTensor = ReturnType<typeof backend.fromArray>;
console.log(`backend: ${reason}`);

/** `X·diag(σ)·Y/√(rows·cols)^½ + noise`, σᵢ = (i+1)^−0.5, built on the backend. */
async function decayingMatrix(seed: number): Promise<Matrix<Float32Array>> {
  const rng = new SeededRandom(seed);
  const k = Math.min(rows, cols);
  const x = rng.fillGaussian(new Float32Array(rows * k));
  const y = rng.fillGaussian(new Float32Array(k * cols));
  // Scale column i of X by σᵢ/√rows and Y by 1/√cols: X·diag(σ)·Y then has singular values ≈ σᵢ, spread.
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < k; j++) x[i * k + j]! *= (j + 1) ** -0.5 / Math.sqrt(rows);
  }
  for (let i = 0; i < y.length; i++) y[i]! /= Math.sqrt(cols);
  const xt = backend.fromArray(x, [rows, k]);
  const yt = backend.fromArray(y, [k, cols]);
  const product = backend.matmul(xt, yt);
  const data = (await backend.read(product)) as Float32Array;
  backend.dispose([xt, yt, product]);
  const noise = 0.01 / Math.sqrt(Math.max(rows, cols));
  for (let i = 0; i < data.length; i++) data[i]! += noise * rng.gaussian();
  return { rows, cols, data };
}

function gaussianMatrix(seed: number): Matrix<Float32Array> {
  const rng = new SeededRandom(seed);
  const data = rng.fillGaussian(new Float32Array(rows * cols));
  for (let i = 0; i < data.length; i++) data[i]! /= Math.sqrt(cols);
  return { rows, cols, data };
}

/** `‖A − U_r·diag(S_r)·V_rᵀ‖_F` on the backend (float32 products, float64 sum). */
async function truncationError(
  a: BenchTensor,
  svd: TruncatedSvd,
  r: number,
  be: typeof backend,
): Promise<number> {
  const us = new Float32Array(rows * r);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < r; j++) us[i * r + j] = svd.U.data[i * svd.U.cols + j]! * svd.S[j]!;
  }
  const v = new Float32Array(cols * r);
  for (let i = 0; i < cols; i++) for (let j = 0; j < r; j++) v[i * r + j] = svd.V.data[i * svd.V.cols + j]!;
  const ut = be.fromArray(us, [rows, r]);
  const vt = be.fromArray(v, [cols, r]);
  const approx = be.matmul(ut, vt, { transposeB: true });
  const diff = be.sub(a, approx);
  const values = await be.read(diff);
  be.dispose([ut, vt, approx, diff]);
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]! * values[i]!;
  return Math.sqrt(s);
}

function tail(spectrum: Float64Array, r: number): number {
  let s = 0;
  for (let i = spectrum.length - 1; i >= r; i--) s += spectrum[i]! * spectrum[i]!;
  return Math.sqrt(s);
}

interface Row {
  matrix: string;
  rank: number;
  method: string;
  seconds: number;
  error: number;
  optimum: number | null;
}
const table: Row[] = [];
const seconds = (t0: number): number => (performance.now() - t0) / 1000;

for (const [name, make] of [
  ['decaying σᵢ∝i^-0.5', () => decayingMatrix(1)],
  ['gaussian', async () => gaussianMatrix(2)],
] as const) {
  const matrix = await make();
  const a = backend.fromArray(matrix.data, [rows, cols]);
  let spectrum: Float64Array | null = null;
  if (!values['skip-exact']) {
    const t0 = performance.now();
    const exact = await truncatedSvd(matrix, { rank: maxRank, method: 'exact' });
    const time = seconds(t0);
    spectrum = exact.spectrum!;
    for (const r of ranks) {
      table.push({
        matrix: name,
        rank: r,
        method: `exact (float64 host; one run, ${maxRank} vectors)`,
        seconds: time,
        error: await truncationError(a, exact, r, backend),
        optimum: tail(spectrum, r),
      });
    }
    console.log(
      `${name}: exact SVD ${time.toFixed(1)} s; σ₁ = ${spectrum[0]!.toFixed(4)}, σ_min = ${spectrum.at(-1)!.toExponential(3)}`,
    );
  }
  for (const q of powers) {
    for (const r of ranks) {
      const baseline = backend.numTensors();
      const t0 = performance.now();
      const randomized = await truncatedSvd(matrix, {
        rank: r,
        method: 'randomized',
        backend,
        seed: 7,
        powerIterations: q,
      });
      const time = seconds(t0);
      if (backend.numTensors() !== baseline) throw new Error('tensor leak in truncatedSvd');
      table.push({
        matrix: name,
        rank: r,
        method: `randomized (wasm, p=10, q=${q})`,
        seconds: time,
        error: await truncationError(a, randomized, r, backend),
        optimum: spectrum ? tail(spectrum, r) : null,
      });
    }
  }
  {
    const r = Math.min(...ranks);
    const t0 = performance.now();
    const host = await truncatedSvd(matrix, { rank: r, method: 'randomized', seed: 7 });
    const time = seconds(t0);
    table.push({
      matrix: name,
      rank: r,
      method: `randomized (host float64, p=10, q=${DEFAULT_POWER_ITERATIONS})`,
      seconds: time,
      error: await truncationError(a, host, r, backend),
      optimum: spectrum ? tail(spectrum, r) : null,
    });
  }
  backend.dispose(a);
}

console.log(`\n${rows} × ${cols}\n`);
console.log(
  '| matrix | rank | method | time (s) | ‖A − Â_r‖_F | optimum √Σ_{i>r}σᵢ² | error / optimum − 1 |',
);
console.log('|---|---:|---|---:|---:|---:|---:|');
for (const row of table) {
  const excess =
    row.optimum === null
      ? 'n/a'
      : row.optimum < 1e-6 * Math.sqrt(rows * cols)
        ? '(full rank)'
        : `${((row.error / row.optimum - 1) * 100).toFixed(3)} %`;
  console.log(
    `| ${row.matrix} | ${row.rank} | ${row.method} | ${row.seconds.toFixed(2)} | ${row.error.toFixed(5)} | ${
      row.optimum === null ? 'n/a' : row.optimum.toFixed(5)
    } | ${excess} |`,
  );
}
