import type { CliIO } from '../src/cli-io.js';

/** A {@link CliIO} that collects what a command writes, for running commands in-process in tests. */
export function capture(onStderr: (text: string) => void = () => {}): CliIO & { out: string; err: string } {
  const io = {
    out: '',
    err: '',
    interactive: false,
    stdout: (text: string) => {
      io.out += text;
    },
    stderr: (text: string) => {
      io.err += text;
      onStderr(text);
    },
  };
  return io;
}
