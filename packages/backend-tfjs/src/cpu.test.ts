// The conformance suite on tfjs's pure-JS cpu backend. One backend per file: tfjs's engine is global, and
// vitest runs each file in its own process.
import { describeBackendConformance } from '@rrt/tensor/testing';
import { createBackend } from './index.js';

describeBackendConformance('tfjs-cpu', async () => (await createBackend('cpu')).backend);
