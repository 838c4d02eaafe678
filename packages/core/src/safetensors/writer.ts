/**
 * Writing safetensors files by streaming, atomically: the header is computed from a plan up front, tensor
 * data is written to a temporary file as it arrives, and only a complete, fsynced file is renamed into
 * place. A crash or an error leaves at most a `<path>.tmp-<random>` file, never a partial `<path>`.
 *
 * NOTE: stale temporary files (from a killed process) are not removed automatically: a writer cannot
 * tell a dead writer's file from a live one writing the same path. {@link removeStaleTempFiles} removes
 * them on request, for callers that know no other writer is running.
 *
 * This module does not import a tensor package: it deals in bytes only.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { SafetensorsError } from '../errors.js';
import { buildHeader, type TensorInfo, type TensorPlanEntry } from './header.js';
import { MAX_IO_BYTES } from './reader.js';

/** A safetensors file being written. Calls must follow the plan; any error discards the file. */
export interface SafetensorsWriter {
  /** The final path, which exists only after a successful {@link SafetensorsWriter.close}. */
  readonly path: string;
  /** The temporary file written until then. */
  readonly tempPath: string;
  /**
   * Writes the next tensor's bytes. Tensors must come in plan order, each with exactly its planned byte
   * length; otherwise the writer is aborted (temporary file removed) and this rejects with a
   * {@link SafetensorsError}. Calls may overlap; `bytes` must not change until the promise settles.
   */
  write(name: string, bytes: Uint8Array): Promise<void>;
  /**
   * Checks that every planned tensor was written, fsyncs, and renames the file into place. Rejects (and
   * discards the file) when tensors are missing. Idempotent once it succeeded.
   */
  close(): Promise<void>;
  /** Discards the temporary file. Idempotent; a no-op after a successful close. */
  abort(): Promise<void>;
}

/** Prefix of the suffix that temporary files carry: `<path>.tmp-<12 hex digits>`. */
export const TEMP_SUFFIX = '.tmp-';

/**
 * Starts writing a safetensors file: validates the plan, creates `<path>.tmp-<random>` and writes the
 * header. Tensors are laid out contiguously in plan order.
 *
 * @example
 * ```ts
 * const writer = await createSafetensorsWriter('out/model.safetensors', [
 *   { name: 'embed', dtype: 'F32', shape: [512, 64] },
 *   { name: 'norm', dtype: 'BF16', shape: [64] },
 * ], { format: 'pt' });
 * try {
 *   await writer.write('embed', float32Bytes(embedding));
 *   await writer.write('norm', encodeAs(norm, 'BF16'));
 *   await writer.close();
 * } catch (error) {
 *   await writer.abort();
 *   throw error;
 * }
 * ```
 *
 * @throws {@link SafetensorsError} naming `path` (and the tensor) for an invalid plan or metadata, or when
 * the temporary file cannot be created
 */
export async function createSafetensorsWriter(
  path: string,
  plan: readonly TensorPlanEntry[],
  metadata?: Readonly<Record<string, string>>,
): Promise<SafetensorsWriter> {
  const header = buildHeader(plan, metadata, path);
  const tempPath = `${path}${TEMP_SUFFIX}${randomBytes(6).toString('hex')}`;
  let handle: FileHandle;
  try {
    handle = await open(tempPath, 'wx');
  } catch (cause) {
    throw new SafetensorsError(path, `cannot create ${tempPath}: ${(cause as Error).message}`, { cause });
  }
  try {
    await writeFully(handle, header.bytes, 0);
  } catch (cause) {
    await handle.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw new SafetensorsError(path, `cannot write the header: ${(cause as Error).message}`, { cause });
  }
  return new StreamingWriter(path, tempPath, handle, header.layout);
}

type WriterState = 'open' | 'closing' | 'closed' | 'discarded';

class StreamingWriter implements SafetensorsWriter {
  private state: WriterState = 'open';
  private nextIndex = 0;
  /** Serializes the I/O so that close and cleanup run after every write already accepted. */
  private queue: Promise<void> = Promise.resolve();
  private discarding: Promise<void> | undefined;
  private discardReason = '';

  constructor(
    readonly path: string,
    readonly tempPath: string,
    private readonly handle: FileHandle,
    private readonly layout: readonly TensorInfo[],
  ) {}

