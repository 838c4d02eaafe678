/**
 * Parsing of command lines and flag values, shared by the commands. Every mistake becomes one
 * {@link UsageError} line that names the flag, says what was expected and what was given.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { BackendKind } from '@rrt/backend-tfjs';
import type { FloatDType } from '@rrt/convert';
import { UsageError } from './cli-io.js';

const dtypes: Record<string, FloatDType> = {
  f32: 'F32',
  float32: 'F32',
  f16: 'F16',
  float16: 'F16',
  bf16: 'BF16',
  bfloat16: 'BF16',
};

/** The values `--backend` takes, in the order the help lists them. */
export const backendKinds = [
  'auto',
  'node-gpu',
  'node',
  'wasm',
  'webgpu',
  'cpu',
] as const satisfies readonly BackendKind[];

/** The flags a command declares, as `node:util`'s `parseArgs` takes them. */
export type FlagOptions = NonNullable<ParseArgsConfig['options']>;

/** What {@link parseFlags} returns for the flags `O`. */
export type ParsedFlags<O extends FlagOptions> = ReturnType<
  typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>
>;

/** What {@link parseFlags} takes: the flags, and the names of the positionals in order. */
export interface FlagSpec<O extends FlagOptions> {
  options: O;
  /** Names of the positionals, as the help writes them (`<model-dir>`); more are refused. */
  positionals?: readonly string[];
  /** How many of {@link FlagSpec.positionals} must be given (default: all). */
  required?: number;
}

/**
 * `node:util`'s `parseArgs`, strict, with two fixes for people: a negative number after a flag is its value
 * (`--temperature -1` is a range error, not "argument is ambiguous"), and its errors become one-line
 * {@link UsageError}s. Refuses positionals beyond `spec.positionals` and reports missing ones.
 *
 * @example
 * ```ts
 * const { values, positionals } = parseFlags(args, { options: { json: { type: 'boolean' } }, positionals: ['<model-dir>'] });
 * ```
 */
export function parseFlags<O extends FlagOptions>(
  args: readonly string[],
  spec: FlagSpec<O>,
): ParsedFlags<O> {
  const takesValue = (flag: string) => {
    const name = flag.startsWith('--') ? flag.slice(2) : undefined;
    const short = flag.length === 2 && flag.startsWith('-') ? flag[1] : undefined;
    return Object.entries(spec.options).some(
      ([key, option]) => option.type === 'string' && (key === name || option.short === short),
    );
  };
  const joined: string[] = [];
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    const next = args[index + 1];
    if (next !== undefined && /^-\d|^-\.\d/.test(next) && !arg.includes('=') && takesValue(arg)) {
      joined.push(`${arg}=${next}`);
      index++;
    } else {
      joined.push(arg);
    }
  }
  let parsed: ParsedFlags<O>;
  try {
    parsed = parseArgs({ args: joined, options: spec.options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(parseErrorMessage(error));
  }
  const names = spec.positionals ?? [];
  const required = spec.required ?? names.length;
  if (parsed.positionals.length > names.length) {
    const extra = parsed.positionals.slice(names.length).map((word) => JSON.stringify(word));
    throw new UsageError(
      names.length === 0
        ? `takes no positional arguments, got ${extra.join(' ')}`
        : `takes ${names.join(' ')}, got extra argument${extra.length > 1 ? 's' : ''} ${extra.join(' ')} (quote values that contain spaces)`,
    );
  }
  if (parsed.positionals.length < required)
    throw new UsageError(`missing ${names[parsed.positionals.length]}`);
  return parsed;
}

function parseErrorMessage(error: unknown): string {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  const flag = /'(-[^' ]+)/.exec(message)?.[1] ?? '';
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${flag}`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return message.includes('does not take an argument')
      ? `${flag} takes no value`
      : `${flag} needs a value (write ${flag}=<value> for one that starts with "-")`;
  }
  return message;
}

/** Bounds of a numeric flag; each set field is checked, and the error states them all. */
export interface NumberRange {
  integer?: boolean;
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Values must be greater than this. */
  above?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
}

function describeRange(range: NumberRange): string {
  const kind = range.integer ? 'an integer' : 'a number';
  const bounds: string[] = [];
  if (range.min !== undefined) bounds.push(`≥ ${range.min}`);
  if (range.above !== undefined) bounds.push(`> ${range.above}`);
  if (range.max !== undefined) bounds.push(`≤ ${range.max}`);
  return bounds.length > 0 ? `${kind} ${bounds.join(' and ')}` : kind;
}

/**
 * A numeric flag, or `undefined` when absent. `range` bounds it where the CLI knows the range (the error
 * message spells the bounds out); where a library checks it (and raises its own typed error), leave it out.
 */
export function numberFlag(
  name: string,
  value: string | undefined,
  range: NumberRange = {},
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  const expected = describeRange(range);
  if (value.trim() === '' || !Number.isFinite(parsed))
    throw new UsageError(`--${name} expects ${expected}, got "${value}"`);
  const inRange =
    (!range.integer || Number.isInteger(parsed)) &&
    (range.min === undefined || parsed >= range.min) &&
    (range.above === undefined || parsed > range.above) &&
    (range.max === undefined || parsed <= range.max);
  if (!inRange) throw new UsageError(`--${name} expects ${expected}, got ${value}`);
  return parsed;
}

/** A storage dtype flag (`f32`, `f16`, `bf16` or their long names), or `undefined` when absent. */
export function dtypeFlag(name: string, value: string | undefined): FloatDType | undefined {
  if (value === undefined) return undefined;
  const dtype = dtypes[value.toLowerCase()];
  if (!dtype) throw new UsageError(`--${name} expects f32, f16 or bf16, got "${value}"`);
  return dtype;
}

/** A flag that takes one of a fixed set of words. */
export function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} expects one of ${allowed.join(', ')}, got "${value}"`);
  }
  return value as T;
}

