// The conformance suite on tfjs's pure-JS cpu backend. One backend per file: tfjs's engine is global, and
// vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { describe, expect, it } from 'vitest';
import { createBackend } from './index.js';
import { expectGatherRowsExact } from './gather-exact.js';
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
