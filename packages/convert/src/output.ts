/**
 * The output side: a converted model is written into a hidden temporary directory next to the output
 * path and renamed into place only when complete, so an interrupted or failed conversion never leaves
 * anything at the output path. Tensors are produced lazily, group by group, as the writer asks for them.
 *
 * @module
 */
import { copyFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  createTempDirectory,
  InterruptedError,
  replaceDirectory,
  type TensorPlanEntry,
  type TensorToWrite,
  writeShardedCheckpoint,
} from '@rrt/core';
import { OutputExistsError } from './errors.js';

/** A directory being written; {@link PendingOutput.commit} moves it to the output path. */
export interface PendingOutput {
  /** Where files are written until the commit. */
  tempDir: string;
  /** Renames the temporary directory to the output path (replacing it when overwriting). */
  commit(): Promise<void>;
  /** Removes the temporary directory. Idempotent; a no-op after a commit. */
  discard(): Promise<void>;
}

/**
 * Creates the hidden temporary directory beside `outDir` (see `createTempDirectory` of `@rrt/core`).
 *
 * NOTE: a process killed with SIGKILL cannot clean up; it leaves that hidden directory behind, never
 * anything at `outDir`. `removeStaleTemporaries` of `@rrt/core` clears such leftovers.
 *
 * @throws {@link OutputExistsError} when `outDir` exists and `overwrite` is not set
 */
export async function prepareOutput(outDir: string, overwrite: boolean): Promise<PendingOutput> {
  const target = resolve(outDir);
  if (!overwrite && (await exists(target))) throw new OutputExistsError(outDir);
  const tempDir = await createTempDirectory(target);
  let state: 'open' | 'committed' | 'discarded' = 'open';
  return {
    tempDir,
    async commit() {
      if (await exists(target)) {
        if (!overwrite) throw new OutputExistsError(outDir);
        await replaceDirectory(tempDir, target, `${tempDir}-old`);
      } else {
        await rename(tempDir, target);
      }
      state = 'committed';
    },
    async discard() {
      if (state !== 'open') return;
      state = 'discarded';
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Files of a model directory that are weights or config, which conversions write themselves. */
function isModelFile(name: string): boolean {
  return (
    name === 'config.json' ||
    name.endsWith('.safetensors') ||
    name.endsWith('.safetensors.index.json') ||
    /\.(bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)$/.test(name) ||
    name.startsWith('.')
  );
}

/**
 * Copies every other top-level file of `sourceDir` (tokenizer files, `generation_config.json`, README,
 * licence...) into `destDir`. Returns the names copied.
 */
export async function copySideFiles(sourceDir: string, destDir: string): Promise<string[]> {
  const copied: string[] = [];
  for (const entry of await readdir(sourceDir, { withFileTypes: true })) {
    if (!entry.isFile() || isModelFile(entry.name)) continue;
    await copyFile(join(sourceDir, entry.name), join(destDir, entry.name));
    copied.push(entry.name);
  }
  return copied.sort();
}

/** Writes `config.json` (pretty-printed, trailing newline). */
export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<void> {
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/** Progress of a conversion or export, reported once per output tensor. */
export interface TensorProgress {
  /** Tensors produced so far, this one included. */
  done: number;
  /** Tensors in the output. */
  total: number;
  /** The tensor just produced. */
  tensor: string;
}

/**
 * An output plan whose tensors are produced in groups (one module of one layer, say) only when the
 * writer reaches them, so that memory holds one group at a time. The groups must be added in the order
 * their tensors are written, which is the order of {@link TensorStream.tensors}.
 */
export class TensorStream {
  readonly tensors: TensorToWrite[] = [];
  private readonly groups: { names: string[]; produce: () => Promise<Map<string, Uint8Array>> }[] = [];
  private ready = new Map<string, Uint8Array>();
  private nextGroup = 0;
  private produced = 0;

  /**
   * @param operation what is written, named by the {@link InterruptedError} an abort raises
   * @param signal checked before each group is produced
   */
  constructor(
    private readonly operation: string,
    private readonly onProgress?: (progress: TensorProgress) => void,
    private readonly signal?: AbortSignal,
  ) {}

  /** Adds a group: its tensors' plan entries and a function that returns all their bytes by name. */
  add(entries: readonly TensorPlanEntry[], produce: () => Promise<Map<string, Uint8Array>>): void {
    this.groups.push({ names: entries.map((entry) => entry.name), produce });
    for (const entry of entries) this.tensors.push({ ...entry, bytes: () => this.take(entry.name) });
  }

  private async take(name: string): Promise<Uint8Array> {
    if (!this.ready.has(name)) {
      if (this.signal?.aborted) throw new InterruptedError(this.operation, { cause: this.signal.reason });
      const group = this.groups[this.nextGroup++];
      if (this.ready.size > 0 || !group || group.names[0] !== name) {
        throw new Error(`internal: tensor ${name} requested out of plan order`);
      }
      this.ready = await group.produce();
    }
    const bytes = this.ready.get(name)!;
    this.ready.delete(name);
    this.produced += 1;
    this.onProgress?.({ done: this.produced, total: this.tensors.length, tensor: name });
    return bytes;
  }
}

/** Largest shard written when the caller sets none (the Hugging Face default). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** Where and how {@link writeModelDirectory} writes. */
export interface ModelDirectoryTarget {
  outDir: string;
  /** Replace an existing `outDir` (default false: an existing one is an {@link OutputExistsError}). */
  overwrite?: boolean;
  /** Largest shard (default {@link DEFAULT_MAX_SHARD_BYTES}). */
  maxShardBytes?: number;
}

/**
 * Writes a converted model to a temporary directory beside `target.outDir` and commits it: the tensors
 * (streamed), then `config.json` and the side files of `sourceDir`, then, once `assertSourceUnchanged`
 * passes, the rename. On any failure the temporary directory is removed and the error rethrown (a failure
 * explained by the source having changed is reported as that). Returns the side files copied.
 */
export async function writeModelDirectory(
  target: ModelDirectoryTarget,
  sourceDir: string,
  tensors: readonly TensorToWrite[],
  config: Record<string, unknown>,
  assertSourceUnchanged: () => Promise<void>,
): Promise<string[]> {
  const output = await prepareOutput(target.outDir, target.overwrite ?? false);
  const maxShardBytes = target.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  try {
    await writeShardedCheckpoint(output.tempDir, tensors, { maxShardBytes });
    await writeConfig(output.tempDir, config);
    let copied: string[];
    try {
      copied = await copySideFiles(sourceDir, output.tempDir);
    } catch (error) {
      await assertSourceUnchanged();
      throw error;
    }
    await assertSourceUnchanged();
    await output.commit();
    return copied;
  } catch (error) {
    await output.discard();
    throw error;
  }
}