/** `--backend`: one of {@link backendKinds}. */
export function backendFlag(value: string | undefined): BackendKind {
  return oneOf('backend', value ?? 'auto', backendKinds);
}

/**
 * Checks a model directory argument before anything loads it: it exists, is a directory and holds a
 * `config.json`; a llama2.c checkpoint gets the import command as a hint.
 */
export async function modelDirArgument(dir: string): Promise<string> {
  const info = await stat(dir).catch(() => undefined);
  if (!info) throw new UsageError(`${dir}: no such model directory`);
  if (!info.isDirectory()) {
    const hint = dir.endsWith('.bin')
      ? `; a llama2.c checkpoint must be imported first: rrt import llama2c ${dir} --tokenizer <tok.bin> --out <dir>`
      : '; pass the directory that holds config.json and *.safetensors';
    throw new UsageError(`${dir}: is a file, not a model directory${hint}`);
  }
  if (!(await stat(resolve(dir, 'config.json')).catch(() => undefined))) {
    throw new UsageError(`${dir}: has no config.json, so it is not a model directory`);
  }
  return dir;
}

/**
 * Checks `--out` before any work: it is not an existing file, nor a non-empty directory unless `overwrite`, and no
 * part of the path above it is a file (where a directory could not be made). The writer checks again.
 */
export async function outputDirFlag(out: string | undefined, overwrite: boolean): Promise<string> {
  if (!out) throw new UsageError('--out <dir> is required');
  const target = resolve(out);
  const info = await stat(target).catch(() => undefined);
  if (info && !info.isDirectory()) throw new UsageError(`--out ${out}: is a file; give a directory path`);
  if (info && !overwrite && (await readdir(target)).length > 0) {
    throw new UsageError(`--out ${out}: exists; pass --overwrite to replace it`);
  }
  for (let parent = dirname(target); parent !== dirname(parent); parent = dirname(parent)) {
    const above = await stat(parent).catch(() => undefined);
    if (!above) continue;
    if (!above.isDirectory())
      throw new UsageError(`--out ${out}: ${parent} is a file, so no directory can be made under it`);
    break;
  }
  return out;
}

/**
 * The text of the file a `--text` flag names, read as UTF-8; a file that cannot be read is a usage
 * error naming the flag, the path and the reason (`ENOENT`, `EISDIR`, ...).
 */
export async function readTextFlag(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`--text ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
}
