// The conformance suite on tfjs's wasm backend (SIMD, one thread). One backend per file: tfjs's engine is
// global, and vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { describe, expect, it } from 'vitest';
import { createBackend } from './index.js';
import { expectGatherRowsExact } from './gather-exact.js';
import { expectPagedAttentionExact } from './paged-exact.js';

describeBackendConformance('tfjs-wasm', async () => (await createBackend('wasm')).backend);

describe('tfjs-wasm fused kernels', () => {
  it('run attention in the SIMD module on tfjs-wasm’s heap (not the JS fallback)', async () => {
    const { backend } = await createBackend('wasm');
    const q = backend.fill([1, 1, 2, 8], 0.5);
    const k = backend.fill([1, 3, 1, 8], 0.25);
    const out = backend.attention(q, k, k, { scale: 1, queryOffset: 2 });
    expect(backend.usesWasmSimd).toBe(true);
    expect(Array.from(await backend.read(out))).toEqual(new Array(16).fill(0.25));
    backend.dispose([q, k, out]);
  });

  it('paged attention (SIMD, and the JS loop for a head size not a multiple of 4) equals attention over the gathered pages, bit for bit', async () => {
    const { backend } = await createBackend('wasm');
    const baseline = backend.numTensors();
    for (const headDim of [8, 6]) await expectPagedAttentionExact(backend, headDim);
    expect(backend.usesWasmSimd).toBe(true);
    expect(backend.numTensors()).toBe(baseline);
  });

  it('the row gather equals tfjs’s gather bit for bit (float32 and int32, rank-3 table, 2-D ids) and names an index outside the table', async () => {
    const { backend } = await createBackend('wasm');
    await expectGatherRowsExact(backend);
  });
});
