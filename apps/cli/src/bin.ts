#!/usr/bin/env node
import { Interruption } from './cli-io.js';
import { main } from './index.js';

// The first Ctrl-C (or SIGTERM) asks the running command to stop at its next safe point: a generation
// keeps its text so far, a conversion removes its temporary output. A second one ends the process at once.
const controller = new AbortController();
const interrupt = (trigger: 'SIGINT' | 'SIGTERM') => {
  if (controller.signal.aborted) {
    process.stderr.write('\nrrt: interrupted again; exiting now\n');
    process.exit(new Interruption(trigger).exitCode);
  }
  controller.abort(new Interruption(trigger));
};
process.on('SIGINT', () => interrupt('SIGINT'));
process.on('SIGTERM', () => interrupt('SIGTERM'));

// A reader that goes away (`rrt generate … | head`) is no error to print: the command stops as if
// interrupted (a conversion removes its partial output) and exits quietly, as with SIGPIPE.
const open = { stdout: true, stderr: true };
for (const name of ['stdout', 'stderr'] as const) {
  process[name].on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    open[name] = false;
    if (!controller.signal.aborted) controller.abort(new Interruption('EPIPE'));
  });
}

const code = await main(process.argv.slice(2), {
  stdout: (text) => {
    if (open.stdout) process.stdout.write(text);
  },
  stderr: (text) => {
    if (open.stderr) process.stderr.write(text);
  },
  interactive: process.stderr.isTTY === true,
  stdoutIsTerminal: process.stdout.isTTY === true,
  columns: process.stderr.isTTY ? process.stderr.columns : undefined,
  signal: controller.signal,
});
process.exitCode = code;
