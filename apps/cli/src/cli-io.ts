/** What a command needs from its surroundings, so tests can run commands in-process. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether progress bars may redraw a line (a terminal on stderr). */
  interactive: boolean;
}

/** A failure the user caused (bad arguments); printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** One `rrt` subcommand. */
export interface Command {
  name: string;
  summary: string;
  /** Full `--help` text, with an example. */
  help: string;
  run(args: string[], io: CliIO): Promise<number>;
}

/** Renders a progress bar on stderr, redrawn in place on a terminal, every 10% otherwise. */
export function progressReporter(
  io: CliIO,
  label: string,
): (done: number, total: number, detail?: string) => void {
  let lastDecile = -1;
  return (done, total, detail = '') => {
    const fraction = total > 0 ? done / total : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${detail}`;
    if (io.interactive) {
      io.stderr(`\r\x1b[2K${line}${done >= total ? '\n' : ''}`);
    } else {
      const decile = Math.floor(fraction * 10);
      if (decile !== lastDecile || done >= total) {
        lastDecile = decile;
        io.stderr(`${line}\n`);
      }
    }
  };
}

/** Formats rows as an aligned text table. */
export function formatTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((row) => row.map(String))];
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column]!.length)));
  const line = (row: string[]) =>
    row
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join('  ')
      .trimEnd();
  return [
    line(cells[0]!),
    widths.map((width) => '-'.repeat(width)).join('  '),
    ...cells.slice(1).map(line),
  ].join('\n');
}
