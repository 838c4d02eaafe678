/**
 * The safetensors header: parsing with full validation, and building one from a write plan. Pure
 * functions over bytes; the file I/O lives in `reader.ts` and `writer.ts`.
 *
 * Layout of a file: 8 bytes N (little-endian u64), N bytes of UTF-8 JSON, then the data section.
 *
 * @module
 */
import { SafetensorsError } from '../errors.js';
import { isSafetensorsDType, SAFETENSORS_DTYPE_BYTES, type SafetensorsDType } from './dtype.js';

/** Bytes of the length prefix that starts every safetensors file. */
export const LENGTH_PREFIX_BYTES = 8;

/** The largest header accepted, as in the reference implementation (100 MB); larger is taken as corrupt. */
export const MAX_HEADER_BYTES = 100_000_000;

/** The header key reserved for the free-form string→string metadata map. */
export const METADATA_KEY = '__metadata__';

/** Where one tensor lies in a safetensors file. */
export interface TensorInfo {
  /** The tensor's name (its key in the header). */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDType;
  /** Dimensions, outermost first; `[]` is a scalar. */
  readonly shape: readonly number[];
  /** Offset of the first byte, from the start of the file (not of the data section). */
  readonly byteOffset: number;
  /** Number of bytes: the dtype's size times the product of the shape. */
  readonly byteLength: number;
}

/** A validated header. */
export interface ParsedHeader {
  /** Tensors in file order (by offset). */
  readonly entries: ReadonlyMap<string, TensorInfo>;
  /** The `__metadata__` map, `{}` when the header has none. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Offset of the data section from the start of the file: 8 + the header length. */
  readonly dataStart: number;
}

/**
 * Validates the 8-byte length prefix against the file size and returns the header length N.
 *
 * @param prefix - the first bytes of the file (at least 8 when the file has 8)
 * @param fileSize - the size of the whole file in bytes
 * @param file - the file name used in error messages
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < LENGTH_PREFIX_BYTES || prefix.byteLength < LENGTH_PREFIX_BYTES) {
    throw new SafetensorsError(
      file,
      `file is ${fileSize} bytes; a safetensors file starts with an 8-byte header length`,
    );
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, LENGTH_PREFIX_BYTES).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      file,
      `header length ${length} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt length prefix?)`,
    );
  }
  const headerLength = Number(length);
  if (headerLength > fileSize - LENGTH_PREFIX_BYTES) {
    throw new SafetensorsError(
      file,
      `header length ${headerLength} bytes runs past the end of the file (${fileSize} bytes, so at most ${fileSize - LENGTH_PREFIX_BYTES})`,
    );
  }
  return headerLength;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses and validates a header.
 *
 * NOTE: tensors must tile the data section exactly: sorted by offset, the first starts at 0, each
 * starts where the previous one ends, and the last ends at the end of the file. The format's README
 * is silent on gaps, but the reference implementation (huggingface/safetensors, `Metadata::validate`
 * and `read_metadata`) rejects a gap or an overlap as `InvalidOffset` and uncovered trailing bytes as
 * `MetadataIncompleteBuffer`; we do the same, so that any file we accept the reference accepts too.
 * Unknown fields inside a tensor entry are ignored, as serde does there.
 *
 * @param headerBytes - the N header bytes
 * @param fileSize - the size of the whole file, to check offsets against
 * @param file - the file name used in error messages
 */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, file: string): ParsedHeader {
  const dataStart = LENGTH_PREFIX_BYTES + headerBytes.byteLength;
  const dataLength = fileSize - dataStart;
  const root = parseHeaderJson(headerBytes, file);

  let metadata: Record<string, string> = {};
  const unordered: TensorInfo[] = [];
  for (const [name, value] of Object.entries(root)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, file);
    else unordered.push(parseEntry(name, value, dataStart, dataLength, file));
  }

  // Zero-size tensors sort before a non-empty one at the same offset, so they never look like overlaps.
  const sorted = unordered.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  let cursor = dataStart;
  let previous: TensorInfo | undefined;
  for (const entry of sorted) {
    if (entry.byteOffset !== cursor) {
      const begin = entry.byteOffset - dataStart;
      const expectedBegin = cursor - dataStart;
      const detail =
        begin < expectedBegin
          ? `data_offsets begin ${begin} overlaps tensor ${JSON.stringify(previous?.name)}, which ends at ${expectedBegin}`
          : previous === undefined
            ? `data_offsets begin ${begin}, but the first tensor must begin at 0 (no gap before it)`
            : `data_offsets begin ${begin} leaves a gap after tensor ${JSON.stringify(previous.name)}, which ends at ${expectedBegin}; tensors must be contiguous`;
      throw new SafetensorsError(file, detail, { tensor: entry.name, field: 'data_offsets' });
    }
    cursor = entry.byteOffset + entry.byteLength;
    previous = entry;
  }
  if (cursor !== fileSize) {
    throw new SafetensorsError(
      file,
      `the tensors cover ${cursor - dataStart} bytes of the ${dataLength}-byte data section; the last tensor must end at the end of the file`,
    );
  }
  return { entries: new Map(sorted.map((entry) => [entry.name, entry])), metadata, dataStart };
}

