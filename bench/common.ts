/** What the benchmarks share: the clock they measure with, and where the real model is. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { importLlama2c } from '@rrt/core';

/**
 * Milliseconds on `clock`: `cpu` is this process's CPU time (keeps other processes' turns out of a
 * measurement on a shared machine), `wall` elapsed time.
 */
export function clockMs(clock: string | undefined): () => number {
  if (clock === 'wall') return () => performance.now();
  return () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
}

/** `../shared/assets/stories260K` beside the checkout; exits quietly (a skip, not a failure) when absent. */
export function stories260KAssetsOrExit(bench: string): string {
  const assets = resolve(import.meta.dirname, '../../shared/assets/stories260K');
  if (!existsSync(join(assets, 'stories260K.bin'))) {
    console.log(`bench/${bench}: skipped, ../shared/assets/stories260K is absent`);
    process.exit(0);
  }
  return assets;
}

/** Imports stories260K from `assets` (its folder in ../shared) into `workDir`; returns the model directory. */
export async function importStories260K(assets: string, workDir: string): Promise<string> {
  const modelDir = join(workDir, 'stories260K');
  await importLlama2c({
    checkpointPath: join(assets, 'stories260K.bin'),
    tokenizerPath: join(assets, 'tok512.bin'),
    outDir: modelDir,
  });
  return modelDir;
}
