import type { LinearModule } from '@rrt/core';
import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from './errors.js';
import { groupOf, resolveRanks } from './ranks.js';

// TinyLlama's shapes: q/o 2048², k/v 256×2048, FFN 5632×2048 / 2048×5632.
const shapes: Record<LinearModule, [number, number]> = {
  q_proj: [2048, 2048],
  k_proj: [256, 2048],
  v_proj: [256, 2048],
  o_proj: [2048, 2048],
  gate_proj: [5632, 2048],
  up_proj: [5632, 2048],
  down_proj: [2048, 5632],
};

describe('resolveRanks', () => {
  it('one rank for all, or per group with a default', () => {
    const none = () => undefined;
    expect(resolveRanks(64, shapes, none)).toEqual({
      q_proj: 64,
      k_proj: 64,
      v_proj: 64,
      o_proj: 64,
      gate_proj: 64,
      up_proj: 64,
      down_proj: 64,
    });
    expect(resolveRanks({ default: 8, kv: 4, ffn: 128 }, shapes, none)).toEqual({
      q_proj: 8,
      k_proj: 4,
      v_proj: 4,
      o_proj: 8,
      gate_proj: 128,
      up_proj: 128,
      down_proj: 128,
    });
    expect(resolveRanks({ q: 2 }, shapes, none).o_proj).toBe(0);
    expect(resolveRanks(undefined, shapes, none).q_proj).toBe(0);
    expect(groupOf('v_proj')).toBe('kv');
  });

  it('clamps a rank above min(out, in) with a warning naming the module', () => {
    const warnings: string[] = [];
    const ranks = resolveRanks({ default: 64, kv: 300, ffn: 4096 }, shapes, (message) =>
      warnings.push(message),
    );
    expect(ranks.k_proj).toBe(256);
    expect(ranks.gate_proj).toBe(2048);
    expect(ranks.q_proj).toBe(64);
    expect(warnings).toHaveLength(5);
    expect(warnings[0]).toContain('k_proj');
    expect(warnings[0]).toContain('256');
  });

  it('rejects ranks that are not non-negative integers, and unknown groups', () => {
    for (const option of [-1, 1.5, Number.NaN, { ffn: -2 }, { default: 0.5 }, { attention: 3 }, '8']) {
      expect(() => resolveRanks(option as never, shapes, () => undefined), JSON.stringify(option)).toThrow(
        InvalidOptionError,
      );
    }
  });
});