function parseHeaderJson(headerBytes: Uint8Array, file: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch (cause) {
    throw new SafetensorsError(file, 'header is not valid UTF-8', { cause });
  }
  // The format requires the header to start with '{'; trailing spaces (the padding) are allowed.
  if (!text.startsWith('{')) {
    throw new SafetensorsError(
      file,
      `header must be a JSON object starting with '{', got ${JSON.stringify(text.slice(0, 16))}`,
    );
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (cause) {
    throw new SafetensorsError(file, `header is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (!isPlainObject(root)) throw new SafetensorsError(file, 'header must be a JSON object');
  return root;
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  // serde reads `"__metadata__": null` as no metadata; accept it the same way.
  if (value === null) return {};
  if (!isPlainObject(value)) {
    throw new SafetensorsError(file, `expected an object of string values, got ${describe(value)}`, {
      field: METADATA_KEY,
    });
  }
  const metadata: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw new SafetensorsError(
        file,
        `expected key ${JSON.stringify(key)} to be a string, got ${describe(entry)}`,
        {
          field: METADATA_KEY,
        },
      );
    }
    metadata[key] = entry;
  }
  return metadata;
}

function parseEntry(
  name: string,
  value: unknown,
  dataStart: number,
  dataLength: number,
  file: string,
): TensorInfo {
  const fail = (field: string | undefined, detail: string): never => {
    throw new SafetensorsError(
      file,
      detail,
      field === undefined ? { tensor: name } : { tensor: name, field },
    );
  };
  if (!isPlainObject(value)) {
    return fail(undefined, `expected an object with dtype, shape and data_offsets, got ${describe(value)}`);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (dtype === undefined) fail('dtype', 'is missing');
  if (!isSafetensorsDType(dtype)) {
    return fail(
      'dtype',
      `expected one of ${Object.keys(SAFETENSORS_DTYPE_BYTES).join(', ')}, got ${describe(dtype)}`,
    );
  }
  if (shape === undefined) fail('shape', 'is missing');
  if (!Array.isArray(shape))
    return fail('shape', `expected an array of non-negative integers, got ${describe(shape)}`);
  for (const [axis, dim] of shape.entries()) {
    if (!isNonNegativeInteger(dim)) {
      fail('shape', `expected non-negative integer dimensions, got ${describe(dim)} at axis ${axis}`);
    }
  }
  if (offsets === undefined) fail('data_offsets', 'is missing');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
    return fail(
      'data_offsets',
      `expected [begin, end] as two non-negative integers, got ${describe(offsets)}`,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail('data_offsets', `begin ${begin} is after end ${end}`);
  if (end > dataLength) {
    fail('data_offsets', `end ${end} is past the end of the ${dataLength}-byte data section`);
  }
  const dims = shape as number[];
  const elements = elementCount(dims);
  const expectedBytes = elements * SAFETENSORS_DTYPE_BYTES[dtype];
  if (end - begin !== expectedBytes) {
    fail(
      'data_offsets',
      `spans ${end - begin} bytes, but dtype ${dtype} × shape [${dims.join(', ')}] needs ${expectedBytes} bytes`,
    );
  }
  return { name, dtype, shape: dims, byteOffset: dataStart + begin, byteLength: end - begin };
}

/**
 * Product of the dimensions. A zero anywhere gives 0 even when the other dimensions would overflow;
 * an overflowing product stays above 2^53, more than any file holds, so it never matches a byte length.
 */
export function elementCount(shape: readonly number[]): number {
  if (shape.includes(0)) return 0;
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A short rendering of a JSON value for messages. */
function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One tensor of a write plan: what will be written, without its bytes. */
export interface TensorPlanEntry {
  /** The tensor's name; unique within the file and not `__metadata__`. */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDType;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
}

/** A header built from a plan: the bytes to write first, and where each tensor goes. */
export interface BuiltHeader {
  /** The 8-byte length prefix followed by the space-padded JSON header. */
  readonly bytes: Uint8Array;
  /** The tensors in plan order with their absolute offsets. */
  readonly layout: readonly TensorInfo[];
  /** Total size of the finished file. */
  readonly fileSize: number;
}

/**
 * Builds the header for tensors laid out contiguously in plan order, padded with spaces so that the
 * data section starts at a multiple of 8 (as the reference writer does, so 8-byte dtypes stay aligned).
 *
 * @throws {@link SafetensorsError} naming `file` and the tensor when the plan is invalid
 */
export function buildHeader(
  plan: readonly TensorPlanEntry[],
  metadata: Readonly<Record<string, string>> | undefined,
  file: string,
): BuiltHeader {
  const parts: string[] = [];
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') {
        throw new SafetensorsError(
          file,
          `expected key ${JSON.stringify(key)} to be a string, got ${describe(value)}`,
          {
            field: METADATA_KEY,
          },
        );
      }
    }
    parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  const relative: { entry: TensorPlanEntry; begin: number; byteLength: number }[] = [];
  let offset = 0;
  for (const entry of plan) {
    const { name, dtype, shape } = entry;
    if (typeof name !== 'string' || name === METADATA_KEY) {
      throw new SafetensorsError(file, `tensor names must be strings other than "${METADATA_KEY}"`, {
        tensor: String(name),
      });
    }
    if (seen.has(name)) throw new SafetensorsError(file, 'appears twice in the plan', { tensor: name });
    seen.add(name);
    if (!isSafetensorsDType(dtype)) {
      throw new SafetensorsError(file, `expected a safetensors dtype, got ${describe(dtype)}`, {
        tensor: name,
        field: 'dtype',
      });
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new SafetensorsError(file, `expected non-negative integer dimensions, got ${describe(shape)}`, {
        tensor: name,
        field: 'shape',
      });
    }
    const byteLength = elementCount(shape) * SAFETENSORS_DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(offset + byteLength)) {
      throw new SafetensorsError(file, `shape [${shape.join(', ')}] is too large to write`, {
        tensor: name,
        field: 'shape',
      });
    }
    relative.push({ entry, begin: offset, byteLength });
    parts.push(
      `${JSON.stringify(name)}:{"dtype":${JSON.stringify(dtype)},"shape":${JSON.stringify(shape)},"data_offsets":[${offset},${offset + byteLength}]}`,
    );
    offset += byteLength;
  }
  // Built by hand rather than with JSON.stringify of an object, which would move integer-like names
  // ("0", "1") to the front and lose the plan order.
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  if (headerLength > MAX_HEADER_BYTES) {
    throw new SafetensorsError(
      file,
      `the header would be ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit readers enforce; split the tensors over more files`,
    );
  }
  const bytes = new Uint8Array(LENGTH_PREFIX_BYTES + headerLength).fill(
    0x20,
    LENGTH_PREFIX_BYTES + json.byteLength,
  );
  new DataView(bytes.buffer).setBigUint64(0, BigInt(headerLength), true);
  bytes.set(json, LENGTH_PREFIX_BYTES);
  const dataStart = LENGTH_PREFIX_BYTES + headerLength;
  const layout = relative.map(({ entry, begin, byteLength }) => ({
    name: entry.name,
    dtype: entry.dtype,
    shape: [...entry.shape],
    byteOffset: dataStart + begin,
    byteLength,
  }));
  return { bytes, layout, fileSize: dataStart + offset };
}
