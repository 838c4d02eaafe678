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

  const block = (length: number, start: number) =>
    backend.fromArray(
      Float32Array.from({ length: 2 * 3 * length * 4 }, (_, i) => start + i),
      [2, 3, length, 4],
    );

  it('appends along the sequence axis, trims, accounts bytes and frees everything', async () => {
    const baseline = backend.numTensors();
    const cache = createKVCache(backend, { depths: 2, capacity: 8 });
    const first = block(3, 0);
    const second = block(2, 1000);
    const layer = cache.layers[1]!;
    layer.updateAndFetch(first, first);
    const { keys } = layer.updateAndFetch(second, second);
    expect(keys.shape).toEqual([2, 3, 5, 4]);
    expect(layer.offset).toBe(5);
    expect(cache.offset).toBe(0); // depth 0 untouched
    // Position 3 of batch 0, head 0 is the first row of `second`.
    const values = await backend.read(keys);
    expect(Array.from(values.subarray(3 * 4, 4 * 4))).toEqual([1000, 1001, 1002, 1003]);
    expect(cache.bytes()).toBe(2 * 4 * 2 * 3 * 5 * 4);

    layer.trim(2);
    expect(layer.offset).toBe(3);
    const third = block(1, 5000);
    const trimmed = await backend.read(layer.updateAndFetch(third, third).keys);
    expect(Array.from(trimmed.subarray(3 * 4, 4 * 4))).toEqual([5000, 5001, 5002, 5003]);

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
