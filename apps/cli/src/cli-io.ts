/** What a command needs from its surroundings, so tests can run commands in-process. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether progress bars may redraw a line (a terminal on stderr). */
  interactive: boolean;
  /** Whether stdout is a terminal (colours may be used there); default false. */
  stdoutIsTerminal?: boolean;
  /** Width of the terminal on stderr, for progress lines (default 80). */
  columns?: number;
  /**
   * Aborted when the user interrupts (Ctrl-C, SIGTERM) or stdout's reader goes away (a closed pipe):
   * commands stop at the next safe point, remove partial output, and say so.
   */
  signal?: AbortSignal;
}

/** Why {@link CliIO.signal} was aborted; its `reason`. */
export class Interruption extends Error {
  constructor(
    /** `SIGINT`, `SIGTERM`, or `EPIPE` for a closed stdout. */
    readonly trigger: 'SIGINT' | 'SIGTERM' | 'EPIPE',
  ) {
    super(trigger === 'EPIPE' ? 'stdout was closed' : `interrupted (${trigger})`);
    this.name = 'Interruption';
  }

  /** The exit code a shell expects: 128 + the signal's number (SIGPIPE for a closed pipe). */
  get exitCode(): number {
    return { SIGINT: 130, SIGTERM: 143, EPIPE: 141 }[this.trigger];
  }
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

/**
 * Renders a progress bar on stderr, redrawn in place on a terminal, every 10% otherwise. Lines are cut to
 * the terminal's width so that they never wrap.
 */
export function progressReporter(
  io: CliIO,
  label: string,
): (done: number, total: number, detail?: string) => void {
  let lastDecile = -1;
  return (done, total, detail = '') => {
    const fraction = total > 0 ? done / total : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const full = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${detail}`;
    const columns = io.columns ?? 80;
    const line = full.length < columns ? full.trimEnd() : `${full.slice(0, columns - 2)}…`;
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
