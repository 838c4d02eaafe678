import { createBackend } from '@rrt/backend-tfjs';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { KVCacheError } from './errors.js';
import { createKVCache } from './kv-cache.js';

describe('KVCache', () => {
  let backend: Backend;
  beforeAll(async () => {
    backend = (await createBackend('cpu')).backend;
  });

  /** Keys or values of `length` new positions, `[batch 2, length, kvHeads 3, headDim 4]`, counting from `start`. */
  const block = (length: number, start: number) =>
    backend.fromArray(
      Float32Array.from({ length: 2 * length * 3 * 4 }, (_, i) => start + i),
      [2, length, 3, 4],
    );
  /** Flat index of (batch, position, head) in a `[2, capacity, 3, 4]` buffer. */
  const at = (capacity: number, b: number, position: number, head: number) =>
    ((b * capacity + position) * 3 + head) * 4;

  it('appends in place into [batch, capacity, heads, dim] buffers, trims, accounts bytes and frees everything', async () => {
    const baseline = backend.numTensors();
    const cache = createKVCache(backend, { depths: 2, capacity: 8 });
    const first = block(3, 0);
    const second = block(2, 1000);
    const layer = cache.layers[1]!;
    const afterFirst = layer.updateAndFetch(first, first);
    const { keys, length } = layer.updateAndFetch(second, second);
    expect(keys).toBe(afterFirst.keys); // the same buffer, written in place
    expect(keys.shape).toEqual([2, 8, 3, 4]);
    expect(length).toBe(5);
    expect(layer.offset).toBe(5);
    expect(cache.offset).toBe(0); // depth 0 untouched
    const values = await backend.read(keys);
    // Batch 0, position 0, head 0 is the first row of `first`; position 3 the first row of `second`.
    expect(Array.from(values.subarray(at(8, 0, 0, 0), at(8, 0, 0, 0) + 4))).toEqual([0, 1, 2, 3]);
    expect(Array.from(values.subarray(at(8, 0, 3, 0), at(8, 0, 3, 0) + 4))).toEqual([1000, 1001, 1002, 1003]);
    // Batch 1, position 4, head 2 is `second`'s (1, 1, 2): 1000 + ((1·2 + 1)·3 + 2)·4.
    expect(Array.from(values.subarray(at(8, 1, 4, 2), at(8, 1, 4, 2) + 4))).toEqual([1044, 1045, 1046, 1047]);
    expect(cache.bytes()).toBe(2 * 4 * 2 * 8 * 3 * 4); // the buffers, allocated whole

    layer.trim(2);
    expect(layer.offset).toBe(3);
    const third = block(1, 5000);
    const trimmed = await backend.read(layer.updateAndFetch(third, third).keys);
    expect(Array.from(trimmed.subarray(at(8, 0, 3, 0), at(8, 0, 3, 0) + 4))).toEqual([
      5000, 5001, 5002, 5003,
    ]);
    expect(Array.from(trimmed.subarray(at(8, 1, 3, 0), at(8, 1, 3, 0) + 4))).toEqual([
      5012, 5013, 5014, 5015,
    ]);
    expect(Array.from(trimmed.subarray(at(8, 0, 2, 0), at(8, 0, 2, 0) + 4))).toEqual([24, 25, 26, 27]); // kept

    backend.dispose([first, second, third]);
    cache.dispose();
    expect(cache.bytes()).toBe(0);
    expect(backend.numTensors()).toBe(baseline);
  });

  it('refuses positions beyond its capacity with a typed error and keeps its contents', () => {
    const baseline = backend.numTensors();
    const cache = createKVCache(backend, { depths: 1, capacity: 4 });
    const layer = cache.layers[0]!;
    const three = block(3, 0);
    const two = block(2, 0);
    layer.updateAndFetch(three, three);
    expect(() => layer.updateAndFetch(two, two)).toThrow(KVCacheError);
    expect(() => layer.updateAndFetch(two, two)).toThrow(/3 positions cached \+ 2 new > capacity 4/);
    expect(layer.offset).toBe(3);
    backend.dispose([three, two]);
    cache.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });
});
