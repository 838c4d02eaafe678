import { spawn } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsError } from '../errors.js';
import type { SafetensorsDType } from './dtype.js';
import { openSafetensors } from './reader.js';
import { makeTempDir, randomBytes, seededRandom } from './test-support.js';
import { createSafetensorsWriter, removeStaleTempFiles, TEMP_SUFFIX, writeSafetensors } from './writer.js';

let dir: string;
let removeDir: () => Promise<void>;
beforeAll(async () => {
  ({ dir, remove: removeDir } = await makeTempDir('st-writer'));
});
afterAll(() => removeDir());

const dtypeSizes: Record<SafetensorsDType, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** Names of the files in `dir` that start with `prefix`. */
async function filesStartingWith(prefix: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.startsWith(prefix)).sort();
}

/** Parses a file with nothing but the format definition, independently of the reader under test. */
async function parseIndependently(path: string) {
  const bytes = await readFile(path);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const text = bytes.subarray(8, 8 + headerLength).toString('utf8');
  return { bytes, headerLength, text, header: JSON.parse(text) as Record<string, unknown> };
}

describe('round trip of every dtype', () => {
  const random = seededRandom(2024);
  const shapes = [[], [0], [3], [2, 5], [3, 1, 4], [2, 0, 3]];
  const dtypes = Object.keys(dtypeSizes) as SafetensorsDType[];

  it.each(dtypes)('%s: bytes, shapes and layout survive a write and a reopen', async (dtype) => {
    const tensors = shapes.map((shape, index) => {
      const count = shape.reduce((a, b) => a * b, 1);
      return {
        name: `layers.${index}.weight`,
        dtype,
        shape,
        bytes: randomBytes(random, count * dtypeSizes[dtype]),
      };
    });
    const path = join(dir, `dtype-${dtype}.safetensors`);
    await writeSafetensors(path, tensors, { source: 'test', dtype });

    // The file itself, read without the reader: padded header, plan order, contiguous offsets.
    const { bytes, headerLength, text, header } = await parseIndependently(path);
    expect(headerLength % 8).toBe(0);
    expect(text.trimEnd().length).toBeGreaterThan(headerLength - 8);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
    expect(Object.keys(header)).toEqual(['__metadata__', ...tensors.map((tensor) => tensor.name)]);
    let offset = 0;
    for (const tensor of tensors) {
      expect(header[tensor.name]).toEqual({
        dtype,
        shape: tensor.shape,
        data_offsets: [offset, offset + tensor.bytes.byteLength],
      });
      const start = 8 + headerLength + offset;
      expect(new Uint8Array(bytes.subarray(start, start + tensor.bytes.byteLength))).toEqual(tensor.bytes);
      offset += tensor.bytes.byteLength;
    }
    expect(bytes.byteLength).toBe(8 + headerLength + offset);

    // And through the reader.
    const file = await openSafetensors(path);
    expect(file.metadata).toEqual({ source: 'test', dtype });
    for (const tensor of tensors) {
      const raw = await file.readTensor(tensor.name);
      expect(raw.dtype).toBe(dtype);
      expect(raw.shape).toEqual(tensor.shape);
      expect(raw.bytes).toEqual(tensor.bytes);
    }
    await file.close();
  });

  it('keeps the plan order even for integer-like names', async () => {
    const path = join(dir, 'integer-names.safetensors');
    await writeSafetensors(path, [
      { name: 'b', dtype: 'U8', shape: [1], bytes: new Uint8Array([1]) },
      { name: '10', dtype: 'U8', shape: [1], bytes: new Uint8Array([2]) },
      { name: '2', dtype: 'U8', shape: [1], bytes: new Uint8Array([3]) },
    ]);
    const { text } = await parseIndependently(path);
    expect(text.indexOf('"b"')).toBeLessThan(text.indexOf('"10"'));
    expect(text.indexOf('"10"')).toBeLessThan(text.indexOf('"2"'));
    const file = await openSafetensors(path);
    expect([...(await file.readTensor('2')).bytes]).toEqual([3]);
    await file.close();
  });

  it('streams tensors given as functions, calling each only when its turn comes', async () => {
    const path = join(dir, 'lazy-sources.safetensors');
    const calls: string[] = [];
    const source = (name: string, value: number) => async () => {
      calls.push(name);
      return new Uint8Array(4).fill(value);
    };
    await writeSafetensors(path, [
      { name: 'a', dtype: 'F32', shape: [1], bytes: source('a', 1) },
      { name: 'b', dtype: 'F32', shape: [1], bytes: source('b', 2) },
    ]);
    expect(calls).toEqual(['a', 'b']);
    const file = await openSafetensors(path);
    expect([...(await file.readTensor('b')).bytes]).toEqual([2, 2, 2, 2]);
    await file.close();
  });
});

