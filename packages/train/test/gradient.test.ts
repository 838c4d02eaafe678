import { createBackend } from '@rrt/backend-tfjs';
import { loadModel, readConfig } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ReferenceConfig } from '../../core/test/reference.js';
import {
  defaultLossWeights,
  lossAndGradients,
  type TokenBatch,
  TrainableModel,
  TrainRandom,
} from '../src/index.js';
import { type Float64Parameters, referenceTrainingLoss, tinyVocab, tinyModelsFixture } from './support.js';

/** `[rows, cols]` row-major → its transpose. */
function transposed(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

/** `[batch·length·vocab]` → `[batch][length][vocab]` as float64 numbers. */
function nested(values: Float32Array, batch: number, length: number, vocab: number): number[][][] {
  return Array.from({ length: batch }, (_, s) =>
    Array.from({ length }, (_, t) =>
      Array.from(values.subarray((s * length + t) * vocab, (s * length + t + 1) * vocab)),
    ),
  );
}

const fixture = tinyModelsFixture('gradient');

describe.each(['cpu', 'wasm'] as const)('%s', (kind) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = (await createBackend(kind)).backend;
  });

  it('the gradient of the full training loss (CE + teacher KL + early-exit terms) equals float64 central differences', async () => {
    const baseline = backend.numTensors();
    const config = await readConfig(fixture.dirs.relaxedDir);
    const model = await TrainableModel.load(fixture.dirs.relaxedDir, backend);
    const teacher = await loadModel(fixture.dirs.originalDir, backend);
    const random = new TrainRandom(17);
    const [batchSize, length] = [2, 7];
    const ids = Array.from({ length: batchSize }, () =>
      Array.from({ length: length + 1 }, () => random.below(tinyVocab)),
    );
    const batch: TokenBatch = {
      batch: batchSize,
      length,
      inputs: Int32Array.from(ids.flatMap((row) => row.slice(0, length))),
      targets: Int32Array.from(ids.flatMap((row) => row.slice(1))),
    };
    const { value, grads } = lossAndGradients(backend, model, model.parameters, batch, {
      teacher,
      earlyExit: true,
      lossWeights: defaultLossWeights,
    });
    // The loss's constants exactly as the backend computed them (float32), for the float64 reference.
    const idTensor = backend.fromArray(batch.inputs, [batchSize, length], 'int32');
    const teacherLogits = teacher.forward(idTensor).logits;
    const detachedLogits = model.withHead((decoder) => decoder.forward(idTensor).logits);
    const reference = {
      config,
      reference: { ...fixture.dirs.reference, numHiddenLayers: config.numHiddenLayers } as ReferenceConfig,
      inputs: ids.map((row) => row.slice(0, length)),
      targets: ids.map((row) => row.slice(1)),
      teacher: nested((await backend.read(teacherLogits)) as Float32Array, batchSize, length, tinyVocab),
      detached: nested((await backend.read(detachedLogits)) as Float32Array, batchSize, length, tinyVocab),
      earlyExit: true,
      weights: defaultLossWeights,
    };
    const params: Float64Parameters = new Map();
    for (const parameter of model.parameters) {
      params.set(parameter.name, Float64Array.from((await model.checkpointValues(parameter)).values));
    }
    const loss = (await backend.read(value))[0]!;
    const referenceLoss = referenceTrainingLoss(params, reference);
    const lossError = Math.abs(loss - referenceLoss) / referenceLoss;
    // Observed: 2.9e-9 (cpu), 7.6e-10 (wasm) relative.
    expect(lossError).toBeLessThan(1e-7);

    let worst = 0;
    let checked = 0;
    const h = 1e-6;
    for (const [index, parameter] of model.parameters.entries()) {
      const raw = (await backend.read(grads[index]!)) as Float32Array;
      const [rows, cols] = parameter.variable.shape as [number, number];
      const grad = parameter.layout === 'transposed' ? transposed(raw, rows, cols) : raw;
      const values = params.get(parameter.name)!;
      const scale = Math.max(...Array.from(grad, Math.abs));
      for (let pick = 0; pick < 2; pick++) {
        const i = random.below(values.length);
        const saved = values[i]!;
        values[i] = saved + h;
        const up = referenceTrainingLoss(params, reference);
        values[i] = saved - h;
        const down = referenceTrainingLoss(params, reference);
        values[i] = saved;
        const numeric = (up - down) / (2 * h);
        // Error relative to the tensor's largest gradient entry (entries near 0 have no relative scale).
        const error = Math.abs(grad[i]! - numeric) / Math.max(scale, 1e-6);
        worst = Math.max(worst, error);
        checked++;
      }
    }
    // Observed worst error relative to the tensor's largest gradient entry (float32 autodiff vs float64
    // differences), when this drew 3 coordinates of each of the 61 parameters: 2.2e-7 on cpu, 4.7e-7 on
    // wasm. It now draws 2 per parameter, to keep the test short.
    expect(checked).toBe(model.parameters.length * 2);
    expect(worst).toBeLessThan(2e-6);

    backend.dispose([value, ...grads, idTensor, teacherLogits, detachedLogits]);
    teacher.dispose();
    model.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });
});
