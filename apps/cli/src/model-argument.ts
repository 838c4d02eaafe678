/** Where a command's model comes from: a local directory, or a Hub repo id pulled into the cache. */
import {
  HubOfflineError,
  HubRequestError,
  type PullProgress,
  RepoReferenceError,
  resolveModelReference,
} from '@rrt/hub';
import { type CliIO, progressReporter, UsageError } from './cli-io.js';
import { modelDirArgument } from './flags.js';

/** The flags of every command that takes a model: how to reach the Hub when it names a repo id. */
export const hubFlags = {
  offline: { type: 'boolean' },
  'hub-url': { type: 'string' },
  'cache-dir': { type: 'string' },
} as const;

/** Values of {@link hubFlags} as parsed. */
export interface HubFlagValues {
  offline?: boolean;
  'hub-url'?: string;
  'cache-dir'?: string;
}

/** A progress callback for pulls that redraws at most once per 0.1 % (and per file), not per network chunk. */
export function pullProgress(io: CliIO): (event: PullProgress) => void {
  const progress = progressReporter(io, 'pull');
  let shown = '';
  return (event) => {
    const key = `${event.file}:${Math.floor((1000 * event.bytes) / Math.max(event.totalBytes, 1))}`;
    if (key === shown) return;
    shown = key;
    progress(event.bytes, event.totalBytes, `bytes ${event.file}`);
  };
}

/**
 * The model directory for what the user typed: an existing path as it is, otherwise a Hub repo id
 * (`owner/name[@revision]`), served from the cache or pulled (with a progress bar), then checked to hold
 * a `config.json`. Leaving `--offline` out lets `HF_HUB_OFFLINE` decide.
 */
export async function modelArgument(reference: string, values: HubFlagValues, io: CliIO): Promise<string> {
  let resolved: Awaited<ReturnType<typeof resolveModelReference>>;
  try {
    resolved = await resolveModelReference(reference, {
      offline: values.offline,
      hubUrl: values['hub-url'],
      cacheDir: values['cache-dir'],
      signal: io.signal,
      onProgress: pullProgress(io),
    });
  } catch (error) {
    if (error instanceof RepoReferenceError) throw new UsageError(error.message);
    // Most often a mistyped local path that also reads as a repo id: say both readings.
    if (error instanceof HubRequestError || error instanceof HubOfflineError) {
      throw new UsageError(
        `${reference}: no such model directory, and as a Hub repo id: ${error.message.replace(`${reference}: `, '')}`,
      );
    }
    throw error;
  }
  if (resolved.source.kind === 'hub') {
    io.stderr(
      `model: ${reference} → ${resolved.directory} (commit ${resolved.source.commit.slice(0, 12)})\n`,
    );
  }
  return modelDirArgument(resolved.directory);
}
