/**
 * `rrt calibrate-exit` and `rrt bench serving` as a user runs them: the built CLI as a child process on
 * stories260K (imported from ../shared/assets) and its relaxed 1×5 conversion. The full-depth perplexity
 * that calibrate-exit reports is checked against `rrt eval` on the same documents.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(repoRoot, 'apps/cli/dist/bin.js');
const assets = resolve(repoRoot, '../shared/assets');
const haveAssets = existsSync(join(assets, 'stories260K/stories260K.bin'));

function rrt(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

describe.skipIf(!haveAssets)(
  'serving commands (stories260K; skipped when ../shared/assets is absent)',
  () => {
    let work: string;
    let stories: string;
    let relaxed: string;
    let text: string;
    beforeAll(async () => {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: build the CLI first (pnpm build)`);
      work = await mkdtemp(join(tmpdir(), 'rrt-serving-cli-'));
      stories = join(work, 'stories260K');
      relaxed = join(work, 'relaxed');
      const imported = await rrt([
        'import',
        'llama2c',
        join(assets, 'stories260K/stories260K.bin'),
        '--tokenizer',
        join(assets, 'stories260K/tok512.bin'),
        '--out',
        stories,
      ]);
      expect(imported.code, imported.stderr).toBe(0);
      const converted = await rrt(['convert', stories, '--out', relaxed, '--loops', '5', '--rank', '8']);
      expect(converted.code, converted.stderr).toBe(0);
      // The last 30 documents of tinystories_val.txt.
      const documents = (await readFile(join(assets, 'text/tinystories_val.txt'), 'utf8')).split(/\n\s*\n/);
      text = join(work, 'held-out.txt');
      await writeFile(text, documents.slice(-30).join('\n\n'));
    });
    afterAll(async () => {
      if (work) await rm(work, { recursive: true, force: true });
    });

    it('calibrate-exit prints τ within the budget, the curve, and the full-depth perplexity rrt eval gives', async () => {
      const run = await rrt([
        'calibrate-exit',
        relaxed,
        '--text',
        text,
        '--max-change',
        '0.05',
        '--max-tokens',
        '1500',
        '--backend',
        'wasm',
        '--json',
      ]);
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout);
      expect(result.positions).toBe(1500);
      expect(result.changedShare).toBeLessThanOrEqual(0.05);
      expect(result.exitLoopShares.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 12);
      const thresholds = result.curve.map((point: { threshold: number }) => point.threshold);
      expect(thresholds).toEqual([...thresholds].sort((a: number, b: number) => b - a));
      // Every curve point at or above the chosen τ keeps the budget (that is how τ is chosen).
      for (const point of result.curve) {
        if (result.threshold !== null && point.threshold >= result.threshold) {
          expect(point.changedShare).toBeLessThanOrEqual(0.05);
        }
      }
      const evaluated = await rrt([
        'eval',
        relaxed,
        '--text',
        text,
        '--max-tokens',
        '1500',
        '--backend',
        'wasm',
        '--json',
      ]);
      expect(evaluated.code, evaluated.stderr).toBe(0);
      // Same targets; float32 log-softmax there, float64 from float32 logits here: observed ≈ 1e-7 relative.
      const reference = JSON.parse(evaluated.stdout).result.perplexity;
      expect(Math.abs(result.fullDepthPerplexity / reference - 1)).toBeLessThan(1e-5);

      const human = await rrt([
        'calibrate-exit',
        relaxed,
        '--text',
        text,
        '--max-tokens',
        '300',
        '--backend',
        'wasm',
      ]);
      expect(human.code, human.stderr).toBe(0);
      expect(human.stdout).toMatch(/perplexity with exits/);
      expect(human.stdout).toMatch(/\(chosen\)|no threshold keeps/);
    });

    it('calibrate-exit refuses a model without loops and bad flags (exit 2)', async () => {
      const vanilla = await rrt(['calibrate-exit', stories, '--text', text]);
      expect(vanilla.code).toBe(2);
      expect(vanilla.stderr).toMatch(/not a recursive model/);
      expect((await rrt(['calibrate-exit', relaxed, '--text', text, '--max-change', '2'])).code).toBe(2);
      expect((await rrt(['calibrate-exit', relaxed])).stderr).toMatch(/missing --text/);
    });

    it('bench serving runs the trace through every mode and the simulation, in one run', async () => {
      const run = await rrt([
        'bench',
        'serving',
        relaxed,
        '--baseline',
        stories,
        '--text',
        text,
        '--requests',
        '5',
        '--slots',
        '3',
        '--rate',
        '1000',
        '--max-change',
        '0.05',
        '--calibration-tokens',
        '400',
        '--backend',
        'wasm',
        '--json',
      ]);
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout);
      expect(result.requests).toBe(5);
      const modes = result.rows.map(
        (row: { model: string; mode: string; exit: string }) =>
          `${row.model.startsWith('baseline') ? 'b' : 'm'} ${row.mode} ${row.exit.split(' ')[0]}`,
      );
      expect(modes.slice(0, 5)).toEqual([
        'b static none',
        'b sequence none',
        'm static none',
        'm sequence none',
        'm depth none',
      ]);
      expect(modes.at(-1)).toBe('m depth confidence');
      for (const row of result.rows) {
        // No stop tokens: every request generates its maxTokens, in every mode.
        expect(row.summary.outputTokens).toBe(result.outputTokens);
        expect(row.summary.ttftMs.p50).toBeGreaterThan(0);
      }
      const depthNone = result.rows[4];
      expect(depthNone.summary.meanExitLoop).toBe(4);
      // Exit none: depth-wise batching serves exactly the sequence-wise tokens.
      expect(depthNone.changedTokenShare).toBe(0);
      expect(depthNone.overStatic).toBeGreaterThan(0);
      const contrast = result.rows.at(-1);
      expect(contrast.changedTokenShare).toBeGreaterThanOrEqual(0);
      expect(contrast.teacherForced.fullDepthPerplexity).toBeGreaterThan(1);
      const simulatedModes = result.simulated.map(
        (row: { mode: string; exits: string }) => `${row.mode} ${row.exits.split(':')[0]}`,
      );
      expect(simulatedModes).toContain('depth oracle');
      expect(simulatedModes).toContain('depth as measured');

      const table = await rrt([
        'bench',
        'serving',
        relaxed,
        '--requests',
        '2',
        '--no-simulate',
        '--backend',
        'wasm',
      ]);
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout).toMatch(/\| tokens\/s \| TTFT ms p50 \/ p90 \/ p99 \|/);
    });

    it('bench refuses unknown benchmarks and bad flags (exit 2)', async () => {
      expect((await rrt(['bench'])).code).toBe(2);
      expect((await rrt(['bench', 'decode'])).stderr).toMatch(/unknown benchmark/);
      expect((await rrt(['bench', 'serving', relaxed, '--requests', '0'])).code).toBe(2);
    });
  },
);
