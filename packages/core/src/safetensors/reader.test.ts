import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SafetensorsError } from '../errors.js';
import { openSafetensors } from './reader.js';
import { makeTempDir, randomBytes, seededRandom, writeRawFile } from './test-support.js';
import { writeSafetensors } from './writer.js';

let dir: string;
let removeDir: () => Promise<void>;
beforeAll(async () => {
  ({ dir, remove: removeDir } = await makeTempDir('st-reader'));
});
afterAll(() => removeDir());

/**
 * Byte-exact files from the reference implementation's own tests (huggingface/safetensors,
 * `safetensors/src/tensor.rs`: test_serialization, test_serialization_forced_alignement, test_empty).
 */
const f32ZeroToFive = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
const referenceFiles = [
  {
    name: 'one F32 tensor, header needs no padding',
    tensors: [{ name: 'attn.0', dtype: 'F32' as const, shape: [1, 2, 3], bytes: f32ZeroToFive }],
    metadata: undefined,
    bytes: [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101,
      34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34,
      100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0,
      0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ],
  },
  {
    name: 'one F32 tensor, header padded with 7 spaces',
    tensors: [{ name: 'attn0', dtype: 'F32' as const, shape: [1, 1, 2, 3], bytes: f32ZeroToFive }],
    metadata: undefined,
    bytes: [
      72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34,
      58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44,
      34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125,
      32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
      160, 64,
    ],
  },
  {
    name: 'no tensors',
    tensors: [],
    metadata: undefined,
    bytes: [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32],
  },
  {
    name: 'no tensors, metadata only',
    tensors: [],
    metadata: { framework: 'pt' },
    bytes: [
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34,
      102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32,
    ],
  },
];

describe('files of the reference implementation', () => {
  it.each(referenceFiles)('writes and reads "$name" byte for byte', async ({ tensors, metadata, bytes }) => {
    const path = join(dir, `reference-${bytes.length}-${tensors.length}.safetensors`);
    await writeSafetensors(path, tensors, metadata);
    expect([...(await readFile(path))]).toEqual(bytes);
    const file = await openSafetensors(path);
    try {
      expect(file.metadata).toEqual(metadata ?? {});
      expect([...file.entries.keys()]).toEqual(tensors.map((tensor) => tensor.name));
      for (const tensor of tensors) {
        const raw = await file.readTensor(tensor.name);
        expect(raw.dtype).toBe(tensor.dtype);
        expect(raw.shape).toEqual(tensor.shape);
        expect(new Float32Array(raw.bytes.buffer)).toEqual(new Float32Array([0, 1, 2, 3, 4, 5]));
      }
    } finally {
      await file.close();
    }
  });
});

describe('lazy reading', () => {
  it('reads only the header when opening and only the tensor range when reading one tensor', async () => {
    const random = seededRandom(101);
    const tensors = [
      { name: 'before', dtype: 'F32' as const, shape: [300, 7], bytes: randomBytes(random, 300 * 7 * 4) },
      { name: 'target', dtype: 'BF16' as const, shape: [13, 5], bytes: randomBytes(random, 13 * 5 * 2) },
      { name: 'after', dtype: 'I64' as const, shape: [1000], bytes: randomBytes(random, 8000) },
    ];
    const path = join(dir, 'lazy.safetensors');
    await writeSafetensors(path, tensors);

    const probe = await open(path, 'r');
    const fileHandlePrototype = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => unknown };
    await probe.close();
    const readSpy = vi.spyOn(fileHandlePrototype, 'read');
    try {
      const file = await openSafetensors(path);
      const headerEnd = file.entries.get('before')!.byteOffset;
      // Each call is read(buffer, offset, length, position); record [position, position + length).
      const ranges = () =>
        readSpy.mock.calls.map((call) => [call[3] as number, (call[3] as number) + (call[2] as number)]);
      expect(ranges().length).toBeGreaterThan(0);
      for (const [start, end] of ranges()) {
        expect(start).toBeGreaterThanOrEqual(0);
        expect(end).toBeLessThanOrEqual(headerEnd);
      }
      readSpy.mockClear();

      const target = file.entries.get('target')!;
      const raw = await file.readTensor('target');
      expect(raw.bytes).toEqual(tensors[1]!.bytes);
      expect(ranges().length).toBeGreaterThan(0);
      for (const [start, end] of ranges()) {
        expect(start).toBeGreaterThanOrEqual(target.byteOffset);
        expect(end).toBeLessThanOrEqual(target.byteOffset + target.byteLength);
      }
      await file.close();
    } finally {
      readSpy.mockRestore();
    }
  });

  it('returns buffers that start at offset 0, so any typed view is aligned', async () => {
    const path = join(dir, 'aligned.safetensors');
    await writeSafetensors(path, [
      { name: 'a', dtype: 'U8', shape: [3], bytes: new Uint8Array([1, 2, 3]) },
      { name: 'b', dtype: 'F64', shape: [2], bytes: new Uint8Array(new Float64Array([0.5, -2]).buffer) },
    ]);
    const file = await openSafetensors(path);
    const raw = await file.readTensor('b');
    await file.close();
    expect(raw.bytes.byteOffset).toBe(0);
    expect([...new Float64Array(raw.bytes.buffer)]).toEqual([0.5, -2]);
  });

  it('rejects unknown tensors, reads after close, and a file truncated after opening', async () => {
    const path = join(dir, 'truncated-later.safetensors');
    await writeSafetensors(path, [{ name: 'w', dtype: 'F32', shape: [64], bytes: new Uint8Array(256) }]);
    const file = await openSafetensors(path);
    await expect(file.readTensor('nope')).rejects.toThrow(/tensor "nope": no such tensor/);
    const full = await readFile(path);
    await writeFile(path, full.subarray(0, full.byteLength - 10));
    await expect(file.readTensor('w')).rejects.toThrow(
      /ended at byte .* while reading tensor "w".*truncated/,
    );
    await file.close();
    await file.close(); // idempotent
    await expect(file.readTensor('w')).rejects.toThrow(/closed/);
  });
});

