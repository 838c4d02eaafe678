/**
 * Reading safetensors files lazily: opening reads only the length prefix and the header; each tensor is
 * read on demand with one positional read of its own byte range.
 *
 * @module
 */
import { type FileHandle, open } from 'node:fs/promises';
import { SafetensorsError } from '../errors.js';
import type { SafetensorsDType } from './dtype.js';
import { LENGTH_PREFIX_BYTES, parseHeader, readHeaderLength, type TensorInfo } from './header.js';

/** A tensor's raw little-endian bytes with its dtype and shape. */
export interface RawTensor {
  /** The tensor's name. */
  readonly name: string;
  /** Element type of `bytes`. */
  readonly dtype: SafetensorsDType;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /**
   * The data, little-endian, row-major. Tensors read from a file own a fresh buffer starting at offset
   * 0, so typed-array views of any dtype are aligned.
   */
  readonly bytes: Uint8Array;
}

/** An open safetensors file whose header has been validated. */
export interface SafetensorsFile {
  /** The path it was opened from. */
  readonly path: string;
  /** Size of the file in bytes. */
  readonly byteLength: number;
  /** Every tensor, in file order, with absolute offsets. */
  readonly entries: ReadonlyMap<string, TensorInfo>;
  /** The header's `__metadata__` map (`{}` when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Whether the file holds a tensor of this name. */
  has(name: string): boolean;
  /**
   * Reads one tensor's bytes with a positional read of its range only.
   *
   * @throws {@link SafetensorsError} when there is no such tensor, the file is closed, or the read fails
   */
  readTensor(name: string): Promise<RawTensor>;
  /** Closes the file handle. Idempotent; reads after it fail with a {@link SafetensorsError}. */
  close(): Promise<void>;
}

/**
 * Opens a safetensors file: reads the 8-byte header length and the JSON header, validates them fully
 * (see `parseHeader`), and keeps the handle open for {@link SafetensorsFile.readTensor}.
 *
 * @example
 * ```ts
 * const file = await openSafetensors('model.safetensors');
 * try {
 *   const embedding = await file.readTensor('model.embed_tokens.weight');
 *   const values = toFloat32(embedding); // F32, F16 or BF16 on disk
 * } finally {
 *   await file.close();
 * }
 * ```
 *
 * @throws {@link SafetensorsError} naming the file (and tensor / field) when it cannot be opened or is
 * not a valid safetensors file
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    throw new SafetensorsError(path, `cannot open: ${(cause as Error).message}`, { cause });
  }
  try {
    const { size } = await handle.stat();
    const prefix = await readRange(handle, 0, Math.min(size, LENGTH_PREFIX_BYTES), path, 'the header length');
    const headerLength = readHeaderLength(prefix, size, path);
    const headerBytes = await readRange(handle, LENGTH_PREFIX_BYTES, headerLength, path, 'the header');
    const header = parseHeader(headerBytes, size, path);
    return new OpenSafetensorsFile(path, handle, size, header.entries, header.metadata);
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
}

class OpenSafetensorsFile implements SafetensorsFile {
  private closed = false;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly byteLength: number,
    readonly entries: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  has(name: string): boolean {
    return this.entries.has(name);
  }

  async readTensor(name: string): Promise<RawTensor> {
    const info = this.entries.get(name);
    if (info === undefined) {
      throw new SafetensorsError(this.path, `no such tensor (the file has ${this.entries.size})`, {
        tensor: name,
      });
    }
    if (this.closed)
      throw new SafetensorsError(this.path, 'cannot read: the file is closed', { tensor: name });
    const bytes = await readRange(
      this.handle,
      info.byteOffset,
      info.byteLength,
      this.path,
      `tensor "${name}"`,
    );
    return { name, dtype: info.dtype, shape: info.shape, bytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

/** Largest single read or write: Node refuses lengths of 2 GiB and more, and tensors can be larger. */
export const MAX_IO_BYTES = 1 << 30;

/**
 * Reads exactly `length` bytes at `position` into a fresh buffer, looping over short reads. A file that
 * ends early (truncated after it was opened) is a {@link SafetensorsError}, as is any I/O error.
 */
async function readRange(
  handle: FileHandle,
  position: number,
  length: number,
  file: string,
  what: string,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(
        bytes,
        filled,
        Math.min(length - filled, MAX_IO_BYTES),
        position + filled,
      ));
    } catch (cause) {
      throw new SafetensorsError(file, `cannot read ${what}: ${(cause as Error).message}`, { cause });
    }
    if (bytesRead === 0) {
      throw new SafetensorsError(
        file,
        `the file ended at byte ${position + filled} while reading ${what} (bytes ${position}..${position + length}); was it truncated?`,
      );
    }
    filled += bytesRead;
  }
  return bytes;
}
