import { describe, expect, it } from 'vitest';
import { IncompatibleLayoutError, InvalidOptionError } from './errors.js';
import {
  linspace,
  planLayout,
  roundHalfToEven,
  seededSortedChoice,
  sharedInits,
  stepwiseLayers,
  validLayoutPairs,
} from './layout.js';

describe('stepwise selection (round half to even of numpy linspace)', () => {
  // The table; Math.round would give different layers for (18, 9), (22, 11) and (6, 3).
  const table: [number, number, number[]][] = [
    [6, 3, [0, 2, 5]],
    [18, 9, [0, 2, 4, 6, 8, 11, 13, 15, 17]],
    [22, 11, [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21]],
    [16, 8, [0, 2, 4, 6, 9, 11, 13, 15]],
    [18, 6, [0, 3, 7, 10, 14, 17]],
  ];
  for (const [n, k, expected] of table) {
    it(`(N, K) = (${n}, ${k}) → [${expected.join(', ')}]`, () => {
      expect(stepwiseLayers(n, k)).toEqual(expected);
    });
  }

  it('rounds ties to even, unlike Math.round', () => {
    expect([0.5, 1.5, 2.5, 8.5, 10.5, -0.5, -1.5].map(roundHalfToEven)).toEqual([0, 2, 2, 8, 10, 0, -2]);
    expect([0.49999999999999994, 2.5000000000000004, 7.2, 7.8].map(roundHalfToEven)).toEqual([0, 3, 7, 8]);
    expect(Math.round(8.5)).toBe(9); // the reason this function exists
  });

  it('computes linspace like numpy: i·step + start, last value exactly stop', () => {
    // numpy: np.linspace(0, 21, 11)[5] == 10.5 exactly; np.linspace(0, 17, 9)[4] == 8.5.
    expect(linspace(0, 21, 11)[5]).toBe(10.5);
    expect(linspace(0, 17, 9)[4]).toBe(8.5);
    expect(linspace(0, 1, 3)).toEqual([0, 0.5, 1]);
    expect(linspace(0, 0.3, 4)[3]).toBe(0.3); // endpoint forced, as numpy does
    expect(linspace(0, 5, 1)).toEqual([0]);
    expect(linspace(0, 5, 0)).toEqual([]);
  });
});

