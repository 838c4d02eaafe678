/**
 * The readback every exit rule reads (`rowConfidences`): each row's argmax and max softmax probability,
 * against a float64 reference, and the same bits for a row alone as in any batch, on cpu and wasm. The
 * engine reads steps of a few rows and calibration whole windows; a τ picked on a profile reproduces its
 * exits in the engine only if a row's value does not depend on the rows beside it.
 */
import { createBackend } from '@rrt/backend-tfjs';
import { seededRandom } from '@rrt/core';
import { describe, expect, it } from 'vitest';
import { rowConfidences } from '../src/confidence.js';

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`rowConfidences (${kind})`, () => {
    it('argmax and max probability per row, alone or in a batch of any size', async () => {
      const { backend } = await createBackend(kind);
      const baseline = backend.numTensors();
      const seed = Math.floor(Math.random() * 1e6);
      const random = seededRandom(seed);
      const [rows, vocab] = [37, 512];
      // Logits like a readout's: spread of ±8, a few rows with one logit far above the rest.
      const values = Float32Array.from({ length: rows * vocab }, () => (random() - 0.5) * 16);
      for (let row = 0; row < rows; row += 5) values[row * vocab + Math.floor(random() * vocab)] = 30;
      const logits = backend.fromArray(values, [1, rows, vocab]);
      const batched = await rowConfidences(backend, logits);
      expect(Array.from(batched.logits)).toEqual(Array.from(values));
      let worst = 0;
      for (let row = 0; row < rows; row++) {
        const own = values.subarray(row * vocab, (row + 1) * vocab);
        const max = Math.max(...own);
        const total = own.reduce((sum, v) => sum + Math.exp(v - max), 0);
        expect(batched.argmax[row], `row ${row}, seed ${seed}`).toBe(own.indexOf(max));
        worst = Math.max(worst, Math.abs(batched.maxProbability[row]! - 1 / total));
        const alone = backend.fromArray(own, [1, vocab]);
        const single = await rowConfidences(backend, alone);
        backend.dispose(alone);
        expect(single.argmax[0]).toBe(batched.argmax[row]);
        expect(single.maxProbability[0], `row ${row} alone, seed ${seed}`).toBe(batched.maxProbability[row]);
      }
      // Observed ≤ 3e-8 (float32 softmax against float64 sums); bound 1e-7.
      expect(worst, `seed ${seed}`).toBeLessThan(1e-7);
      backend.dispose(logits);
      expect(backend.numTensors()).toBe(baseline);
    });
  });
}
