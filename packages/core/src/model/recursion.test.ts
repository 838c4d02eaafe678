import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.js';
import { exitDepths, layerSchedule, resolveRecursion } from './recursion.js';

const section = (blockSize: number, loops: number, strategy: string) => ({
  block_size: blockSize,
  loops,
  strategy,
  lora_ranks: { q_proj: 4 },
  lora_alpha: 8,
});

describe('recursion layout', () => {
  it('cycle runs block layer ℓ mod K on loop ⌊ℓ/K⌋', () => {
    const recursion = resolveRecursion(section(2, 3, 'cycle'), 6, 'config.json');
    const schedule = layerSchedule(recursion, 6);
    expect(schedule.map((layer) => [layer.blockLayer, layer.loopIndex])).toEqual([
      [0, 0],
      [1, 0],
      [0, 1],
      [1, 1],
      [0, 2],
      [1, 2],
    ]);
    expect(exitDepths(recursion, 6)).toEqual([1, 3, 5]);
  });

  it('sequence repeats each block layer L times in a row', () => {
    const recursion = resolveRecursion(section(2, 3, 'sequence'), 6, 'config.json');
    expect(layerSchedule(recursion, 6).map((layer) => [layer.blockLayer, layer.loopIndex])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [1, 0],
      [1, 1],
      [1, 2],
    ]);
  });

  it('middle-cycle keeps the first and last layers unique', () => {
    const recursion = resolveRecursion(section(1, 3, 'middle-cycle'), 5, 'config.json');
    expect(recursion.storedLayers).toBe(3);
    const schedule = layerSchedule(recursion, 5);
    expect(schedule.map((layer) => [layer.blockLayer, layer.loopIndex, layer.shared])).toEqual([
      [0, 0, false],
      [1, 0, true],
      [1, 1, true],
      [1, 2, true],
      [2, 0, false],
    ]);
    expect(exitDepths(recursion, 5)).toEqual([1, 2, 3, 4]);
  });

  it('a layout that does not produce N layers is a ConfigError naming the field', () => {
    expect(() => resolveRecursion(section(2, 2, 'cycle'), 5, 'm/config.json')).toThrow(ConfigError);
    expect(() => resolveRecursion(section(2, 2, 'cycle'), 5, 'm/config.json')).toThrow(
      /m\/config.json.*recursion/,
    );
    expect(() => resolveRecursion({ ...section(1, 5, 'cycle'), loops: 0 }, 5, 'c')).toThrow(
      /recursion.loops/,
    );
  });
});
