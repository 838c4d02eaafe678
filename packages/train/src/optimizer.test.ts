import { createBackend } from '@rrt/backend-tfjs';
import { describe, expect, it } from 'vitest';
import { AdamW } from './optimizer.js';
import { TrainRandom } from './random.js';
import { learningRateAt } from './schedule.js';
import type { Parameter } from './trainable.js';

describe('learningRateAt', () => {
  it('warms up linearly, then decays along a cosine to the floor', () => {
    const options = { learningRate: 1, warmupSteps: 4, totalSteps: 14, minLearningRateRatio: 0.1 };
    expect([1, 2, 4].map((step) => learningRateAt(step, options))).toEqual([0.25, 0.5, 1]);
    expect(learningRateAt(9, options)).toBeCloseTo(0.55, 12);
    expect(learningRateAt(14, options)).toBeCloseTo(0.1, 12);
  });
});

describe.each(['cpu', 'wasm'] as const)('AdamW on %s', (kind) => {
  it('matches a float64 AdamW with global-norm clipping and decoupled decay over three steps', async () => {
    const { backend } = await createBackend(kind);
    const baseline = backend.numTensors();
    const random = new TrainRandom(1);
    const shapes = { w: [3, 4], n: [4] } as const;
    const host = new Map<string, { p: Float64Array; m: Float64Array; v: Float64Array }>();
    const parameters: Parameter[] = Object.entries(shapes).map(([name, shape]) => {
      const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => random.normal());
      host.set(name, {
        p: Float64Array.from(values),
        m: new Float64Array(values.length),
        v: new Float64Array(values.length),
      });
      const tensor = backend.fromArray(values, shape);
      const variable = backend.variable(tensor, name);
      backend.dispose(tensor);
      return { name, variable, layout: 'plain', kind: name === 'w' ? 'matrix' : 'norm' };
    });
    const [beta1, beta2, epsilon, weightDecay, maxGradNorm] = [0.9, 0.95, 1e-8, 0.1, 1.5];
    const optimizer = new AdamW(backend, parameters, { beta1, beta2, epsilon, weightDecay, maxGradNorm });
    for (let step = 1; step <= 3; step++) {
      const lr = 0.01 * step;
      // Gradients large enough that clipping acts on steps 1 and 3 (norm ≈ 4 and 3·4).
      const grads = parameters.map(({ variable }) =>
        Float32Array.from(
          { length: variable.shape.reduce((a, b) => a * b, 1) },
          () => (step === 2 ? 0.1 : step) * random.normal(),
        ),
      );
      const norm = Math.sqrt(grads.reduce((sum, g) => sum + g.reduce((s, x) => s + x * x, 0), 0));
      const clip = maxGradNorm / Math.max(norm, maxGradNorm);
      const tensors = grads.map((g, i) => backend.fromArray(g, parameters[i]!.variable.shape));
      const measured = optimizer.step(tensors, lr, step);
      expect(Math.abs((await backend.read(measured))[0]! - norm) / norm).toBeLessThan(1e-6);
      backend.dispose([measured, ...tensors]);
      parameters.forEach((parameter, i) => {
        const state = host.get(parameter.name)!;
        const decay = parameter.kind === 'matrix' ? weightDecay : 0;
        grads[i]!.forEach((raw, j) => {
          const g = raw * clip;
          state.m[j] = beta1 * state.m[j]! + (1 - beta1) * g;
          state.v[j] = beta2 * state.v[j]! + (1 - beta2) * g * g;
          const update =
            state.m[j]! / (1 - beta1 ** step) / (Math.sqrt(state.v[j]! / (1 - beta2 ** step)) + epsilon);
          state.p[j] = state.p[j]! * (1 - lr * decay) - lr * update;
        });
      });
    }
    for (const parameter of parameters) {
      const values = await backend.read(parameter.variable);
      const expected = host.get(parameter.name)!.p;
      // Observed: ≤ 1.6e-7 absolute on cpu and wasm (float32 arithmetic on values of order 1).
      const worst = Math.max(...Array.from(values, (value, j) => Math.abs(value - expected[j]!)));
      expect(worst).toBeLessThan(1e-6);
    }
    optimizer.dispose();
    backend.dispose(parameters.map((p) => p.variable));
    expect(backend.numTensors()).toBe(baseline);
  });
});
