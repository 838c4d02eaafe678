// The conformance suite on tfjs's pure-JS cpu backend. One backend per file: tfjs's engine is global, and
// vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { describe, expect, it } from 'vitest';
import { expectGatherRowsExact } from './gather-exact.js';
import { createBackend, TensorDataError } from './index.js';
import { expectPagedAttentionExact } from './paged-exact.js';

describeBackendConformance('tfjs-cpu', async () => (await createBackend('cpu')).backend);

describe('tfjs-cpu fused kernels', () => {
  it('paged attention equals attention over the gathered pages, bit for bit', async () => {
    const { backend } = await createBackend('cpu');
    const baseline = backend.numTensors();
    for (const headDim of [8, 6]) await expectPagedAttentionExact(backend, headDim);
    expect(backend.numTensors()).toBe(baseline);
  });

  it('the row gather equals tfjs’s gather bit for bit (float32 and int32, rank-3 table, 2-D ids) and names an index outside the table', async () => {
    const { backend } = await createBackend('cpu');
    await expectGatherRowsExact(backend);
  });
});

describe('addLowRank refuses what it cannot apply, naming the tensor or segment', () => {
  it('shapes that do not fit, a segment past the adapters, rows that do not add up', async () => {
    const { backend } = await createBackend('cpu');
    const baseline = backend.numTensors();
    const zeros = (rows: number, columns: number) => backend.fill([rows, columns], 0);
    const [base, x, aRows, bRows, narrow] = [zeros(3, 5), zeros(3, 4), zeros(6, 4), zeros(6, 5), zeros(6, 4)];
    const refused = (call: () => unknown, message: string) => {
      expect(call).toThrow(TensorDataError);
      expect(call).toThrow(message);
    };
    refused(
      () => backend.addLowRank(base, x, aRows, narrow, [{ rows: 3, start: 0, rank: 2, scale: 1 }]),
      'bRows [W, out] expected; got base [3,5], x [3,4], aRows [6,4], bRows [6,4]',
    );
    refused(
      () =>
        backend.addLowRank(base, x, aRows, bRows, [
          { rows: 1, start: 0, rank: 2, scale: 1 },
          { rows: 2, start: 5, rank: 2, scale: 1 },
        ]),
      'segment 1: rows ≥ 1, rank ≥ 0, start … start + rank − 1 within the 6 adapter rows',
    );
    refused(
      () => backend.addLowRank(base, x, aRows, bRows, [{ rows: 2, start: 0, rank: 2, scale: 1 }]),
      'the segments hold 2 rows, base 3',
    );
    backend.dispose([base, x, aRows, bRows, narrow]);
    expect(backend.numTensors()).toBe(baseline);
  });
});
