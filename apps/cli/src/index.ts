/**
 * The `rrt` command-line tool: thin argument parsing and progress around the rrt packages.
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { InterruptedError, RrtError } from '@rrt/core';
import { type CliIO, type Command, Interruption, UsageError } from './cli-io.js';
import { backendCommand } from './commands/backend.js';
import { benchCommand } from './commands/bench.js';
import { calibrateExitCommand } from './commands/calibrate-exit.js';
import { convertCommand } from './commands/convert.js';
import { demoCommand } from './commands/demo.js';
import { evalCommand } from './commands/eval.js';
import { exportCommand } from './commands/export.js';
import { generateCommand } from './commands/generate.js';
import { importCommand } from './commands/import.js';
import { inspectCommand } from './commands/inspect.js';
import { pullCommand } from './commands/pull.js';
import { trainCommand } from './commands/train.js';

export type { CliIO, Command } from './cli-io.js';

const commands: Command[] = [
  demoCommand,
  backendCommand,
  importCommand,
  inspectCommand,
  generateCommand,
  convertCommand,
  exportCommand,
  pullCommand,
  evalCommand,
  trainCommand,
  calibrateExitCommand,
  benchCommand,
];

function usage(): string {
  const width = Math.max(...commands.map((command) => command.name.length));
  return [
    'rrt: Relaxed Recursive Transformers — convert, inspect and run decoder LLMs.',
    '',
    'Usage: rrt <command> [options]   (rrt <command> --help for details)',
    '',
    ...commands.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Options: --version, --help',
    '',
    'Example:',
    '  rrt demo',
  ].join('\n');
}

/** The version of this CLI, from its package.json. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Prints a failure in one line and returns its exit code: 2 for usage, 128 + n for a signal, else 1. */
function reportFailure(name: string, error: unknown, io: CliIO): number {
  const interruption = io.signal?.aborted ? io.signal.reason : undefined;
  if (error instanceof InterruptedError || (interruption instanceof Interruption && isAbort(error))) {
    const code = interruption instanceof Interruption ? interruption.exitCode : 130;
    if (!(interruption instanceof Interruption && interruption.trigger === 'EPIPE')) {
      io.stderr(`\nrrt ${name}: interrupted; nothing written\n`);
    }
    return code;
  }
  if (error instanceof UsageError) {
    io.stderr(`rrt ${name}: ${error.message}\n(see: rrt ${name} --help)\n`);
    return 2;
  }
  if (error instanceof RrtError) {
    io.stderr(`rrt ${name}: ${error.message}\n`);
    return 1;
  }
  const message = error instanceof Error ? error.message : String(error);
  io.stderr(`rrt ${name}: ${message}\n`);
  if (process.env.RRT_DEBUG) io.stderr(`${(error as Error).stack ?? ''}\n`);
  else if (!(error as { code?: string }).code)
    io.stderr('(unexpected: run with RRT_DEBUG=1 for the stack trace)\n');
  return 1;
}

function isAbort(error: unknown): boolean {
  return error instanceof Interruption || (error as { name?: string }).name === 'AbortError';
}

/**
 * Runs the CLI with `argv` (without the node and script paths) and returns the exit code.
 *
 * @example
 * ```ts
 * const code = await main(['backend', '--json'], { stdout: console.log, stderr: console.error, interactive: false });
 * ```
 */
export async function main(argv: string[], io: CliIO): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--version' || first === '-V') {
    io.stdout(`rrt ${version()}\n`);
    return 0;
  }
  // `rrt help convert` is `rrt convert --help`.
  const [name, args] = first === 'help' && rest.length > 0 ? [rest[0]!, ['--help']] : [first, rest];
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    (name ? io.stdout : io.stderr)(`${usage()}\n`);
    return name ? 0 : 2;
  }
  // Subcommands with a second word (`import llama2c`) are looked up by their first word.
  const command = commands.find((candidate) => candidate.name.split(' ')[0] === name);
  if (!command) {
    io.stderr(
      `rrt: unknown command "${name}"; commands: ${commands.map((c) => c.name.split(' ')[0]).join(', ')}\n`,
    );
    return 2;
  }
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout(`${command.help}\n`);
    return 0;
  }
  try {
    return await command.run(args, io);
  } catch (error) {
    return reportFailure(command.name.split(' ')[0]!, error, io);
  }
}
