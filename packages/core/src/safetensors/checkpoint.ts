/**
 * Hugging Face checkpoints: one `model.safetensors`, or shards listed by `model.safetensors.index.json`
 * (`weight_map`: tensor name → shard file). Reading presents the shards as one set of tensors; writing
 * splits tensors into shards of a maximum size.
 *
 * @module
 */
import { readFile, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsError } from '../errors.js';
import { SAFETENSORS_DTYPE_BYTES } from './dtype.js';
import { elementCount, type TensorInfo } from './header.js';
import { openSafetensors, type RawTensor, type SafetensorsFile } from './reader.js';
import { type TensorToWrite, writeFileAtomically, writeSafetensors } from './writer.js';

/** File name of a single-file checkpoint. */
export const SINGLE_FILE_NAME = 'model.safetensors';
/** File name of the shard index of a sharded checkpoint. */
export const INDEX_FILE_NAME = 'model.safetensors.index.json';

/** A tensor of a checkpoint: where it lies, and in which shard. */
export interface CheckpointTensorInfo extends TensorInfo {
  /** Path of the shard file that holds it. */
  readonly file: string;
}

/** An open checkpoint directory: every tensor of every shard, read on demand. */
export interface Checkpoint {
  /** The checkpoint directory. */
  readonly path: string;
  /** Path of the shard index, or `undefined` for a single-file checkpoint. */
  readonly indexFile: string | undefined;
  /** The open shard files (one for a single-file checkpoint), in file-name order. */
  readonly shards: readonly SafetensorsFile[];
  /** Every tensor of every shard, shard by shard in file order. */
  readonly entries: ReadonlyMap<string, CheckpointTensorInfo>;
  /** Whether the checkpoint holds a tensor of this name. */
  has(name: string): boolean;
  /**
   * Reads one tensor from its shard (one positional read).
   *
   * @throws {@link SafetensorsError} when there is no such tensor or the read fails
   */
  readTensor(name: string): Promise<RawTensor>;
  /** Closes every shard. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens a checkpoint directory: the shards of `model.safetensors.index.json` when it exists, otherwise
 * `model.safetensors`. Every shard's header is validated, and the index is checked against them: each
 * listed shard must exist, each listed tensor must be in the shard named for it, and no shard may hold a
 * tensor that the index does not map to it (a tensor in two shards, or one the index does not list).
 *
 * @example
 * ```ts
 * const checkpoint = await openCheckpoint('models/llama');
 * try {
 *   for (const [name, info] of checkpoint.entries) console.log(name, info.dtype, info.shape);
 *   const raw = await checkpoint.readTensor('lm_head.weight');
 * } finally {
 *   await checkpoint.close();
 * }
 * ```
 *
 * @throws {@link SafetensorsError} naming the index or shard file (and tensor) that is wrong
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const indexFile = join(dir, INDEX_FILE_NAME);
  const indexText = await readFile(indexFile, 'utf8').catch((cause: NodeJS.ErrnoException) => {
    if (cause.code === 'ENOENT') return undefined;
    throw new SafetensorsError(indexFile, `cannot read: ${cause.message}`, { cause });
  });
  if (indexText === undefined) {
    const single = join(dir, SINGLE_FILE_NAME);
    const file = await openSafetensors(single).catch((error: unknown) => {
      if (error instanceof SafetensorsError && (error.cause as NodeJS.ErrnoException)?.code === 'ENOENT') {
        throw new SafetensorsError(dir, `holds neither ${INDEX_FILE_NAME} nor ${SINGLE_FILE_NAME}`, {
          cause: error,
        });
      }
      throw error;
    });
    const entries = new Map<string, CheckpointTensorInfo>();
    for (const [name, info] of file.entries) entries.set(name, { ...info, file: file.path });
    return new OpenCheckpoint(dir, undefined, [file], entries);
  }

  const weightMap = parseIndex(indexText, indexFile);
  const shardNames = [...new Set(weightMap.values())].sort();
  const shards: SafetensorsFile[] = [];
  try {
    for (const shardName of shardNames) {
      const shardPath = join(dir, shardName);
      shards.push(
        await openSafetensors(shardPath).catch((error: unknown) => {
          const code =
            error instanceof SafetensorsError ? (error.cause as NodeJS.ErrnoException)?.code : undefined;
          if (code === 'ENOENT') {
            throw new SafetensorsError(
              indexFile,
              `lists shard ${JSON.stringify(shardName)}, which does not exist`,
              {
                field: 'weight_map',
                cause: error,
              },
            );
          }
          throw error;
        }),
      );
    }
    const byShardName = new Map(shardNames.map((name, index) => [name, shards[index]!]));
    for (const [tensor, shardName] of weightMap) {
      if (!byShardName.get(shardName)!.has(tensor)) {
        throw new SafetensorsError(
          indexFile,
          `is mapped to shard ${JSON.stringify(shardName)}, which does not hold it`,
          {
            tensor,
            field: 'weight_map',
          },
        );
      }
    }
    const entries = new Map<string, CheckpointTensorInfo>();
    for (const [index, shard] of shards.entries()) {
      const shardName = shardNames[index]!;
      for (const [name, info] of shard.entries) {
        const mapped = weightMap.get(name);
        if (mapped === undefined) {
          throw new SafetensorsError(
            indexFile,
            `is stored in shard ${JSON.stringify(shardName)} but not listed`,
            {
              tensor: name,
              field: 'weight_map',
            },
          );
        }
        if (mapped !== shardName) {
          throw new SafetensorsError(
            indexFile,
            `is stored in two shards, ${JSON.stringify(mapped)} (as listed) and ${JSON.stringify(shardName)}`,
            { tensor: name, field: 'weight_map' },
          );
        }
        entries.set(name, { ...info, file: shard.path });
      }
    }
    return new OpenCheckpoint(dir, indexFile, shards, entries);
  } catch (error) {
    await Promise.all(shards.map((shard) => shard.close().catch(() => undefined)));
    throw error;
  }
}

/** Parses the index's `weight_map`; shard names must be plain file names inside the directory. */
function parseIndex(text: string, indexFile: string): Map<string, string> {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (cause) {
    throw new SafetensorsError(indexFile, `is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof root !== 'object' || root === null || Array.isArray(root)) {
    throw new SafetensorsError(indexFile, 'expected a JSON object with a "weight_map"');
  }
  const weightMap = (root as Record<string, unknown>)['weight_map'];
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new SafetensorsError(indexFile, 'expected an object mapping tensor names to shard files', {
      field: 'weight_map',
    });
  }
  const result = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    // A shard name with a path in it could point outside the checkpoint; refuse it.
    if (typeof shard !== 'string' || shard === '' || /[/\\]/.test(shard) || shard === '.' || shard === '..') {
      throw new SafetensorsError(
        indexFile,
        `expected a shard file name in the same directory, got ${JSON.stringify(shard)}`,
        {
          tensor,
          field: 'weight_map',
        },
      );
    }
    result.set(tensor, shard);
  }
  return result;
}

class OpenCheckpoint implements Checkpoint {
  constructor(
    readonly path: string,
    readonly indexFile: string | undefined,
    readonly shards: readonly SafetensorsFile[],
    readonly entries: ReadonlyMap<string, CheckpointTensorInfo>,
  ) {}

  has(name: string): boolean {
    return this.entries.has(name);
  }

  readTensor(name: string): Promise<RawTensor> {
    const info = this.entries.get(name);
    if (info === undefined) {
      return Promise.reject(
        new SafetensorsError(
          this.indexFile ?? this.path,
          `no such tensor (the checkpoint has ${this.entries.size})`,
          {
            tensor: name,
          },
        ),
      );
    }
    return this.shards.find((shard) => shard.path === info.file)!.readTensor(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.close()));
  }
}

/** Options of {@link writeShardedCheckpoint}. */
export interface ShardingOptions {
  /**
   * Most tensor bytes per shard (headers not counted, as in Hugging Face's `max_shard_size`). A tensor
   * larger than this gets a shard of its own.
   */
  readonly maxShardBytes: number;
  /**
   * `__metadata__` of every shard. Defaults to `{ format: 'pt' }`, which `transformers` expects; a
   * given map without `format` gets `format: 'pt'` added.
   */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** What {@link writeShardedCheckpoint} wrote. */
export interface WrittenCheckpoint {
  /** Paths of the safetensors files, in order. */
  readonly files: readonly string[];
  /** Path of the index, or `undefined` when everything fit in one `model.safetensors`. */
  readonly indexFile: string | undefined;
  /** Total tensor bytes (the index's `metadata.total_size`). */
  readonly totalBytes: number;
}

/**
 * Writes tensors as a Hugging Face checkpoint in `dir` (created if needed): one `model.safetensors` when
 * they fit in `maxShardBytes`, otherwise `model-00001-of-0000n.safetensors` ... plus
 * `model.safetensors.index.json`. Tensors keep their order, filling shards greedily. Each shard is written
 * atomically and the index last, so a crash never leaves an index that points at missing data; if a shard
 * fails, the shards this call already wrote are removed. A stale index in `dir` is removed when a single
 * file is written, so the directory never describes two checkpoints.
 *
 * @example
 * ```ts
 * await writeShardedCheckpoint('out', tensors, { maxShardBytes: 2 * 1024 ** 3 });
 * const checkpoint = await openCheckpoint('out');
 * ```
 */
export async function writeShardedCheckpoint(
  dir: string,
  tensors: readonly TensorToWrite[],
  options: ShardingOptions,
): Promise<WrittenCheckpoint> {
  const { maxShardBytes } = options;
  if (!(maxShardBytes > 0)) {
    throw new SafetensorsError(dir, `maxShardBytes must be positive, got ${maxShardBytes}`);
  }
  const metadata = { format: 'pt', ...options.metadata };
  const groups: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [];
  let currentBytes = 0;
  let totalBytes = 0;
  for (const tensor of tensors) {
    // Sizes from the plan; the writer checks the shape and dtype and the actual byte count.
    const bytes = elementCount(tensor.shape) * (SAFETENSORS_DTYPE_BYTES[tensor.dtype] ?? 0);
    if (current.length > 0 && currentBytes + bytes > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(tensor);
    currentBytes += bytes;
    totalBytes += bytes;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);

  await mkdir(dir, { recursive: true }).catch((cause: Error) => {
    throw new SafetensorsError(dir, `cannot create the directory: ${cause.message}`, { cause });
  });
  const indexFile = join(dir, INDEX_FILE_NAME);
  if (groups.length === 1) {
    const file = join(dir, SINGLE_FILE_NAME);
    await writeSafetensors(file, groups[0]!, metadata);
    await rm(indexFile, { force: true });
    return { files: [file], indexFile: undefined, totalBytes };
  }

  const count = String(groups.length).padStart(5, '0');
  const names = groups.map(
    (_, index) => `model-${String(index + 1).padStart(5, '0')}-of-${count}.safetensors`,
  );
  const written: string[] = [];
  try {
    for (const [index, group] of groups.entries()) {
      const file = join(dir, names[index]!);
      await writeSafetensors(file, group, metadata);
      written.push(file);
    }
    const weightMap: Record<string, string> = {};
    const sorted = groups.flatMap((group, index) =>
      group.map((tensor) => [tensor.name, names[index]!] as const),
    );
    sorted.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [name, shard] of sorted) weightMap[name] = shard;
    const index = { metadata: { total_size: totalBytes }, weight_map: weightMap };
    await writeFileAtomically(indexFile, `${JSON.stringify(index, null, 2)}\n`);
  } catch (error) {
    await Promise.all(written.map((file) => rm(file, { force: true })));
    throw error;
  }
  return { files: written, indexFile, totalBytes };
}