describe('planLayout', () => {
  const file = 'config.json';

  it('maps cycle, sequence and middle-cycle like the issue defines them', () => {
    const cycle = planLayout({ sourceLayers: 6, loops: 2, strategy: 'cycle', file });
    expect(cycle.blockSize).toBe(3);
    // cycle: effective layer ℓ uses block layer ℓ mod K.
    expect(cycle.storedLayers.map((layer) => layer.sources)).toEqual([
      [0, 3],
      [1, 4],
      [2, 5],
    ]);
    const sequence = planLayout({ sourceLayers: 6, loops: 2, strategy: 'sequence', file });
    // sequence: block layer b repeated L times in a row.
    expect(sequence.storedLayers.map((layer) => layer.sources)).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
    ]);
    const middle = planLayout({ sourceLayers: 6, loops: 2, strategy: 'middle-cycle', file });
    // middle-cycle: first and last unique, the middle 4 as 2×2 cycling.
    expect(middle.blockSize).toBe(2);
    expect(middle.storedLayers.map((layer) => [layer.sources, layer.shared])).toEqual([
      [[0], false],
      [[1, 3], true],
      [[2, 4], true],
      [[5], false],
    ]);
    const vanilla = planLayout({ sourceLayers: 4, blockSize: 4, strategy: 'cycle', file });
    expect(vanilla.loops).toBe(1);
    expect(vanilla.storedLayers.every((layer) => !layer.shared && layer.sources.length === 1)).toBe(true);
  });

  it('rejects K·L ≠ N with the valid pairs listed', () => {
    let error: unknown;
    try {
      planLayout({ sourceLayers: 22, loops: 3, strategy: 'cycle', file });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(IncompatibleLayoutError);
    const layoutError = error as IncompatibleLayoutError;
    expect(layoutError.validPairs).toEqual([
      { blockSize: 22, loops: 1 },
      { blockSize: 11, loops: 2 },
      { blockSize: 2, loops: 11 },
      { blockSize: 1, loops: 22 },
    ]);
    expect(layoutError.message).toContain('11×2');
    expect(layoutError.message).toContain('config.json');
    expect(() => planLayout({ sourceLayers: 6, blockSize: 4, loops: 2, strategy: 'cycle', file })).toThrow(
      IncompatibleLayoutError,
    );
    expect(validLayoutPairs(5, 'middle-cycle')).toEqual([
      { blockSize: 3, loops: 1 },
      { blockSize: 1, loops: 3 },
    ]);
  });

  it('rejects loops or block sizes that are not positive integers', () => {
    for (const loops of [0, -2, 1.5, Number.NaN]) {
      expect(() => planLayout({ sourceLayers: 6, loops, strategy: 'cycle', file })).toThrow(
        InvalidOptionError,
      );
    }
    expect(() => planLayout({ sourceLayers: 6, strategy: 'cycle', file })).toThrow(InvalidOptionError);
    expect(() => planLayout({ sourceLayers: 6, blockSize: 0, strategy: 'cycle', file })).toThrow(
      InvalidOptionError,
    );
  });

  it('subsamples stepwise when asked, keeping the first and last layers', () => {
    const layout = planLayout({ sourceLayers: 22, loops: 3, strategy: 'cycle', subsample: true, file });
    expect(layout.blockSize).toBe(7);
    expect(layout.effectiveLayers).toBe(21);
    expect(layout.keptLayers).toEqual(stepwiseLayers(22, 21));
    expect(layout.keptLayers[0]).toBe(0);
    expect(layout.keptLayers[20]).toBe(21);
    expect(new Set(layout.keptLayers).size).toBe(21);
    expect(layout.storedLayers[0]!.sources).toEqual([
      layout.keptLayers[0],
      layout.keptLayers[7],
      layout.keptLayers[14],
    ]);
    const middle = planLayout({ sourceLayers: 9, loops: 2, strategy: 'middle-cycle', subsample: true, file });
    expect(middle.effectiveLayers).toBe(8);
    expect(middle.storedLayers[0]!.sources).toEqual([0]);
    expect(middle.storedLayers.at(-1)!.sources).toEqual([8]);
  });
});

describe('sharedInits', () => {
  const file = 'config.json';
  const layout = planLayout({ sourceLayers: 18, loops: 2, strategy: 'cycle', file });

  it('stepwise, lower, upper pick source layers; average ties the looped ones', () => {
    const pick = (init: 'stepwise' | 'lower' | 'upper') =>
      sharedInits(layout, init, 0).map((entry) => (entry.kind === 'copy' ? entry.source : -1));
    expect(pick('stepwise')).toEqual([0, 2, 4, 6, 8, 11, 13, 15, 17]);
    expect(pick('lower')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(pick('upper')).toEqual([9, 10, 11, 12, 13, 14, 15, 16, 17]);
    expect(sharedInits(layout, 'average', 0)[2]).toEqual({ kind: 'average', sources: [2, 11] });
  });

  it('random is a seeded sorted choice', () => {
    const a = sharedInits(layout, 'random', 7).map((entry) => (entry.kind === 'copy' ? entry.source : -1));
    const b = sharedInits(layout, 'random', 7).map((entry) => (entry.kind === 'copy' ? entry.source : -1));
    expect(a).toEqual(b);
    expect([...a].sort((x, y) => x - y)).toEqual(a);
    expect(new Set(a).size).toBe(9);
    expect(a.every((layer) => layer >= 0 && layer < 18)).toBe(true);
    const seeds = new Set(Array.from({ length: 8 }, (_, seed) => seededSortedChoice(18, 9, seed).join(',')));
    expect(seeds.size).toBeGreaterThan(1);
  });

  it('middle-cycle keeps unique layers as copies and spreads stepwise over the middle', () => {
    const middle = planLayout({ sourceLayers: 8, loops: 2, strategy: 'middle-cycle', file });
    const inits = sharedInits(middle, 'stepwise', 0);
    // Pool = layers 1…6; stepwise over 6 choose 3 = [0, 2, 5] → layers 1, 3, 6.
    expect(inits).toEqual([
      { kind: 'copy', source: 0 },
      { kind: 'copy', source: 1 },
      { kind: 'copy', source: 3 },
      { kind: 'copy', source: 6 },
      { kind: 'copy', source: 7 },
    ]);
  });
});
