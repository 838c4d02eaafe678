// Test support (imported by cpu.test.ts and wasm.test.ts, not by the package): the fused row gather
// (`RrtGatherRows`) against tfjs's own gather on the same tensors, which must agree bit for bit (both copy
// the table's values), and its typed error for an index outside the table.
import type { Backend } from '@rrt/tensor';
import { SeededRandom } from '@rrt/tensor/testing';
import * as tf from '@tensorflow/tfjs-core';
import { expect } from 'vitest';

/** Checks `backend.gather` on axis 0 = `tf.gather`, exactly, on fresh seeded tables and ids. */
export async function expectGatherRowsExact(backend: Backend): Promise<void> {
  const seed = Date.now() % 1_000_000;
  const random = new SeededRandom(seed);
  const baseline = backend.numTensors();
  const ids = (count: number, rows: number) =>
    Int32Array.from({ length: count }, () => Math.floor(random.next() * rows));
  const cases = [
    { table: [37, 16], ids: [9] }, // embedding rows, repeated ids likely
    { table: [37, 16], ids: [1] },
    { table: [11, 3, 4], ids: [2, 5] }, // rows of a rank-3 table, 2-D ids
  ];
  for (const { table: shape, ids: idShape } of cases) {
    for (const dtype of ['float32', 'int32'] as const) {
      const size = shape.reduce((n, d) => n * d, 1);
      const values = random.floats(size, -3, 3);
      const table = backend.fromArray(
        dtype === 'int32' ? Int32Array.from(values, Math.round) : values,
        shape,
        dtype,
      );
      const count = idShape.reduce((n, d) => n * d, 1);
      const index = backend.fromArray(ids(count, shape[0]!), idShape, 'int32');
      const fused = backend.gather(table, index);
      const reference = tf.gather(table as unknown as tf.Tensor, index as unknown as tf.Tensor, 0);
      expect(fused.shape, `seed ${seed}`).toEqual(reference.shape);
      expect(fused.dtype).toBe(dtype);
      expect(Array.from(await backend.read(fused)), `${dtype} ${shape}, seed ${seed}`).toEqual(
        Array.from(await reference.data()),
      );
      backend.dispose([table, index, fused]);
      reference.dispose();
    }
  }
  // tfjs's gather throws a plain Error for an index outside the table; the fused kernel a RangeError.
  const table = backend.fill([4, 2], 1);
  for (const bad of [4, -1]) {
    const index = backend.fromArray(Int32Array.of(0, bad), [2], 'int32');
    expect(() => backend.gather(table, index)).toThrow(RangeError);
    expect(() => backend.gather(table, index)).toThrow(`index ${bad} is outside the table's rows 0…3`);
    backend.dispose(index);
  }
  backend.dispose(table);
  expect(backend.numTensors()).toBe(baseline);
}
