/**
 * What an exit rule reads from a loop's logits: each row's argmax and max softmax probability. One
 * definition for the engine's readback and for calibration's profile, so that a τ picked on a profile
 * gives the same exits when the engine runs it.
 *
 * @module
 */
import { argmax } from '@rrt/core';
import type { Backend, Tensor } from '@rrt/tensor';

/** Per row of a readout: its logits as read back, argmax and max softmax probability. */
export interface RowConfidences {
  /** `[rows · vocab]`: the logits, float32 as the backend computed them. */
  logits: Float32Array;
  /** Each row's first maximal logit. */
  argmax: Int32Array;
  /** Each row's largest softmax probability (the backend's float32 softmax). */
  maxProbability: Float32Array;
}

/**
 * Reads `logits: [..., vocab]` back with each row's argmax and max softmax probability. Leaves `logits`
 * alive (the caller owns it).
 *
 * NOTE: the probability comes from the backend's softmax (one fused op on wasm), not from float64 sums in
 * JS: those cost ≈ 17 ns a logit, ≈ 70 µs for 8 rows of 512, and the readback was a fifth of a depth-wise
 * step's CPU time on the early-exit-trained relaxed stories260K model, paid at every loop under confidence
 * exits. Each row's softmax depends on that row alone, so a position gets the same value in a profile's
 * window as in a serving step's batch.
 */
export async function rowConfidences(backend: Backend, logits: Tensor): Promise<RowConfidences> {
  const vocab = logits.shape[logits.shape.length - 1]!;
  const maxima = backend.tidy(() => backend.max(backend.softmax(backend.reshape(logits, [-1, vocab]), 1), 1));
  try {
    const values = (await backend.read(logits)) as Float32Array;
    const maxProbability = Float32Array.from((await backend.read(maxima)) as Float32Array);
    const rows = values.length / vocab;
    const best = new Int32Array(rows);
    for (let row = 0; row < rows; row++) best[row] = argmax(values.subarray(row * vocab, (row + 1) * vocab));
    return { logits: values, argmax: best, maxProbability };
  } finally {
    backend.dispose(maxima);
  }
}
