import { describe, expect, it } from 'vitest';
import { main } from '../index.js';

describe('rrt demo', () => {
  it('runs the main job on a small budget: full rank reproduces the original, recursion saves, nothing leaks', async () => {
    let out = '';
    const code = await main(['demo', '--json', '--backend', 'wasm', '--steps', '2', '--eval-tokens', '256'], {
      stdout: (text) => {
        out += text;
      },
      stderr: () => {},
      interactive: false,
    });
    expect(code).toBe(0);
    const report = JSON.parse(out);
    const rows = report.rows as { model: string; parameters: number; perplexity: number }[];
    expect(rows.map((row) => row.model)).toEqual([
      'original',
      'recursive',
      'relaxed, rank 8',
      'relaxed, rank 32',
      'relaxed, full rank',
      'relaxed, rank 8, uptrained 2 steps',
    ]);
    const [original, recursive, rank8, rank32, full] = rows;
    expect(report.exact).toBe(true);
    expect(Math.abs(full!.perplexity - original!.perplexity)).toBeLessThanOrEqual(
      1e-4 * original!.perplexity,
    );
    // Sharing costs quality, and LoRA rank buys it back.
    expect(recursive!.perplexity).toBeGreaterThan(rank32!.perplexity);
    expect(recursive!.parameters).toBeLessThan(rank8!.parameters);
    expect(rank8!.parameters).toBeLessThan(original!.parameters);
    expect(report.samples.original.length).toBeGreaterThan(report.samples.prompt.length);
    expect(report.leakedTensors).toBe(0);
  }, 300_000);
});
