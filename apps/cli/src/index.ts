/**
 * The `rrt` command-line tool: thin argument parsing and progress around the rrt packages.
 *
 * @packageDocumentation
 */
import { type CliIO, type Command, UsageError } from './cli-io.js';
import { backendCommand } from './commands/backend.js';
import { convertCommand } from './commands/convert.js';
import { demoCommand } from './commands/demo.js';
import { exportCommand } from './commands/export.js';
import { generateCommand } from './commands/generate.js';
import { importCommand } from './commands/import.js';
import { inspectCommand } from './commands/inspect.js';
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
  trainCommand,
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
    'Example:',
    '  rrt demo',
  ].join('\n');
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
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(`${usage()}\n`);
    return name ? 0 : 2;
  }
  // Subcommands with a second word (`import llama2c`) are looked up by their first word.
  const command = commands.find((candidate) => candidate.name.split(' ')[0] === name);
  if (!command) {
    io.stderr(`rrt: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout(`${command.help}\n`);
    return 0;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    const isUsage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    io.stderr(`rrt ${name}: ${message}\n`);
    if (isUsage) io.stderr(`\n${command.help}\n`);
    return isUsage ? 2 : 1;
  }
}
