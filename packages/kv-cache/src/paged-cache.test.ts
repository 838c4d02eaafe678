import { createBackend } from '@rrt/backend-tfjs';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { KVCacheError, KVCapacityError } from './errors.js';
import { createPagedKVCache, type PagedSequence } from './paged-cache.js';

/** A tiny seeded uniform stream (mulberry32), so a failing lifecycle trace can be replayed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('PagedKVCache', () => {
  let backend: Backend;
  beforeAll(async () => {
    backend = (await createBackend('cpu')).backend;
  });
  const kvHeads = 2;
  const headDim = 3;
  /** `[1, length, 2, 3]` rows counting from `start`. */
  const rows = (length: number, start: number) =>
    backend.fromArray(
      Float32Array.from({ length: length * kvHeads * headDim }, (_, i) => start + i),
      [1, length, kvHeads, headDim],
    );

  it('keeps each (sequence, depth) apart across pages, accounts bytes, refuses what does not fit and frees', async () => {
    const baseline = backend.numTensors();
    const pageBytes = 2 * 4 * 4 * 2 * kvHeads * headDim; // 4 depths, pages of 2 positions
    const cache = createPagedKVCache(backend, {
      depths: 4,
      blockSize: 2,
      kvHeads,
      headDim,
      pageSize: 2,
      bytes: 3 * pageBytes + 5,
    });
    expect(cache.pages).toBe(3);
    expect(cache.pageBytes).toBe(pageBytes);
    const a = cache.open();
    const b = cache.open();
    const x = rows(3, 0);
    const y = rows(1, 100);
    const z = rows(3, 1000);
    backend.tidy(() => {
      a.layer(0).updateAndFetch(x, x); // a: positions 0…2 at depth 0 (2 pages)
      b.layer(2).updateAndFetch(y, y); // b: position 0 at depth 2 (loop 1): its own page
      const fetched = a.layer(2).updateAndFetch(z, z); // a at depth 2 (loop 1), same positions as depth 0
      expect(fetched.length).toBe(3);
      expect(fetched.keys.shape).toEqual([1, 4, kvHeads, headDim]);
    });
    expect([a.bytes(), b.bytes()]).toEqual([2 * pageBytes, pageBytes]);
    expect([cache.usedBytes(), cache.freeBytes()]).toEqual([3 * pageBytes, 0]);
    const read = async (depth: number, sequence: PagedSequence) => {
      const empty = rows(0, 0);
      const kv = backend.tidy(() => sequence.layer(depth).updateAndFetch(empty, empty).keys);
      backend.dispose(empty);
      const values = Array.from(await backend.read(kv));
      backend.dispose(kv);
      return values;
    };
    // Loop 1 did not overwrite loop 0: depth 0 still holds x, depth 2 holds z.
    expect((await read(0, a)).slice(0, 18)).toEqual(Array.from({ length: 18 }, (_, i) => i));
    expect((await read(2, a)).slice(0, 18)).toEqual(Array.from({ length: 18 }, (_, i) => 1000 + i));
    expect((await read(2, b)).slice(0, 6)).toEqual(Array.from({ length: 6 }, (_, i) => 100 + i));
    expect(a.length(0)).toBe(3);
    expect(a.length(1)).toBe(0);

    // A fourth page does not exist: a typed refusal, and nothing taken.
    const c = cache.open();
    expect(() => c.reserve(1)).toThrow(KVCapacityError);
    expect(() => a.reserve(5)).toThrow(/1 more pages asked for, 0 of 3 free/);
    expect(a.blockTable.length).toBe(2);
    c.free();
    b.free();
    expect(cache.freePageCount).toBe(1);
    a.reserve(5);
    expect(a.blockTable.length).toBe(3);
    a.free();
    a.free();
    expect(() => a.layer(0)).toThrow(KVCacheError);
    expect([cache.usedBytes(), cache.openSequences]).toEqual([0, 0]);
    backend.dispose([x, y, z]);
    cache.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });

  it('recursive sharing stores loop 0 only: later loops read its entries and write nothing', async () => {
    const baseline = backend.numTensors();
    const cache = createPagedKVCache(backend, {
      depths: 6,
      blockSize: 2,
      kvHeads,
      headDim,
      pageSize: 4,
      bytes: 1 << 16,
      sharing: 'recursive',
    });
    expect(cache.pageBytes).toBe(2 * 4 * 2 * 4 * kvHeads * headDim); // 2 stored depths, not 6
    const sequence = cache.open();
    const loop0 = rows(2, 0);
    const loop2 = rows(2, 500);
    const keys = backend.tidy(() => {
      sequence.layer(1).updateAndFetch(loop0, loop0);
      const shared = sequence.layer(5).updateAndFetch(loop2, loop2); // depth 5 = loop 2, block layer 1
      expect(shared.length).toBe(2);
      return shared.keys;
    });
    expect(Array.from(await backend.read(keys)).slice(0, 12)).toEqual(
      Array.from({ length: 12 }, (_, i) => i),
    );
    expect(sequence.length(5)).toBe(2);
    backend.dispose([keys, loop0, loop2]);
    sequence.free();
    cache.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });

  it('after 1,000 random request lifecycles (finish, cancel, capacity refusal) no page and no tensor is left', () => {
    const baseline = backend.numTensors();
    const random = seeded(7);
    const pageSize = 4;
    const cache = createPagedKVCache(backend, {
      depths: 4,
      blockSize: 2,
      kvHeads,
      headDim,
      pageSize,
      bytes: 12 * 2 * 4 * 4 * pageSize * kvHeads * headDim, // 12 pages
    });
    const afterPools = backend.numTensors();
    const chunk = rows(2, 0);
    const live: { sequence: PagedSequence; total: number; fed: number }[] = [];
    const outcomes = { finished: 0, cancelled: 0, refused: 0 };
    for (let request = 0; request < 1000; request++) {
      const total = 1 + Math.floor(random() * 20); // prompt + output positions
      const sequence = cache.open();
      try {
        sequence.reserve(total);
        live.push({ sequence, total, fed: 0 });
      } catch (error) {
        expect(error).toBeInstanceOf(KVCapacityError);
        sequence.free();
        outcomes.refused++;
      }
      // Advance every live request by up to 2 positions at a random depth subset; end some.
      for (let i = live.length - 1; i >= 0; i--) {
        const entry = live[i]!;
        const step = Math.min(2, entry.total - entry.fed);
        if (step > 0) {
          const part = step === 2 ? chunk : backend.slice(chunk, [0, 0, 0, 0], [1, 1, -1, -1]);
          backend.tidy(() => {
            for (let depth = 0; depth < 4; depth++) {
              if (entry.sequence.length(depth) === entry.fed)
                entry.sequence.layer(depth).updateAndFetch(part, part);
            }
          });
          if (part !== chunk) backend.dispose(part);
          entry.fed += step;
        }
        const cancel = random() < 0.1;
        if (cancel || entry.fed === entry.total) {
          entry.sequence.free();
          live.splice(i, 1);
          outcomes[cancel && entry.fed < entry.total ? 'cancelled' : 'finished']++;
        }
      }
      expect(backend.numTensors()).toBe(afterPools + 1); // the pools and `chunk`, nothing else
    }
    for (const entry of live) entry.sequence.free();
    expect(outcomes.finished).toBeGreaterThan(50);
    expect(outcomes.cancelled).toBeGreaterThan(50);
    expect(outcomes.refused).toBeGreaterThan(50);
    expect([cache.freePageCount, cache.usedBytes(), cache.openSequences]).toEqual([12, 0, 0]);
    backend.dispose(chunk);
    cache.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });
});
