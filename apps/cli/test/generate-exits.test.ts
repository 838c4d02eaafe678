/**
 * `rrt generate --exit … --show-exits` through the built CLI (apps/cli/dist/bin.js) as a child process, on
 * stories260K converted to a relaxed 1×5 model in the test: the engine path with exit `none` prints the
 * same text as plain greedy generation, the marks and colours follow the exit loops that `--json` reports,
 * and bad specs are one-line usage errors (exit 2). Skips (with the reason) when ../shared is absent.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(repoRoot, 'apps/cli/dist/bin.js');
const assets = resolve(repoRoot, '../shared/assets/stories260K');
const haveAssets = existsSync(join(assets, 'stories260K.bin'));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `rrt args…` with stdout and stderr piped (not a terminal) and `env` added. */
function rrt(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const base = { ...process.env };
    delete base.NO_COLOR;
    delete base.FORCE_COLOR;
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...base, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** A usage error: exit 2, nothing on stdout, one line and the pointer to the help on stderr. */
function usage(run: Run, says: string | RegExp) {
  expect(run.code, run.stderr).toBe(2);
  expect(run.stdout).toBe('');
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(2);
  expect(lines[0]).toMatch(says);
  expect(lines[1]).toBe('(see: rrt generate --help)');
}

const subscriptDigits = /[₀-₉]+/g;
const esc = String.fromCharCode(0x1b);
const prompt = 'Once upon a time';

describe.skipIf(!haveAssets)('rrt generate --exit (stories260K relaxed 1×5)', () => {
  let work: string;
  let stories: string;
  let relaxed: string;
  beforeAll(async () => {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: build the CLI first (pnpm build)`);
    work = await mkdtemp(join(tmpdir(), 'rrt-exits-'));
    stories = join(work, 'stories260K');
    relaxed = join(work, 'relaxed-1x5');
    const imported = await rrt([
      'import',
      'llama2c',
      join(assets, 'stories260K.bin'),
      '--tokenizer',
      join(assets, 'tok512.bin'),
      '--out',
      stories,
    ]);
    expect(imported.code, imported.stderr).toBe(0);
    const converted = await rrt([
      'convert',
      stories,
      '--out',
      relaxed,
      '--loops',
      '5',
      '--rank',
      '8',
      '--init',
      'average',
    ]);
    expect(converted.code, converted.stderr).toBe(0);
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  const json = (run: Run) => {
    expect(run.code, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as {
      text: string;
      completionTokens: number;
      stopReason: string;
      loops: number;
      exitLoops: number[];
      exitHistogram: number[];
      meanExitLoop: number;
    };
  };

  it('exit none through the engine prints exactly the plain greedy text; every token exits at the last loop', async () => {
    const plain = json(await rrt(['generate', relaxed, prompt, '-n', '30', '--json', '--backend', 'wasm']));
    const none = json(
      await rrt(['generate', relaxed, prompt, '-n', '30', '--json', '--exit', 'none', '--backend', 'wasm']),
    );
    expect(none.text).toBe(plain.text);
    expect(none.completionTokens).toBe(plain.completionTokens);
    expect(none.loops).toBe(5);
    expect(none.exitLoops).toEqual(new Array(none.completionTokens).fill(4));
    expect(none.exitHistogram).toEqual([0, 0, 0, 0, none.completionTokens]);
  });

  it('--exit confidence:0.9 --show-exits: piped marks are the exit loops --json reports; the closing line has the mean', async () => {
    const args = [
      'generate',
      relaxed,
      prompt,
      '-n',
      '40',
      '--ignore-eos',
      '--exit',
      'confidence:0.9',
      '--backend',
      'wasm',
    ];
    const report = json(await rrt([...args, '--json']));
    expect(report.exitLoops).toHaveLength(report.completionTokens);
    expect(report.exitHistogram.reduce((a, b) => a + b, 0)).toBe(report.completionTokens);
    report.exitHistogram.forEach((count, loop) => {
      expect(count).toBe(report.exitLoops.filter((l) => l === loop).length);
    });
    const mean = report.exitLoops.reduce((a, b) => a + b, 0) / report.exitLoops.length;
    expect(report.meanExitLoop).toBeCloseTo(mean, 12);
    // The non-uptrained relaxed model is confident early on some tokens and not on others.
    expect(new Set(report.exitLoops).size).toBeGreaterThan(1);

    const piped = await rrt([...args, '--show-exits']);
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout).not.toContain('\x1b[');
    // Without the marks, the text is the JSON's; the marks (one per printed piece) are its tokens' loops.
    expect(piped.stdout.replace(subscriptDigits, '')).toBe(`${prompt}${report.text}\n`);
    const marks = [...piped.stdout.matchAll(subscriptDigits)].map((m) =>
      Number([...m[0]].map((c) => c.charCodeAt(0) - 0x2080).join('')),
    );
    expect(marks.length).toBeGreaterThan(0);
    expect(marks.every((loop) => report.exitLoops.includes(loop))).toBe(true);
    expect(piped.stderr).toContain('exit loops: ₀ loop 0');
    expect(piped.stderr).toMatch(
      new RegExp(`mean exit loop ${report.meanExitLoop.toFixed(2)} of 0–4; stopped: max tokens reached`),
    );
  });

  it('colours with FORCE_COLOR, none with NO_COLOR (marks instead), none without --show-exits', async () => {
    const args = ['generate', relaxed, prompt, '-n', '12', '--exit', 'agreement', '--backend', 'wasm'];
    const coloured = await rrt([...args, '--show-exits'], { FORCE_COLOR: '1' });
    expect(coloured.code, coloured.stderr).toBe(0);
    expect(coloured.stdout).toContain(`${esc}[3`);
    expect(coloured.stdout).not.toMatch(subscriptDigits);
    const noColour = await rrt([...args, '--show-exits'], { FORCE_COLOR: '1', NO_COLOR: '1' });
    expect(noColour.stdout).not.toContain('\x1b[');
    expect(noColour.stdout).toMatch(subscriptDigits);
    const unmarked = await rrt(args, { FORCE_COLOR: '1' });
    expect(unmarked.stdout).not.toContain('\x1b[');
    expect(unmarked.stdout).not.toMatch(subscriptDigits);
    expect(unmarked.stdout.trimEnd()).toBe(noColour.stdout.replace(subscriptDigits, '').trimEnd());
    // Each coloured piece is reset after it; without the codes the text is the unmarked one.
    const codes = new RegExp(`${esc}\\[(3\\d|0)m`, 'g');
    expect(coloured.stdout.match(codes)!.length % 2).toBe(0);
    expect(coloured.stdout.replace(codes, '')).toBe(unmarked.stdout);
  });

  it('bad exit specs are one-line usage errors', async () => {
    usage(
      await rrt(['generate', relaxed, '--exit', 'confidence:2']),
      /--exit confidence:<τ> expects 0 ≤ τ ≤ 1, got "2"/,
    );
    usage(
      await rrt(['generate', relaxed, '--exit', 'foo']),
      /--exit expects none \| agreement \| confidence:<τ>/,
    );
    usage(await rrt(['generate', relaxed, '--exit', 'confidence']), /needs a threshold/);
    usage(await rrt(['generate', stories, '--exit', 'confidence:0.9']), /--exit needs a recursive model/);
    usage(await rrt(['generate', relaxed, '--show-exits']), /--show-exits needs --exit/);
    usage(
      await rrt(['generate', relaxed, '--exit', 'agreement', '--min-loops', '2']),
      /--min-loops applies to/,
    );
    usage(
      await rrt(['generate', relaxed, '--exit', 'confidence:0.5', '--min-loops', '6']),
      /--min-loops expects an integer ≤ 5/,
    );
  });

  it('--temperature with --exit samples each token from its exit loop: exit none prints the plain sampled text', async () => {
    // A high temperature: the converted model's next-token distributions are so peaked that at 1.2 the
    // sample is still the greedy text.
    const sampling = ['--temperature', '4', '--seed', '5'];
    const generate = async (...flags: string[]) =>
      json(await rrt(['generate', relaxed, prompt, '-n', '25', '--json', '--backend', 'wasm', ...flags]));
    const plain = await generate(...sampling);
    const none = await generate('--exit', 'none', ...sampling);
    expect(none.text).toBe(plain.text);
    expect(none.text).not.toBe((await generate()).text);
    const exits = ['--exit', 'confidence:0.5', ...sampling];
    const [first, again] = [await generate(...exits), await generate(...exits)];
    expect(again.text).toBe(first.text);
    expect(first.exitLoops).toHaveLength(first.completionTokens);
  });
});
