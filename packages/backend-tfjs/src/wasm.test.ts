// The conformance suite on tfjs's wasm backend (SIMD, one thread). One backend per file: tfjs's engine is
// global, and vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { createBackend } from './index.js';

describeBackendConformance('tfjs-wasm', async () => (await createBackend('wasm')).backend);