describe('the writer never leaves a partial file', () => {
  const plan = [
    { name: 'first', dtype: 'F32' as const, shape: [4] },
    { name: 'second', dtype: 'BF16' as const, shape: [2, 3] },
  ];

  async function expectNothingAt(name: string): Promise<void> {
    expect(await filesStartingWith(name)).toEqual([]);
  }

  it('writes tensors overlapped (not awaited one by one) correctly', async () => {
    const path = join(dir, 'overlapped.safetensors');
    const writer = await createSafetensorsWriter(path, plan);
    await Promise.all([
      writer.write('first', new Uint8Array(16).fill(1)),
      writer.write('second', new Uint8Array(12).fill(2)),
    ]);
    await writer.close();
    await writer.close(); // idempotent
    await writer.abort(); // no-op after close
    const file = await openSafetensors(path);
    expect([...(await file.readTensor('second')).bytes]).toEqual(new Array(12).fill(2));
    await file.close();
    expect(await filesStartingWith('overlapped.safetensors')).toEqual(['overlapped.safetensors']);
  });

  it('rejects a tensor out of plan order, and removes the temporary file', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'order.safetensors'), plan);
    expect(await filesStartingWith('order.safetensors')).toHaveLength(1); // the temporary file
    const error = await writer.write('second', new Uint8Array(12)).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SafetensorsError);
    expect((error as Error).message).toMatch(
      /order\.safetensors: tensor "second": written out of plan order: expected tensor "first" \(number 1 of 2\) next/,
    );
    await expectNothingAt('order.safetensors');
    await expect(writer.write('first', new Uint8Array(16))).rejects.toThrow(
      /cannot write: the writer was aborted after an error/,
    );
    await expect(writer.close()).rejects.toThrow(SafetensorsError);
    await expectNothingAt('order.safetensors');
  });

  it('rejects a tensor that is not in the plan', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'unplanned.safetensors'), plan);
    await expect(writer.write('third', new Uint8Array(16))).rejects.toThrow(
      /tensor "third": is not in the plan; expected tensor "first" next/,
    );
    await expectNothingAt('unplanned.safetensors');
  });

  it('rejects a wrong byte length', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'length.safetensors'), plan);
    await writer.write('first', new Uint8Array(16));
    await expect(writer.write('second', new Uint8Array(11))).rejects.toThrow(
      /length\.safetensors: tensor "second": got 11 bytes, expected 12 \(BF16 × shape \[2, 3\]\)/,
    );
    await expectNothingAt('length.safetensors');
  });

  it('rejects an extra tensor after the plan is complete', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'extra.safetensors'), plan);
    await writer.write('first', new Uint8Array(16));
    await writer.write('second', new Uint8Array(12));
    await expect(writer.write('first', new Uint8Array(16))).rejects.toThrow(
      /all 2 planned tensors were already written/,
    );
    await expectNothingAt('extra.safetensors');
  });

  it('rejects close before every tensor was written', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'incomplete.safetensors'), plan);
    await writer.write('first', new Uint8Array(16));
    await expect(writer.close()).rejects.toThrow(/closed after 1 of 2 planned tensors; missing "second"/);
    await expectNothingAt('incomplete.safetensors');
  });

  it('abort removes the temporary file, and is idempotent', async () => {
    const writer = await createSafetensorsWriter(join(dir, 'aborted.safetensors'), plan);
    await writer.write('first', new Uint8Array(16));
    await writer.abort();
    await writer.abort();
    await expectNothingAt('aborted.safetensors');
    await expect(writer.write('second', new Uint8Array(12))).rejects.toThrow(/the writer was aborted/);
  });

  it('leaves an existing file untouched until the new one is complete', async () => {
    const path = join(dir, 'replace.safetensors');
    await writeSafetensors(path, [{ name: 'old', dtype: 'U8', shape: [1], bytes: new Uint8Array([1]) }]);
    const before = await readFile(path);
    const writer = await createSafetensorsWriter(path, plan);
    await writer.write('first', new Uint8Array(16));
    expect(await readFile(path)).toEqual(before);
    await writer.abort();
    expect(await readFile(path)).toEqual(before);
    await writeSafetensors(path, [{ name: 'new', dtype: 'U8', shape: [1], bytes: new Uint8Array([2]) }]);
    const file = await openSafetensors(path);
    expect([...file.entries.keys()]).toEqual(['new']);
    await file.close();
  });

  it.each([
    {
      what: 'duplicate names',
      plan: [plan[0]!, plan[0]!],
      message: /tensor "first": appears twice in the plan/,
    },
    {
      what: 'the reserved name',
      plan: [{ ...plan[0]!, name: '__metadata__' }],
      message: /names must be strings other than "__metadata__"/,
    },
    {
      what: 'an unknown dtype',
      plan: [{ ...plan[0]!, dtype: 'F128' as SafetensorsDType }],
      message: /field "dtype": expected a safetensors dtype, got "F128"/,
    },
    {
      what: 'a negative dimension',
      plan: [{ ...plan[0]!, shape: [-1] }],
      message: /field "shape": expected non-negative integer dimensions, got \[-1\]/,
    },
  ])('rejects a plan with $what before creating any file', async ({ plan: badPlan, message }) => {
    await expect(createSafetensorsWriter(join(dir, 'bad-plan.safetensors'), badPlan)).rejects.toThrow(
      message,
    );
    await expectNothingAt('bad-plan.safetensors');
  });

  it('rejects metadata values that are not strings', async () => {
    const metadata = { epoch: 3 } as unknown as Record<string, string>;
    await expect(
      createSafetensorsWriter(join(dir, 'bad-metadata.safetensors'), plan, metadata),
    ).rejects.toThrow(/field "__metadata__": expected key "epoch" to be a string, got 3/);
    await expectNothingAt('bad-metadata.safetensors');
  });

  it('leaves no file at the path when the writing process is killed half-way', async () => {
    const path = join(dir, 'killed.safetensors');
    const childScript = join(dir, 'killed-writer.mts');
    const writerUrl = pathToFileURL(fileURLToPath(new URL('./writer.ts', import.meta.url))).href;
    await writeFile(
      childScript,
      [
        `import { createSafetensorsWriter } from ${JSON.stringify(writerUrl)};`,
        `const writer = await createSafetensorsWriter(process.argv[2], [`,
        `  { name: 'a', dtype: 'U8', shape: [1 << 20] },`,
        `  { name: 'b', dtype: 'U8', shape: [1 << 20] },`,
        `]);`,
        `await writer.write('a', new Uint8Array(1 << 20).fill(7));`,
        `process.stdout.write('half\\n');`,
        `setInterval(() => {}, 1000);`,
      ].join('\n'),
    );
    const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', childScript, path], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('half')) resolve();
      });
      child.on('exit', (code) =>
        reject(new Error(`child exited with ${code} before writing half: ${stderr}`)),
      );
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    const left = await filesStartingWith('killed.safetensors');
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^killed\.safetensors\.tmp-[0-9a-f]{12}$/);
    expect((await stat(join(dir, left[0]!))).size).toBeGreaterThan(1 << 20);
    await expect(openSafetensors(path)).rejects.toThrow(/ENOENT/);

    expect(await removeStaleTempFiles(path)).toEqual([join(dir, left[0]!)]);
    expect(await filesStartingWith('killed.safetensors')).toEqual([]);
    expect(TEMP_SUFFIX).toBe('.tmp-');
  });
});
