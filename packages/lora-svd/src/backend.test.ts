// The randomized SVD with its products on a tensor backend (tfjs's cpu backend: the one available
// everywhere). One backend per file: tfjs's engine is global and vitest runs each file in its own process.
import { createBackend } from '@rrt/backend-tfjs';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { loraFactors } from './lora.js';
import { randomizedSvd } from './randomized.js';
import { truncatedSvd } from './truncated.js';
import {
  frobenius,
  frobeniusDistance,
  matmul,
  matrixWithSpectrum,
  orthonormalityError,
  reconstruct,
  tailNorm,
  TestRandom,
} from './test-support/reference.js';

let backend: Backend;

beforeAll(async () => {
  backend = (await createBackend('cpu')).backend;
});

/** A float32 matrix with spectrum σᵢ = (i+1)^−decay, and that spectrum as its float64 reference. */
function decaying(rows: number, cols: number, decay: number, seed: number) {
  const sigma = Array.from({ length: Math.min(rows, cols) }, (_, i) => (i + 1) ** -decay);
  const a = matrixWithSpectrum(rows, cols, sigma, new TestRandom(seed));
  return { matrix: { rows, cols, data: Float32Array.from(a.data) }, sigma };
}

describe('randomized SVD on a backend (tfjs cpu)', () => {
  it('is within 1 percent of the Eckart–Young optimum, agrees with the host path, and leaks no tensor', async () => {
    for (const [rows, cols] of [
      [300, 500],
      [500, 300],
    ] as const) {
      const { matrix, sigma } = decaying(rows, cols, 1, rows);
      const baseline = backend.numTensors();
      const onBackend = await truncatedSvd(matrix, { rank: 20, backend, seed: 9 });
      expect(backend.numTensors()).toBe(baseline);
      expect(onBackend.method).toBe('randomized');
      const error = frobeniusDistance(reconstruct(onBackend.U, onBackend.S, onBackend.V), matrix);
      expect(error).toBeLessThan(1.01 * tailNorm(sigma, 20));
      expect(orthonormalityError(onBackend.U)).toBeLessThan(1e-6);
      expect(orthonormalityError(onBackend.V)).toBeLessThan(1e-6);
      // Same seed on the host (float64 products): the same sketch, so the same values up to float32 rounding.
      const onHost = await truncatedSvd(matrix, { rank: 20, seed: 9 });
      for (let i = 0; i < 20; i++)
        expect(Math.abs(onBackend.S[i]! - onHost.S[i]!)).toBeLessThan(1e-5 * sigma[0]!);
      expect(Math.abs(onBackend.discardedEnergy - onHost.discardedEnergy)).toBeLessThan(
        1e-5 * onHost.totalEnergy,
      );
    }
  });

  it('loraFactors and the energy search leak no tensor either', async () => {
    const { matrix, sigma } = decaying(280, 300, 1.5, 3);
    const baseline = backend.numTensors();
    const factors = await loraFactors(matrix, { rank: 16, alpha: 32, backend, method: 'randomized' });
    expect(backend.numTensors()).toBe(baseline);
    expect(factors.method).toBe('randomized');
    expect(Math.sqrt(factors.discardedEnergy)).toBeLessThan(1.01 * tailNorm(sigma, 16));
    // Measured rather than self-reported: ‖R − scale·B·A‖_F in float64 from the float32 factors.
    const scaledB = {
      rows: 280,
      cols: factors.rank,
      data: Float64Array.from(factors.B, (v) => factors.scale * v),
    };
    const a = { rows: factors.rank, cols: 300, data: Float64Array.from(factors.A) };
    const measured = frobeniusDistance(matmul(scaledB, a), matrix);
    expect(measured).toBeLessThan(1.01 * tailNorm(sigma, 16));
    // The self-report agrees with it to float32 accuracy (relative to ‖R‖²_F).
    const total = frobenius(matrix) ** 2;
    expect(Math.abs(factors.discardedEnergy - measured ** 2)).toBeLessThan(1e-5 * total);

    const byEnergy = await truncatedSvd(matrix, { energy: 0.95, backend, method: 'randomized' });
    expect(backend.numTensors()).toBe(baseline);
    expect(1 - byEnergy.discardedEnergy / byEnergy.totalEnergy).toBeGreaterThanOrEqual(0.95);
    // Measured: the energy U·diag(S)·Vᵀ leaves out is at most 5 % of ‖R‖²_F, up to float32 products (1e-5).
    const left = frobeniusDistance(reconstruct(byEnergy.U, byEnergy.S, byEnergy.V), matrix) ** 2;
    expect(left / total).toBeLessThanOrEqual(0.05 + 1e-5);
    expect(Math.abs(byEnergy.discardedEnergy - left)).toBeLessThan(1e-5 * total);
  });

  it('disposes the uploaded matrix when a product fails midway', async () => {
    const { matrix } = decaying(60, 80, 1, 4);
    let calls = 0;
    // The backend with a matmul that fails on its third call (inside the power iterations).
    const failing = new Proxy(backend, {
      get(target, property, receiver) {
        if (property === 'matmul') {
          return (...args: Parameters<Backend['matmul']>) => {
            if (++calls === 3) throw new Error('injected matmul failure');
            return target.matmul(...args);
          };
        }
        const value = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const baseline = backend.numTensors();
    await expect(randomizedSvd(matrix, 5, { backend: failing })).rejects.toThrow(/injected/);
    expect(calls).toBe(3);
    expect(backend.numTensors()).toBe(baseline);
  });
});
