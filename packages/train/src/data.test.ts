import { describe, expect, it } from 'vitest';
import { splitDocuments, TextDataset } from './data.js';
import { TrainingDataError } from './errors.js';
import { TrainRandom } from './random.js';

const documents = Array.from({ length: 30 }, (_, d) =>
  Array.from({ length: 5 + d }, (_, i) => String(d * 100 + i)).join(' '),
);
const create = (seed: number) =>
  TextDataset.create({
    documents,
    encode: (text) => text.split(' ').map(Number),
    bosId: -1,
    heldOutFraction: 0.2,
    seed,
  });

describe('TextDataset', () => {
  it('splits by whole documents, reproducibly from the seed, and records the split', () => {
    const dataset = create(4);
    expect(dataset.split.heldOutDocuments).toHaveLength(6);
    expect(create(4).split).toEqual(dataset.split);
    expect(create(5).split.heldOutDocuments).not.toEqual(dataset.split.heldOutDocuments);
    // Each document lies wholly on one side: its first token (d·100) appears only in that stream.
    const held = new Set(dataset.split.heldOutDocuments);
    for (let d = 0; d < documents.length; d++) {
      expect(dataset.heldOutTokens.includes(d * 100)).toBe(held.has(d));
      expect(dataset.trainTokens.includes(d * 100)).toBe(!held.has(d));
    }
    expect(dataset.split.trainTokens + dataset.split.heldOutTokens).toBe(
      documents.reduce((n, _, d) => n + 6 + d, 0), // 5 + d tokens and a BOS each
    );
  });

  it('draws windows whose targets are the inputs shifted by one, fixed by the random state', () => {
    const dataset = create(0);
    const random = new TrainRandom(11);
    const state = random.state;
    const batch = dataset.sampleBatch(random, 3, 7);
    const again = dataset.sampleBatch(TrainRandom.fromState(state), 3, 7);
    expect(again).toEqual(batch);
    for (let row = 0; row < 3; row++) {
      const inputs = batch.inputs.subarray(row * 7, row * 7 + 7);
      const targets = batch.targets.subarray(row * 7, row * 7 + 7);
      expect(Array.from(targets.subarray(0, 6))).toEqual(Array.from(inputs.subarray(1)));
    }
  });

  it('cuts the held-out stream into consecutive windows', () => {
    const dataset = create(0);
    const batches = dataset.heldOutBatches(2, 5, 3);
    expect(batches.map((b) => b.batch)).toEqual([2, 1]);
    expect(Array.from(batches[0]!.inputs)).toEqual(Array.from(dataset.heldOutTokens.subarray(0, 10)));
    expect(Array.from(batches[1]!.targets)).toEqual(Array.from(dataset.heldOutTokens.subarray(11, 16)));
  });

  it('names the corpus when it is too small', () => {
    expect(() =>
      TextDataset.create({ documents: ['one'], encode: () => [1], bosId: 0, source: 'tiny.txt' }),
    ).toThrow(/tiny\.txt: needs at least 2 documents/);
    expect(() => create(0).sampleBatch(new TrainRandom(0), 1, 10_000)).toThrow(TrainingDataError);
  });
});

describe('splitDocuments', () => {
  it('splits at blank lines and drops empty documents', () => {
    expect(splitDocuments('a b\nc\n\n\n  \nd\r\n\r\ne\n')).toEqual(['a b\nc', 'd', 'e']);
  });
});
