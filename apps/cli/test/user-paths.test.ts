/**
 * The CLI as a person meets it: each test runs the built `rrt` (apps/cli/dist/bin.js; `pnpm test` builds
 * it first) as a child process, the way a user types the command, and checks what they would see: exit
 * codes, one-line errors, interrupts, closed pipes, and that inputs survive.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(repoRoot, 'apps/cli/dist/bin.js');
const assets = resolve(repoRoot, '../shared/assets/stories260K');
const haveAssets = existsSync(join(assets, 'stories260K.bin'));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `rrt args…`; `during` gets the child to interrupt it or close its pipes. */
function rrt(args: string[], during?: (child: ChildProcess) => void, cwd = repoRoot): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
    during?.(child);
  });
}

/** Runs any program to its end. */
function runProgram(program: string, args: string[]): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(program, args, { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

/** Resolves once the child has written `pattern` to the stream. */
function whenWritten(stream: NodeJS.ReadableStream, pattern: RegExp): Promise<void> {
  return new Promise((done) => {
    let seen = '';
    const listener = (chunk: Buffer | string) => {
      seen += chunk.toString();
      if (pattern.test(seen)) {
        stream.off('data', listener);
        done();
      }
    };
    stream.on('data', listener);
  });
}

async function hashes(dir: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) {
    result[name] = createHash('sha256')
      .update(await readFile(join(dir, name)))
      .digest('hex');
  }
  return result;
}

/** Hidden temporaries (`.name.rrt-tmp-…`) in a directory. */
async function temporaries(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.includes('.rrt-tmp-'));
}

let work: string;
/** Big enough that a conversion with LoRA runs for seconds (so it can be interrupted mid-way). */
let synthetic: string;
/** Small, for everything else. */
let small: string;
let stories: string;