  async write(name: string, bytes: Uint8Array): Promise<void> {
    this.assertOpen('write', name);
    const slot = this.layout[this.nextIndex];
    if (slot === undefined) {
      return this.fail(
        new SafetensorsError(this.path, `all ${this.layout.length} planned tensors were already written`, {
          tensor: name,
        }),
      );
    }
    if (slot.name !== name) {
      const planned = this.layout.some((entry) => entry.name === name);
      return this.fail(
        new SafetensorsError(
          this.path,
          planned
            ? `written out of plan order: expected tensor ${JSON.stringify(slot.name)} (number ${this.nextIndex + 1} of ${this.layout.length}) next`
            : `is not in the plan; expected tensor ${JSON.stringify(slot.name)} next`,
          { tensor: name },
        ),
      );
    }
    if (bytes.byteLength !== slot.byteLength) {
      return this.fail(
        new SafetensorsError(
          this.path,
          `got ${bytes.byteLength} bytes, expected ${slot.byteLength} (${slot.dtype} × shape [${slot.shape.join(', ')}])`,
          { tensor: name },
        ),
      );
    }
    this.nextIndex += 1;
    try {
      await this.enqueue(() => writeFully(this.handle, bytes, slot.byteOffset));
    } catch (cause) {
      return this.fail(
        new SafetensorsError(this.path, `cannot write: ${(cause as Error).message}`, { tensor: name, cause }),
      );
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.assertOpen('close');
    if (this.nextIndex < this.layout.length) {
      const missing = this.layout.slice(this.nextIndex).map((entry) => entry.name);
      const shown = missing.slice(0, 3).map((name) => JSON.stringify(name));
      return this.fail(
        new SafetensorsError(
          this.path,
          `closed after ${this.nextIndex} of ${this.layout.length} planned tensors; missing ${shown.join(', ')}${missing.length > 3 ? ', ...' : ''}`,
        ),
      );
    }
    this.state = 'closing';
    try {
      await this.enqueue(async () => {
        await this.handle.sync();
        await this.handle.close();
        await rename(this.tempPath, this.path);
      });
    } catch (cause) {
      return this.fail(
        new SafetensorsError(this.path, `cannot finish: ${(cause as Error).message}`, { cause }),
      );
    }
    this.state = 'closed';
    // Make the rename itself durable; best effort, since not every platform can fsync a directory.
    await syncDirectory(dirname(this.path));
  }

  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    if (this.state === 'closing') {
      // A close in flight decides the outcome; wait for it, then discard if it did not finish.
      await this.queue;
      // close() may have moved the state on while we waited; TypeScript cannot see that.
      if ((this.state as WriterState) === 'closed') return;
    }
    await this.discard('aborted');
  }

  private assertOpen(action: string, tensor?: string): void {
    if (this.state === 'open') return;
    const why =
      this.state === 'discarded' ? `the writer was ${this.discardReason}` : 'the writer is closing or closed';
    throw new SafetensorsError(this.path, `cannot ${action}: ${why}`, tensor === undefined ? {} : { tensor });
  }

  /** Discards the file, then rejects with `error`: a failed writer never leaves a file behind. */
  private async fail(error: SafetensorsError): Promise<never> {
    await this.discard(`aborted after an error (${error.message})`);
    throw error;
  }

  private discard(reason: string): Promise<void> {
    if (this.discarding === undefined) {
      this.state = 'discarded';
      this.discardReason = reason;
      // Queued after every accepted write, so no write lands after the file is removed.
      this.discarding = this.queue.then(async () => {
        await this.handle.close().catch(() => undefined);
        await rm(this.tempPath, { force: true });
      });
    }
    return this.discarding;
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    const result = this.queue.then(operation);
    // Keep the queue usable after a failure; the failure itself is reported through `result`.
    this.queue = result.catch(() => undefined);
    return result;
  }
}

/** The contents of one tensor to write: bytes now, or a function that produces them when their turn comes. */
export interface TensorToWrite extends TensorPlanEntry {
  /**
   * Little-endian, row-major bytes. A function is called only when the tensor is about to be written,
   * so a caller can stream tensors without holding them all in memory.
   */
  readonly bytes: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/**
 * Writes a whole safetensors file atomically (see {@link createSafetensorsWriter}).
 *
 * @example
 * ```ts
 * await writeSafetensors('model.safetensors', [
 *   { name: 'w', dtype: 'F16', shape: [2, 2], bytes: encodeAs(new Float32Array([1, 2, 3, 4]), 'F16') },
 * ]);
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const writer = await createSafetensorsWriter(path, tensors, metadata);
  try {
    for (const tensor of tensors) {
      const bytes = typeof tensor.bytes === 'function' ? await tensor.bytes() : tensor.bytes;
      await writer.write(tensor.name, bytes);
    }
    await writer.close();
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

/**
 * Removes `<path>.tmp-*` files that a killed writer of `path` left behind. Call it only when no other
 * writer of `path` can be running. Returns the paths removed.
 */
export async function removeStaleTempFiles(path: string): Promise<string[]> {
  const dir = dirname(path);
  const prefix = `${basename(path)}${TEMP_SUFFIX}`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    throw new SafetensorsError(dir, `cannot list the directory: ${(cause as Error).message}`, { cause });
  }
  const stale = names.filter((name) => name.startsWith(prefix)).map((name) => join(dir, name));
  await Promise.all(stale.map((file) => rm(file, { force: true })));
  return stale;
}

/**
 * Writes a small text file through a temporary file, fsync and rename, like the tensor writer.
 *
 * @internal used for the checkpoint index
 */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const tempPath = `${path}${TEMP_SUFFIX}${randomBytes(6).toString('hex')}`;
  try {
    const handle = await open(tempPath, 'wx');
    try {
      await writeFully(handle, new TextEncoder().encode(text), 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tempPath, path);
  } catch (cause) {
    await rm(tempPath, { force: true });
    throw new SafetensorsError(path, `cannot write: ${(cause as Error).message}`, { cause });
  }
  await syncDirectory(dirname(path));
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      written,
      Math.min(bytes.byteLength - written, MAX_IO_BYTES),
      position + written,
    );
    written += bytesWritten;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Directories cannot be opened or fsynced on some platforms (Windows); the rename has happened.
  }
}
