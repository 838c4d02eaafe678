import { createBackend } from '@rrt/backend-tfjs';
import type { Command } from '../cli-io.js';
import { backendFlag, parseFlags } from '../flags.js';

export const backendCommand: Command = {
  name: 'backend',
  summary: 'pick a tensor backend, run a matmul on it, and say which one ran and why',
  help: `rrt backend [--backend auto|node-gpu|node|wasm|webgpu|cpu] [--json]

Creates the backend (auto: native tfjs-node-gpu > tfjs-node > wasm > cpu), multiplies a 64×64 matrix
by its transpose, checks the result against plain JavaScript, and reports the backend and the reason.

Example:
  rrt backend --backend auto`,
  async run(args, io) {
    const { values } = parseFlags(args, {
      options: { backend: { type: 'string', default: 'auto' }, json: { type: 'boolean', default: false } },
    });
    const started = performance.now();
    const { backend, kind, reason } = await createBackend(backendFlag(values.backend));
    const size = 64;
    const data = Float32Array.from({ length: size * size }, (_, i) => Math.sin(i));
    const a = backend.fromArray(data, [size, size]);
    const product = backend.matmul(a, a, { transposeB: true });
    const result = (await backend.read(product)) as Float32Array;
    backend.dispose([a, product]);
    let maxError = 0;
    for (let row = 0; row < size; row++) {
      for (let column = 0; column < size; column++) {
        let expected = 0;
        for (let k = 0; k < size; k++) expected += data[row * size + k]! * data[column * size + k]!;
        maxError = Math.max(maxError, Math.abs(expected - result[row * size + column]!));
      }
    }
    const millis = performance.now() - started;
    if (values.json) {
      io.stdout(
        `${JSON.stringify({ backend: kind, name: backend.name, reason, matmul: { size, maxError }, millis })}\n`,
      );
    } else {
      io.stdout(`backend: ${kind} (${backend.name})\n`);
      io.stdout(`why:     ${reason}\n`);
      io.stdout(
        `matmul:  ${size}×${size} · its transpose, max |error| vs plain JS = ${maxError.toExponential(2)}\n`,
      );
    }
    return maxError < 1e-3 ? 0 : 1;
  },
};
