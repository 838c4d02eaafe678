// The conformance suite on tfjs's wasm backend (SIMD, one thread). One backend per file: tfjs's engine is
// global, and vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { describe, expect, it } from 'vitest';
import { createBackend } from './index.js';

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
});
