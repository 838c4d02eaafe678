import { createBackend } from '@rrt/backend-tfjs';
import { loadModel } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  crossEntropy,
  forwardKL,
  targetIndices,
  TrainableModel,
  TrainRandom,
  trainingLoss,
} from '../src/index.js';
import { tinyModelsFixture, tinyVocab } from './support.js';

const fixture = tinyModelsFixture('losses');

describe.each(['cpu', 'wasm'] as const)('%s', (kind) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = (await createBackend(kind)).backend;
  });

  it('distillation is exactly 0 when the student is the teacher, and positive otherwise', async () => {
    const baseline = backend.numTensors();
    const student = await TrainableModel.load(fixture.dirs.originalDir, backend);
    const sameTeacher = await loadModel(fixture.dirs.originalDir, backend);
    const relaxed = await TrainableModel.load(fixture.dirs.relaxedDir, backend);
    const random = new TrainRandom(3);
    const ids = backend.fromArray(
      Int32Array.from({ length: 2 * 9 }, () => random.below(tinyVocab)),
      [2, 9],
      'int32',
    );
    const targets = Int32Array.from({ length: 2 * 9 }, () => random.below(tinyVocab));
    const targetIndex = targetIndices(backend, targets, tinyVocab);
    const [same, different, lossWithSelf, plainLoss] = backend.tidy(() => {
      const teacherLogits = sameTeacher.forward(ids).logits;
      const studentLogits = student.withHead((decoder) => decoder.forward(ids).logits);
      const relaxedLogits = relaxed.withHead((decoder) => decoder.forward(ids).logits);
      return [
        forwardKL(backend, studentLogits, teacherLogits),
        forwardKL(backend, relaxedLogits, teacherLogits),
        trainingLoss(backend, { loopLogits: [studentLogits], targetIndex, teacherLogits }),
        crossEntropy(backend, studentLogits, targetIndex),
      ];
    });
    const read = async (tensor: typeof same) => (await backend.read(tensor))[0]!;
    expect(await read(same)).toBe(0);
    // The rank-4 relaxed conversion does not reproduce its original: KL = 0.244 nats on both backends.
    expect(await read(different)).toBeGreaterThan(1e-3);
    // With a zero KL term the distilled objective is the cross-entropy, bit for bit.
    expect(await read(lossWithSelf)).toBe(await read(plainLoss));
    backend.dispose([same, different, lossWithSelf, plainLoss, ids, targetIndex]);
    student.dispose();
    sameTeacher.dispose();
    relaxed.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });

  it('cross-entropy equals −mean log softmax[target] computed in float64 from the logits', async () => {
    const model = await TrainableModel.load(fixture.dirs.relaxedDir, backend);
    const random = new TrainRandom(4);
    const ids = backend.fromArray(
      Int32Array.from({ length: 3 * 5 }, () => random.below(tinyVocab)),
      [3, 5],
      'int32',
    );
    const targets = Int32Array.from({ length: 3 * 5 }, () => random.below(tinyVocab));
    const targetIndex = targetIndices(backend, targets, tinyVocab);
    const logits = model.withHead((decoder) => decoder.forward(ids).logits);
    const loss = crossEntropy(backend, logits, targetIndex);
    const values = (await backend.read(logits)) as Float32Array;
    let expected = 0;
    for (let row = 0; row < targets.length; row++) {
      const slice = Array.from(values.subarray(row * tinyVocab, (row + 1) * tinyVocab));
      const max = Math.max(...slice);
      const logSum = Math.log(slice.reduce((sum, v) => sum + Math.exp(v - max), 0)) + max;
      expected -= slice[targets[row]!]! - logSum;
    }
    expected /= targets.length;
    // Observed: 6.8e-9 (cpu), 1.0e-7 (wasm) relative.
    expect(Math.abs((await backend.read(loss))[0]! - expected) / expected).toBeLessThan(1e-6);
    backend.dispose([ids, targetIndex, logits, loss]);
    model.dispose();
  });
});
