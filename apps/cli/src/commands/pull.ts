import { type PulledModel, parseRepoReference, pullModel, RepoReferenceError } from '@rrt/hub';
import { type Command, formatTable, Interruption, UsageError } from '../cli-io.js';
import { parseFlags } from '../flags.js';
import { hubFlags, pullProgress } from '../model-argument.js';

/** Megabytes with one decimal, for progress and totals. */
function megabytes(bytes: number): number {
  return Math.round(bytes / 1e5) / 10;
}

function summary(pulled: PulledModel): string {
  const files = pulled.files ?? [];
  const count = (outcome: string) => files.filter((file) => file.outcome === outcome).length;
  const total = files.reduce((sum, file) => sum + file.size, 0);
  return [
    `${pulled.repoId}@${pulled.revision} (commit ${pulled.commit}) → ${pulled.directory}`,
    `  ${files.length} files, ${megabytes(total)} MB: ${count('downloaded')} downloaded, ${count('resumed')} resumed, ` +
      `${count('cached')} already cached; ${megabytes(pulled.downloadedBytes)} MB fetched`,
    '',
    formatTable(
      ['file', 'bytes', 'check', 'how'],
      files.map((file) => [file.path, file.size.toLocaleString('en-US'), file.algorithm, file.outcome]),
    ),
    '',
  ].join('\n');
}

export const pullCommand: Command = {
  name: 'pull',
  summary: 'download a model from the Hugging Face Hub into the local cache (resumable, hash-checked)',
  help: `rrt pull <repo-id>[@revision] [--cache-dir <dir>] [--hub-url <url>] [--include <glob>]... [--offline] [--json]

Downloads the model's config, tokenizer files and safetensors shards (the ones its index names) at the
revision (a branch, tag or commit; default main) into the cache shared with Python's huggingface_hub,
and prints the snapshot directory: a model directory like any other. Each file is checked against the
SHA-256 (LFS) or git SHA-1 the Hub lists; an interrupted download (Ctrl-C, a dropped connection) keeps
its partial file and the same command resumes it.

  --cache-dir   the cache (default RRT_CACHE, HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)
  --hub-url     the Hub or a mirror (default HF_ENDPOINT, https://huggingface.co)
  --include     glob of files to take instead of the default set (repeatable; "*" stays in one folder)
  --offline     never touch the network (also HF_HUB_OFFLINE=1): check the cache, say what is missing
HF_TOKEN is sent for gated and private repos.

Examples:
  rrt pull HuggingFaceTB/SmolLM2-135M
  rrt pull HuggingFaceTB/SmolLM2-135M --offline    # is it all in the cache? (no network)`,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, {
      options: {
        ...hubFlags,
        include: { type: 'string', multiple: true },
        json: { type: 'boolean', default: false },
      },
      positionals: ['<repo-id>'],
    });
    const reference = positionals[0]!;
    let repo: ReturnType<typeof parseRepoReference>;
    try {
      repo = parseRepoReference(reference);
    } catch (error) {
      if (error instanceof RepoReferenceError) throw new UsageError(error.message);
      throw error;
    }

    try {
      const pulled = await pullModel(repo, {
        cacheDir: values['cache-dir'],
        hubUrl: values['hub-url'],
        include: values.include,
        offline: values.offline,
        signal: io.signal,
        onProgress: pullProgress(io),
      });
      io.stdout(values.json ? `${JSON.stringify(pulled)}\n` : summary(pulled));
      return 0;
    } catch (error) {
      // Ctrl-C stops the transfer cleanly: the partial stays on disk for the next run to resume.
      if (!io.signal?.aborted) throw error;
      io.stderr(
        `\nrrt pull: interrupted; the partial download is kept and running the same command resumes it\n`,
      );
      return io.signal.reason instanceof Interruption ? io.signal.reason.exitCode : 130;
    }
  },
};
