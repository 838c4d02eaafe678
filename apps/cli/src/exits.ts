/**
 * `--exit` specs and `--show-exits` marks for commands that decode through the serving engine: a spec
 * becomes the engine's exit policy (one-line usage errors otherwise), and each printed piece of text is
 * coloured (a terminal) or marked (a pipe) by the loop its token exited at.
 */
import type { ExitPolicy } from '@rrt/batching';
import { UsageError } from './cli-io.js';
import { numberFlag } from './flags.js';

/** What `--exit` takes, as the help and the errors write it. */
export const exitSpecs = 'none | agreement | confidence:<τ>[@<loop>,…] (0 ≤ τ ≤ 1; loops 0-based)';

/**
 * Parses `--exit` (and `--min-loops`, which only confidence takes) into an exit policy; `undefined`
 * when `--exit` is absent.
 */
export function exitFlag(spec: string | undefined, minLoops: string | undefined): ExitPolicy | undefined {
  if (spec === undefined) {
    if (minLoops !== undefined) throw new UsageError('--min-loops needs --exit confidence:<τ>');
    return undefined;
  }
  const [kind, argument, ...rest] = spec.split(':');
  if (kind === 'confidence' && argument !== undefined && rest.length === 0) {
    // `τ@1,3`: exits checked at loops 1 and 3 only (what `rrt calibrate-exit --readout-cost` prints).
    const [threshold, checks, ...more] = argument.split('@');
    if (
      threshold!.trim() === '' ||
      !Number.isFinite(Number(threshold)) ||
      Number(threshold) < 0 ||
      Number(threshold) > 1
    ) {
      throw new UsageError(`--exit confidence:<τ> expects 0 ≤ τ ≤ 1, got "${threshold}"`);
    }
    const checkLoops = checks
      ?.split(',')
      .map((loop) => (/^\d+$/.test(loop.trim()) ? Number(loop) : Number.NaN));
    if (more.length > 0 || checkLoops?.some(Number.isNaN)) {
      throw new UsageError(
        `--exit confidence:<τ>@<loops> expects 0-based loops separated by commas (e.g. 0.9@1,3), got "${argument}"`,
      );
    }
    const loops = numberFlag('min-loops', minLoops, { integer: true, min: 1 });
    return {
      kind: 'confidence',
      threshold: Number(threshold),
      ...(loops === undefined ? {} : { minLoops: loops }),
      ...(checkLoops ? { checkLoops } : {}),
    };
  }
  if ((kind === 'none' || kind === 'agreement') && argument === undefined) {
    if (minLoops !== undefined)
      throw new UsageError(`--min-loops applies to --exit confidence:<τ>, not ${kind}`);
    return { kind };
  }
  if (kind === 'confidence')
    throw new UsageError(`--exit confidence needs a threshold: confidence:<τ>, got "${spec}"`);
  throw new UsageError(`--exit expects ${exitSpecs}, got "${spec}"`);
}

/** How `--show-exits` shows a token's exit loop: ANSI colours, or a subscript mark after it. */
export type ExitMarkStyle = 'colour' | 'mark';

/**
 * Colours on a terminal, marks otherwise. `NO_COLOR` (set and not empty) turns colours off;
 * `FORCE_COLOR` (set, not empty and not `0`) turns them on where stdout is not a terminal.
 */
export function exitMarkStyle(stdoutIsTerminal: boolean, env: NodeJS.ProcessEnv): ExitMarkStyle {
  if (env.NO_COLOR) return 'mark';
  if (env.FORCE_COLOR && env.FORCE_COLOR !== '0') return 'colour';
  return stdoutIsTerminal ? 'colour' : 'mark';
}

const subscripts = '₀₁₂₃₄₅₆₇₈₉';
/** Foreground colours from the earliest exit to the last loop: green (cheap) … red (full depth). */
const palette = [32, 36, 34, 35, 33, 31];

/** The 0-based exit loop as subscript digits (`12` → `₁₂`). */
export function subscript(loop: number): string {
  return String(loop).replace(/\d/g, (digit) => subscripts[Number(digit)]!);
}

/** ANSI colour code of `loop` of `loops`: the palette spread over the loops, the last loop red. */
function colourOf(loop: number, loops: number): number {
  const index = loops <= 1 ? palette.length - 1 : Math.round((loop / (loops - 1)) * (palette.length - 1));
  return palette[index]!;
}

/** `text` shown as exited at `loop` (of `loops`). */
export function markExit(text: string, loop: number, loops: number, style: ExitMarkStyle): string {
  if (text === '') return '';
  return style === 'colour' ? `\x1b[${colourOf(loop, loops)}m${text}\x1b[0m` : `${text}${subscript(loop)}`;
}

/** One line that says what the marks mean (for stderr). */
export function exitLegend(loops: number, style: ExitMarkStyle): string {
  const items = Array.from({ length: loops }, (_, loop) =>
    style === 'colour' ? markExit(`loop ${loop}`, loop, loops, style) : `${subscript(loop)} loop ${loop}`,
  );
  return `exit loops: ${items.join('  ')}`;
}

/** Counts of each exit loop `0 … loops − 1`. */
export function exitHistogram(exitLoops: readonly number[], loops: number): number[] {
  const counts = new Array<number>(loops).fill(0);
  for (const loop of exitLoops) counts[loop]!++;
  return counts;
}
