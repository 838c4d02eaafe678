import { describe, expect, it } from 'vitest';
import { main } from '../index.js';

describe('rrt demo', () => {
  it('converts the embedded default: full rank reproduces the original, error shrinks with rank, nothing leaks', async () => {
    let out = '';
    const code = await main(['demo', '--json', '--backend', 'cpu'], {
      stdout: (text) => {
        out += text;
      },
      stderr: () => {},
      interactive: false,
    });
    expect(code).toBe(0);
    const report = JSON.parse(out);
    const errors: number[] = report.rows.map((row: { relativeError: number }) => row.relativeError);
    expect(errors[errors.length - 1]).toBeLessThan(1e-5);
    expect(errors[0]).toBeGreaterThan(errors[errors.length - 2]!);
    expect(report.rows[0].parameters).toBeLessThan(report.rows[1].parameters);
    expect(report.leakedTensors).toBe(0);
  });
});
