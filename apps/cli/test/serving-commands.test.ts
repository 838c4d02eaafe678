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
    /** `rrt calibrate-exit` of the relaxed model on the held-out text at a 5 % budget, on wasm. */
    const calibrate = (flags: string[]) =>
      rrt(['calibrate-exit', relaxed, '--text', text, '--max-change', '0.05', ...flags, '--backend', 'wasm']);

    it('calibrate-exit prints τ within the budget, the curve, and the full-depth perplexity rrt eval gives', async () => {
      const run = await calibrate(['--max-tokens', '1500', '--json']);
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

    it('calibrate-exit --readout-cost chooses the loops to check; generate runs the spec it prints', async () => {
      const given = await calibrate(['--max-tokens', '800', '--readout-cost', '0.5', '--json']);
      expect(given.code, given.stderr).toBe(0);
      const result = JSON.parse(given.stdout);
      expect(result.readoutCost).toBe(0.5);
      expect(result.changedShare).toBeLessThanOrEqual(0.05);
      for (const loop of result.checkLoops) expect(loop).toBeLessThan(4);
      expect(result.costPerToken).toBeCloseTo(result.meanExitLoop + 1 + 0.5 * result.readoutsPerToken, 12);
      // No exits cost 5 passes and a readout: the chosen loops never cost more.
      expect(result.costPerToken).toBeLessThanOrEqual(5.5);

      const measured = await calibrate(['--max-tokens', '800', '--readout-cost', 'auto', '--slots', '4']);
      expect(measured.code, measured.stderr).toBe(0);
      expect(measured.stderr).toMatch(/timing a depth-wise step of 4 rows/);
      expect(measured.stdout).toMatch(/checked at loops .* for a readout of \d+\.\d{3} passes/);
      // Either a spec to run, or no τ within the budget (then no spec).
      expect(measured.stdout).toMatch(/use: --exit confidence:\d\.\d+@\d+(,\d+)*\n|no threshold keeps/);
      // The given cost's result is deterministic (the model and text are): its spec runs in generate.
      expect(result.threshold).not.toBeNull();
      expect(result.checkLoops.length).toBeGreaterThan(0);
      /** The exit loops of 20 tokens of `rrt generate --exit <spec> --json`. */
      const exitLoopsOf = async (spec: string): Promise<number[]> => {
        const args = ['generate', relaxed, 'Once upon a time', '-n', '20', '--exit', spec];
        const generated = await rrt([...args, '--backend', 'wasm', '--json']);
        expect(generated.code, generated.stderr).toBe(0);
        return JSON.parse(generated.stdout).exitLoops;
      };
      const checks = result.checkLoops.join(',');
      // The first token comes from the prompt's chunk (every loop); the rest exit at a checked loop or the last.
      for (const loop of (await exitLoopsOf(`confidence:${result.threshold}@${checks}`)).slice(1)) {
        expect([...result.checkLoops, 4]).toContain(loop);
      }
      // At τ 0 every decode token leaves at the first checked loop, none earlier: the loops reach the engine.
      const eager = (await exitLoopsOf(`confidence:0@${checks}`)).slice(1);
      expect(eager).toEqual(eager.map(() => result.checkLoops[0]));
      for (const bad of [
        ['calibrate-exit', relaxed, '--text', text, '--readout-cost', '-1'],
        ['calibrate-exit', relaxed, '--text', text, '--readout-cost', '0.5', '--slots', '4'],
        ['generate', relaxed, 'Once', '--exit', 'confidence:0.5@4'],
        ['generate', relaxed, 'Once', '--exit', 'confidence:0.5@one'],
        ['generate', relaxed, 'Once', '--exit', 'confidence:0.5@1@2'],
      ]) {
        const refused = await rrt(bad);
        expect(refused.code, bad.join(' ')).toBe(2);
        // One line naming the flag, and where the help is.
        expect(refused.stderr, bad.join(' ')).toMatch(
          /^rrt [a-z-]+: .*(--readout-cost|--slots|--exit).*\n\(see: rrt [a-z-]+ --help\)\n$/,
        );
      }
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
      expect(modes).toContain('m depth confidence');
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
      type Row = { exit: string; changedTokenShare?: number; overSequence: number; exitLoopShares: number[] };
      const row = (match: (exit: string) => boolean) => result.rows.find((r: Row) => match(r.exit));
      const contrast = row((exit) => exit.endsWith('(uncalibrated)'));
      expect(contrast.changedTokenShare).toBeGreaterThanOrEqual(0);
      expect(contrast.teacherForced.fullDepthPerplexity).toBeGreaterThan(1);
      // The oracle bound: exits drawn from the oracle's shares; replayed tokens get no quality column.
      const oracleReplay = row((exit) => exit === 'replay of oracle exit shares');
      expect(oracleReplay.changedTokenShare).toBeUndefined();
      expect(oracleReplay.overSequence).toBeGreaterThan(0);
      // The ceiling: every decode token after loop 0; only each request's first token (its prompt chunk's)
      // runs to the last loop.
      const ceiling = row((exit) => exit.startsWith('replay: every decode token at loop 0'));
      expect(ceiling.exitLoopShares.slice(1, 4)).toEqual([0, 0, 0]);
      expect(ceiling.exitLoopShares[4]).toBeCloseTo(5 / result.outputTokens, 12);
      // Again under recursive KV sharing (nothing to propagate): the same exits.
      const shared = row((exit) => exit.endsWith('(ceiling), recursive KV sharing'));
      expect(shared.exitLoopShares).toEqual(ceiling.exitLoopShares);
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