/** One invalid file: the header (or raw text), its data section, and what the error must say. */
interface BadCase {
  name: string;
  header: string | object;
  data?: Uint8Array;
  length?: bigint;
  tensor?: string;
  field?: string;
  message: RegExp;
}

const f32x2 = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
const badCases: BadCase[] = [
  {
    name: 'header length past the end',
    header: '{}',
    length: 1000n,
    message: /header length 1000 bytes runs past the end of the file \(10 bytes/,
  },
  {
    name: 'absurd header length',
    header: '{}',
    length: 2n ** 40n,
    message: /exceeds the 100000000-byte limit/,
  },
  {
    name: 'header length 2^64 - 1',
    header: '{}',
    length: 2n ** 64n - 1n,
    message: /exceeds the 100000000-byte limit/,
  },
  { name: 'header not JSON', header: '{"a": ', message: /header is not valid JSON/ },
  {
    name: 'header not an object',
    header: '[1, 2]',
    message: /header must be a JSON object starting with '\{'/,
  },
  { name: 'header with leading space', header: ' {}', message: /must be a JSON object starting with '\{'/ },
  {
    name: 'entry not an object',
    header: { w: 5 },
    tensor: 'w',
    message: /expected an object with dtype, shape and data_offsets, got 5/,
  },
  {
    name: 'missing dtype',
    header: { w: { shape: [2], data_offsets: [0, 8] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'dtype',
    message: /is missing/,
  },
  {
    name: 'missing shape',
    header: { w: { dtype: 'F32', data_offsets: [0, 8] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'shape',
    message: /is missing/,
  },
  {
    name: 'missing data_offsets',
    header: { w: { dtype: 'F32', shape: [2] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /is missing/,
  },
  {
    name: 'dtype not a string',
    header: { w: { ...f32x2, dtype: 4 } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'dtype',
    message: /expected one of BOOL, .*F32.*, got 4/,
  },
  {
    name: 'unknown dtype',
    header: { w: { ...f32x2, dtype: 'F128' } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'dtype',
    message: /got "F128"/,
  },
  {
    name: 'shape not an array',
    header: { w: { ...f32x2, shape: '2' } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'shape',
    message: /expected an array of non-negative integers, got "2"/,
  },
  {
    name: 'negative dimension',
    header: { w: { ...f32x2, shape: [-2] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'shape',
    message: /non-negative integer dimensions, got -2 at axis 0/,
  },
  {
    name: 'fractional dimension',
    header: { w: { ...f32x2, shape: [2, 0.5] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'shape',
    message: /got 0.5 at axis 1/,
  },
  {
    name: 'data_offsets of one number',
    header: { w: { ...f32x2, data_offsets: [8] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /expected \[begin, end\] as two non-negative integers, got \[8\]/,
  },
  {
    name: 'data_offsets as strings',
    header: { w: { ...f32x2, data_offsets: ['0', '8'] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /got \["0","8"\]/,
  },
  {
    name: 'data_offsets negative',
    header: { w: { ...f32x2, data_offsets: [-8, 0] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /two non-negative integers/,
  },
  {
    name: 'data_offsets beyond 2^53',
    header: `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,18014398509481984]}}`,
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /two non-negative integers/,
  },
  {
    name: 'begin after end',
    header: { w: { ...f32x2, data_offsets: [8, 0] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /begin 8 is after end 0/,
  },
  {
    name: 'end past the data section',
    header: { w: { ...f32x2, data_offsets: [0, 16] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /end 16 is past the end of the 8-byte data section/,
  },
  {
    name: 'byte length not dtype × shape',
    header: { w: { ...f32x2, shape: [3] } },
    data: new Uint8Array(8),
    tensor: 'w',
    field: 'data_offsets',
    message: /spans 8 bytes, but dtype F32 × shape \[3\] needs 12 bytes/,
  },
  {
    name: 'overlapping tensors',
    header: { a: f32x2, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
    data: new Uint8Array(12),
    tensor: 'b',
    field: 'data_offsets',
    message: /begin 4 overlaps tensor "a", which ends at 8/,
  },
  {
    name: 'a gap between tensors',
    header: { a: f32x2, b: { dtype: 'F32', shape: [2], data_offsets: [12, 20] } },
    data: new Uint8Array(20),
    tensor: 'b',
    field: 'data_offsets',
    message: /leaves a gap after tensor "a", which ends at 8; tensors must be contiguous/,
  },
  {
    name: 'a gap before the first tensor',
    header: { a: { ...f32x2, data_offsets: [4, 12] } },
    data: new Uint8Array(12),
    tensor: 'a',
    field: 'data_offsets',
    message: /the first tensor must begin at 0/,
  },
  {
    name: 'trailing bytes after the last tensor',
    header: { a: f32x2 },
    data: new Uint8Array(9),
    message: /the tensors cover 8 bytes of the 9-byte data section/,
  },
  {
    name: 'metadata not an object',
    header: { __metadata__: 'pt' },
    field: '__metadata__',
    message: /expected an object of string values, got "pt"/,
  },
  {
    name: 'metadata value not a string',
    header: { __metadata__: { epoch: 3 } },
    field: '__metadata__',
    message: /expected key "epoch" to be a string, got 3/,
  },
];

describe('invalid files', () => {
  it('rejects a file shorter than 8 bytes, and a missing file', async () => {
    for (const size of [0, 7]) {
      const path = join(dir, `short-${size}.safetensors`);
      await writeFile(path, new Uint8Array(size));
      const error = await openSafetensors(path).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(SafetensorsError);
      expect((error as Error).message).toBe(
        `${path}: file is ${size} bytes; a safetensors file starts with an 8-byte header length`,
      );
    }
    const missing = join(dir, 'missing.safetensors');
    await expect(openSafetensors(missing)).rejects.toThrow(new RegExp(`^${missing}: cannot open: ENOENT`));
  });

  it('rejects a header that is not UTF-8', async () => {
    const path = join(dir, 'latin1.safetensors');
    const bytes = new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0xff, 0xfe, 0x7d]);
    await writeFile(path, bytes);
    await expect(openSafetensors(path)).rejects.toThrow(`${path}: header is not valid UTF-8`);
  });

  it.each(badCases)('rejects $name', async ({ name, header, data, length, tensor, field, message }) => {
    const path = await writeRawFile(
      join(dir, `${name.replaceAll(/\W+/g, '-')}.safetensors`),
      header,
      data,
      length,
    );
    const error = await openSafetensors(path).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SafetensorsError);
    const typed = error as SafetensorsError;
    expect(typed.file).toBe(path);
    expect(typed.tensor).toBe(tensor);
    expect(typed.field).toBe(field);
    expect(typed.message.startsWith(`${path}: `)).toBe(true);
    if (tensor !== undefined) expect(typed.message).toContain(`tensor "${tensor}"`);
    if (field !== undefined) expect(typed.message).toContain(`field "${field}"`);
    expect(typed.message).toMatch(message);
  });
});

describe('valid edge cases', () => {
  it('accepts scalars, zero-size tensors, padding, unknown entry fields and null metadata', async () => {
    const path = await writeRawFile(
      join(dir, 'edges.safetensors'),
      {
        __metadata__: null,
        empty: { dtype: 'F16', shape: [0, 4], data_offsets: [0, 0] },
        scalar: { dtype: 'I32', shape: [], data_offsets: [0, 4], note: 'ignored' },
        alsoEmpty: { dtype: 'BOOL', shape: [3, 0], data_offsets: [4, 4] },
      },
      new Uint8Array([7, 0, 0, 0]),
    );
    const file = await openSafetensors(path);
    expect(
      [...file.entries.values()].map(({ name, shape, byteLength }) => ({ name, shape, byteLength })),
    ).toEqual([
      { name: 'empty', shape: [0, 4], byteLength: 0 },
      { name: 'scalar', shape: [], byteLength: 4 },
      { name: 'alsoEmpty', shape: [3, 0], byteLength: 0 },
    ]);
    expect(file.metadata).toEqual({});
    expect([...(await file.readTensor('scalar')).bytes]).toEqual([7, 0, 0, 0]);
    expect((await file.readTensor('empty')).bytes.byteLength).toBe(0);
    await file.close();
  });

  it('orders entries by offset whatever the header order', async () => {
    const path = await writeRawFile(
      join(dir, 'unordered.safetensors'),
      {
        second: { dtype: 'U8', shape: [2], data_offsets: [1, 3] },
        first: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
      },
      new Uint8Array([9, 8, 7]),
    );
    const file = await openSafetensors(path);
    expect([...file.entries.keys()]).toEqual(['first', 'second']);
    expect(file.entries.get('second')!.byteOffset).toBe(file.entries.get('first')!.byteOffset + 1);
    expect([...(await file.readTensor('second')).bytes]).toEqual([8, 7]);
    await file.close();
  });
});