beforeAll(async () => {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build the CLI first (pnpm build)`);
  work = await mkdtemp(join(tmpdir(), 'rrt-user-'));
  synthetic = join(work, 'synthetic');
  small = join(work, 'small');
  await writeSyntheticCheckpoint(small, {
    modelType: 'llama',
    vocabSize: 64,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 4,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    tieWordEmbeddings: false,
    dtype: 'F32',
    seed: 8,
    layerSpecificity: 0.3,
  });
  await writeSyntheticCheckpoint(synthetic, {
    modelType: 'llama',
    vocabSize: 512,
    hiddenSize: 256,
    intermediateSize: 688,
    numHiddenLayers: 8,
    numAttentionHeads: 8,
    numKeyValueHeads: 4,
    tieWordEmbeddings: false,
    dtype: 'F32',
    seed: 7,
    layerSpecificity: 0.3,
  });
  if (haveAssets) {
    stories = join(work, 'stories260K');
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
  }
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('outputs never destroy inputs', () => {
  it('convert through a symlink to the source refuses, and the source stays byte-identical', async () => {
    const link = join(work, 'link');
    await symlink(synthetic, link);
    const before = await hashes(synthetic);
    const run = await rrt(['convert', link, '--out', synthetic, '--loops', '2', '--overwrite']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/same directory as the input .*link \(symbolic links followed\)/);
    expect(await hashes(synthetic)).toEqual(before);

    const inside = await rrt(['convert', synthetic, '--out', join(link, 'nested'), '--loops', '2']);
    expect(inside.code).toBe(2);
    expect(inside.stderr).toMatch(/lies inside the input/);
    const around = await rrt(['convert', synthetic, '--out', work, '--loops', '2', '--overwrite']);
    expect(around.code).toBe(2);
    expect(around.stderr).toMatch(/contains the input/);
    expect(await hashes(synthetic)).toEqual(before);
  });

  it('export through a symlink to its source refuses too', async () => {
    const recursive = join(work, 'recursive-for-export');
    expect((await rrt(['convert', small, '--out', recursive, '--loops', '2'])).code).toBe(0);
    const link = join(work, 'recursive-link');
    await symlink(recursive, link);
    const before = await hashes(recursive);
    const run = await rrt([
      'export',
      link,
      '--unroll',
      '--out',
      recursive,
      '--overwrite',
      '--backend',
      'none',
    ]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/same directory as the input/);
    expect(await hashes(recursive)).toEqual(before);
  });

  it.skipIf(!haveAssets)('import refuses an output that holds its checkpoint', async () => {
    const holder = join(work, 'holder');
    await mkdir(holder);
    await writeFile(join(holder, 'stories260K.bin'), await readFile(join(assets, 'stories260K.bin')));
    const run = await rrt([
      'import',
      'llama2c',
      join(holder, 'stories260K.bin'),
      '--tokenizer',
      join(assets, 'tok512.bin'),
      '--out',
      holder,
      '--overwrite',
    ]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/contains the input/);
    expect(existsSync(join(holder, 'stories260K.bin'))).toBe(true);
  });
});

describe('interrupts and closed pipes leave nothing half-written', () => {
  it('Ctrl-C during convert removes the temporary output and exits 130', async () => {
    const out = join(work, 'interrupted');
    const run = await rrt(['convert', synthetic, '--out', out, '--loops', '2', '--rank', '32'], (child) => {
      void whenWritten(child.stderr!, /convert \[#/).then(() => child.kill('SIGINT'));
    });
    expect(run.code, run.stderr).toBe(130);
    expect(run.stderr).toMatch(/interrupted; nothing written/);
    expect(existsSync(out)).toBe(false);
    expect(await temporaries(work)).toEqual([]);
  });

  it('a closed pipe during export removes the temporary output', async () => {
    const recursive = join(work, 'relaxed-for-pipe');
    const convert = [
      'convert',
      synthetic,
      '--out',
      recursive,
      '--loops',
      '2',
      '--rank',
      '8',
      '--svd',
      'randomized',
    ];
    expect((await rrt(convert)).code).toBe(0);
    const out = join(work, 'piped');
    const run = await rrt(['export', recursive, '--unroll', '--out', out, '--backend', 'none'], (child) => {
      // Like `2>&1 | head -2`: the reader goes away after the first progress line.
      void whenWritten(child.stderr!, /export \[/).then(() => child.stderr!.destroy());
    });
    expect(run.code).toBe(141);
    expect(existsSync(out)).toBe(false);
    expect(await temporaries(work)).toEqual([]);
  });

  it('a temporary left by a killed run is removed, and said so, by the next run', async () => {
    const out = join(work, 'after-crash');
    const stale = join(work, '.after-crash.rrt-tmp-999999999-0123456789ab');
    await mkdir(stale);
    await writeFile(join(stale, 'model.safetensors'), new Uint8Array(4096));
    const run = await rrt(['convert', small, '--out', out, '--loops', '2']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`removed ${stale} (0.0 MiB), left by an earlier run that did not finish`);
    expect(existsSync(stale)).toBe(false);
  });

  it.skipIf(!haveAssets)(
    'Ctrl-C during generate stops within a token, keeps the text, exits 130',
    async () => {
      let interruptedAt = 0;
      const run = await rrt(['generate', stories, '-n', '100000', '--ignore-eos'], (child) => {
        // Once the story has begun: the first stdout chunk is the (empty) prompt's newline-free text.
        void whenWritten(child.stdout!, /\w+ \w+/).then(() => {
          interruptedAt = performance.now();
          child.kill('SIGINT');
        });
      });
      const stoppedAfter = performance.now() - interruptedAt;
      expect(run.code, run.stderr).toBe(130);
      const [, tokens] = /(\d+) tokens in .*; stopped: interrupted/.exec(run.stderr) ?? [];
      expect(Number(tokens), run.stderr).toBeGreaterThan(0);
      expect(Number(tokens)).toBeLessThan(511); // the context would have stopped it there
      expect(run.stdout.trim().length).toBeGreaterThan(0);
      // One token takes milliseconds; the rest is process teardown (generous for a loaded CI machine).
      expect(stoppedAfter).toBeLessThan(3000);
    },
  );

  it.skipIf(!haveAssets)('generate | head ends quietly: no stack trace, exit 0', async () => {
    const run = await rrt(['generate', stories, '-n', '2000', '--ignore-eos'], (child) => {
      void whenWritten(child.stdout!, /\w{20}/).then(() => child.stdout!.destroy());
    });
    expect(run.code).toBe(0);
    expect(run.stderr).not.toMatch(/EPIPE|Error|at /);
  });
});

describe('stdout holds only the command output', () => {
  it.skipIf(!haveAssets)(
    'pnpm rrt inspect --json is JSON, however the CLI is started',
    async () => {
      const viaPnpm = await runProgram('pnpm', ['rrt', 'inspect', stories, '--json']);
      expect(viaPnpm.code, viaPnpm.stderr).toBe(0);
      expect(JSON.parse(viaPnpm.stdout).config.modelType).toBe('llama');
      const direct = await rrt(['inspect', stories, '--json']);
      expect(JSON.parse(direct.stdout)).toEqual(JSON.parse(viaPnpm.stdout));
    },
    240_000,
  ); // `pnpm rrt` first runs turbo's build: cached after `pnpm test`'s, minutes after a source edit
});

describe('bad input gets one line naming the flag, and exit 2', () => {
  const usage = (run: Run) => {
    expect(run.code, run.stderr).toBe(2);
    expect(run.stdout).toBe('');
    // One line and a pointer to the help, not the whole help, and no class names.
    expect(run.stderr.trim().split('\n')).toHaveLength(2);
    expect(run.stderr).not.toMatch(/UsageError|TypeError|Error:/);
  };

  it('--backend foo lists the backends, for every command that takes one', async () => {
    for (const args of [
      ['backend', '--backend', 'foo'],
      ['convert', small, '--out', join(work, 'x'), '--loops', '2', '--backend', 'foo'],
      ['export', small, '--unroll', '--out', join(work, 'x'), '--backend', 'foo'],
      ['demo', '--backend', 'foo'],
    ]) {
      const run = await rrt(args);
      usage(run);
      expect(run.stderr).toMatch(
        /--backend expects one of auto, node-gpu, node, wasm, webgpu, cpu(, none)?, got "foo"/,
      );
    }
  });

  it('a --text file that cannot be read is named with the reason, for every command that reads one', async () => {
    const missing = join(work, 'no-such-text.txt');
    for (const args of [
      ['eval', small, '--text', missing],
      ['calibrate-exit', small, '--text', missing],
      ['train', small, '--text', missing, '--out', join(work, 'never-trained')],
      ['bench', 'serving', small, '--text', missing],
    ]) {
      const run = await rrt(args);
      usage(run);
      expect(run.stderr).toContain(`--text ${missing}: ENOENT`);
    }
    const directory = await rrt(['eval', small, '--text', work]);
    usage(directory);
    expect(directory.stderr).toContain(`--text ${work}: EISDIR`);
  });

  it('extra positionals are refused; negative numbers and ranges are stated', async () => {
    const inspect = await rrt(['inspect', small, 'b']);
    usage(inspect);
    expect(inspect.stderr).toContain('got extra argument "b"');
    const temperature = await rrt(['generate', small, '--temperature', '-1']);
    usage(temperature);
    expect(temperature.stderr).toContain('--temperature expects a number ≥ 0, got -1');
    const topP = await rrt(['generate', small, '--top-p', '0']);
    usage(topP);
    expect(topP.stderr).toContain('--top-p expects a number > 0 and ≤ 1, got 0');
    const text = join(work, 'weights-text.txt');
    await writeFile(text, 'Once upon a time.');
    const weight = ['train', small, '--text', text, '--out', join(work, 'never-weighed')];
    const alone = await rrt([...weight, '--early-exit-weight', '1']);
    usage(alone);
    expect(alone.stderr).toContain('--early-exit-weight goes with --early-exit');
    const negative = await rrt([...weight, '--early-exit', '--early-exit-weight', '-1']);
    usage(negative);
    expect(negative.stderr).toContain('--early-exit-weight expects a number ≥ 0, got -1');
    const unknown = await rrt(['convert', small, '--out', join(work, 'y'), '--lops', '2']);
    usage(unknown);
    expect(unknown.stderr).toContain('unknown option --lops');
  });

  it('library errors are told as flags: --rank, --overwrite, --alpha without LoRA, --out under a file', async () => {
    const rank = await rrt(['convert', small, '--out', join(work, 'r'), '--loops', '3']);
    usage(rank);
    expect(rank.stderr).toMatch(/cannot be split as .*valid K×L: .*pass --subsample/);
    const existing = join(work, 'existing');
    await mkdir(existing);
    const exists = await rrt(['convert', small, '--out', existing, '--loops', '2']);
    usage(exists);
    expect(exists.stderr).toContain('exists; pass --overwrite to replace it');
    const alpha = await rrt(['convert', small, '--out', join(work, 'a'), '--loops', '2', '--alpha', '4']);
    usage(alpha);
    expect(alpha.stderr).toContain('--alpha scales the LoRA, and there is none');
    const file = join(work, 'a-file');
    await writeFile(file, 'x');
    const under = await rrt(['convert', small, '--out', join(file, 'model'), '--loops', '2']);
    usage(under);
    expect(under.stderr).toContain('is a file, so no directory can be made under it');
  });

  it('a llama2.c checkpoint given to generate gets the import command as a hint', async () => {
    const checkpoint = join(work, 'model.bin');
    await writeFile(checkpoint, new Uint8Array(64));
    const run = await rrt(['generate', checkpoint]);
    usage(run);
    expect(run.stderr).toContain(`rrt import llama2c ${checkpoint} --tokenizer <tok.bin> --out <dir>`);
  });
});

describe.skipIf(!haveAssets)('generation says why it stopped', () => {
  const generate = async (...args: string[]) => {
    const run = await rrt(['generate', stories, '--json', ...args]);
    expect(run.code, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as Record<string, unknown>;
  };

  it('an imported llama2.c model ends its story at BOS, as run.c does', async () => {
    const config = JSON.parse(await readFile(join(stories, 'config.json'), 'utf8'));
    expect(config.eos_token_id).toEqual([2, 1]);
    const story = await generate('-n', '400');
    expect(story.stopReason).toBe('eos');
    expect(story.completionTokens).toBeLessThan(400);
    const storyTokens = story.completionTokens as number;
    const past = await generate('-n', String(storyTokens + 20), '--ignore-eos');
    expect(past.stopReason).toBe('max-tokens');
    expect(past.completionTokens).toBe(storyTokens + 20);
  });

  it('the context, the token budget and stop strings', async () => {
    const context = await generate('-n', '2000', '--ignore-eos');
    expect(context).toMatchObject({ stopReason: 'context', promptTokens: 1, completionTokens: 511 });
    const budget = await generate('-n', '7');
    expect(budget).toMatchObject({ stopReason: 'max-tokens', completionTokens: 7 });
    const stop = await generate('-n', '100', '--stop', 'Lily');
    expect(stop.stopReason).toBe('stop');
    expect(stop.text).not.toContain('Lily');
    expect((budget.text as string).length).toBeGreaterThan(0);
  });

  it('the prompt as an argument, from a file, and too long for the context (nothing printed)', async () => {
    const positional = await generate('Once upon a time', '-n', '3');
    const flag = await generate('-p', 'Once upon a time', '-n', '3');
    expect(positional.text).toBe(flag.text);
    expect(positional.promptTokens).toBeGreaterThan(1);
    const file = join(work, 'prompt.txt');
    await writeFile(file, 'Once upon a time\n');
    expect((await generate('--prompt-file', file, '-n', '3')).text).toBe(flag.text);

    await writeFile(file, 'word '.repeat(600));
    const long = await rrt(['generate', stories, '--prompt-file', file]);
    expect(long.code).toBe(2);
    expect(long.stdout).toBe('');
    expect(long.stderr).toMatch(/the prompt is \d+ tokens, and .* runs at most 512 positions/);
  });

  it('sampling prints its seed; greedy warns about sampling flags', async () => {
    const sampled = await rrt(['generate', stories, '-n', '3', '--temperature', '0.8']);
    const seed = /seed: (\d+) \(pass --seed \1 to repeat this sample\)/.exec(sampled.stderr)?.[1];
    expect(seed, sampled.stderr).toBeDefined();
    const again = await rrt(['generate', stories, '-n', '3', '--temperature', '0.8', '--seed', seed!]);
    expect(again.stdout).toBe(sampled.stdout);
    const greedy = await rrt(['generate', stories, '-n', '3', '--top-k', '5']);
    expect(greedy.stderr).toContain('warning: --top-k has no effect with --temperature 0 (greedy decoding)');
  });
});

describe('converted models say what they are', () => {
  it('a relaxed config claims its own model type; the unrolled export the plain one again', async () => {
    const relaxed = join(work, 'relaxed-identity');
    expect((await rrt(['convert', small, '--out', relaxed, '--loops', '2', '--rank', '4'])).code).toBe(0);
    const config = JSON.parse(await readFile(join(relaxed, 'config.json'), 'utf8'));
    expect(config.model_type).toBe('rrt_llama');
    expect(config.architectures).toEqual(['RelaxedRecursiveLlamaForCausalLM']);
    expect(config.recursion.base_model_type).toBe('llama');
    const unrolled = join(work, 'unrolled-identity');
    expect((await rrt(['export', relaxed, '--unroll', '--out', unrolled, '--backend', 'none'])).code).toBe(0);
    const plain = JSON.parse(await readFile(join(unrolled, 'config.json'), 'utf8'));
    expect(plain.model_type).toBe('llama');
    expect(plain.architectures).toEqual(['LlamaForCausalLM']);
    expect(plain.recursion).toBeUndefined();
  });

  it('inspect names the layout in words; convert at rank 0 has no relaxed row; --dry-run writes nothing', async () => {
    const recursive = join(work, 'recursive-words');
    const converted = await rrt(['convert', small, '--out', recursive, '--loops', '4']);
    expect(converted.stdout).not.toMatch(/^relaxed/m);
    const inspect = await rrt(['inspect', recursive]);
    expect(inspect.stdout).toContain(': llama\n');
    expect(inspect.stdout).toContain('recursion: 1 block layer × 4 loops');
    const dry = join(work, 'dry');
    const run = await rrt(['convert', small, '--out', dry, '--loops', '2', '--rank', '8', '--dry-run']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/dry run: would write .*nothing written/);
    expect(run.stdout).toMatch(/^relaxed +[\d,]+ +[\d.]+%$/m);
    expect(existsSync(dry)).toBe(false);
  });
});

describe('inspect names the family and what sets it apart', () => {
  const base = {
    vocabSize: 40,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 6,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 8,
    tieWordEmbeddings: true,
    dtype: 'F32',
    seed: 3,
  } as const;

  it('Qwen3: q/k norms; Gemma 2: soft-caps, local layers, four norms, query scale; Gemma 3: local RoPE; Mistral: its window', async () => {
    const cases = [
      {
        modelType: 'qwen3',
        extraConfig: {},
        family: ': qwen3 (llama family)\n',
        features: '  features: q/k norms\n',
      },
      {
        modelType: 'gemma2',
        extraConfig: { sliding_window: 4096, query_pre_attn_scalar: 256 },
        family: ': gemma2 (gemma family)\n',
        features:
          '  features: pre/post attention and feed-forward norms, sliding window 4096 on layers 0, 2, 4, ' +
          'attention soft-cap 50, final soft-cap 30, query scale 0.06250\n',
      },
      {
        modelType: 'gemma3_text',
        extraConfig: { sliding_window: 512, query_pre_attn_scalar: 8 },
        family: ': gemma3_text (gemma family)\n',
        features:
          '  features: q/k norms, pre/post attention and feed-forward norms, sliding window 512 on layers 0-4, ' +
          'local RoPE θ 10000\n',
      },
      {
        modelType: 'mistral',
        extraConfig: { sliding_window: 64 },
        family: ': mistral (llama family)\n',
        features: '  features: sliding window 64 on all layers\n',
      },
    ] as const;
    for (const { modelType, extraConfig, family, features } of cases) {
      const dir = join(work, `inspect-${modelType}`);
      await writeSyntheticCheckpoint(dir, { ...base, modelType, extraConfig });
      const run = await rrt(['inspect', dir]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain(family);
      expect(run.stdout).toContain(features);
    }
  });

  it('a relaxed Gemma 3 says which norms it keeps per loop; a block size that breaks the pattern is refused naming the flag', async () => {
    const source = join(work, 'inspect-gemma3-source');
    await writeSyntheticCheckpoint(source, {
      ...base,
      modelType: 'gemma3_text',
      extraConfig: { sliding_window: 3, sliding_window_pattern: 3 },
    });
    const relaxed = join(work, 'inspect-gemma3-relaxed');
    const converted = await rrt(['convert', source, '--out', relaxed, '--loops', '2', '--rank', '4']);
    expect(converted.code, converted.stderr).toBe(0);
    expect(converted.stdout).toContain(
      'norms kept per loop (not foldable): q_norm, k_norm, post_attention_layernorm, post_feedforward_layernorm\n',
    );
    const inspect = await rrt(['inspect', relaxed]);
    expect(inspect.stdout).toContain(': gemma3_text (gemma family)\n');
    expect(inspect.stdout).toContain(
      ', per-loop q_norm/k_norm/post_attention_layernorm/post_feedforward_layernorm\n',
    );
    const refused = await rrt(['convert', source, '--out', join(work, 'inspect-refused'), '--loops', '3']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--block-size: expected a block size whose loops repeat the layer types/);
  });
});

describe('the small things', () => {
  it('help for a command, the version, progress that fits 80 columns', async () => {
    const help = await rrt(['help', 'convert']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^rrt convert <source>/);
    const version = await rrt(['--version']);
    expect(version.stdout).toMatch(/^rrt \d+\.\d+\.\d+\n$/);
    // The `rrt` that `pnpm install` puts in node_modules/.bin (on the PATH with pnpm exec) is this CLI.
    const onPath = await runProgram(join(repoRoot, 'node_modules/.bin/rrt'), ['--version']);
    expect(onPath.stdout).toBe(version.stdout);
    const bench = await runProgram(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench/run.ts')]);
    expect(bench.code).toBe(0);
    expect(bench.stderr).toMatch(/usage: pnpm bench <name> \[flags\]; benchmarks: .*decode/);
    const out = join(work, 'progress');
    const run = await rrt(['convert', small, '--out', out, '--loops', '2', '--rank', '2']);
    const lines = run.stderr.split('\n').filter((line) => line.startsWith('convert ['));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect([...line].length).toBeLessThan(80);
  });
});
