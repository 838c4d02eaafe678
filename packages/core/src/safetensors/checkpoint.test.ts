import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsError } from '../errors.js';
import { INDEX_FILE_NAME, openCheckpoint, SINGLE_FILE_NAME, writeShardedCheckpoint } from './checkpoint.js';
import type { SafetensorsDType } from './dtype.js';
import { openSafetensors } from './reader.js';
import { makeTempDir, randomBytes, seededRandom } from './test-support.js';
import { writeSafetensors } from './writer.js';

let root: string;
let removeRoot: () => Promise<void>;
beforeAll(async () => {
  ({ dir: root, remove: removeRoot } = await makeTempDir('st-checkpoint'));
});
afterAll(() => removeRoot());

const sizes: Partial<Record<SafetensorsDType, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  F64: 8,
  U8: 1,
  BOOL: 1,
  I16: 2,
  I8: 1,
};

function randomTensors(seed: number, count: number) {
  const random = seededRandom(seed);
  const dtypes = Object.keys(sizes) as SafetensorsDType[];
  return Array.from({ length: count }, (_, index) => {
    const dtype = dtypes[index % dtypes.length]!;
    const shape = [1 + Math.floor(random() * 20), 1 + Math.floor(random() * 20)];
    return {
      name: `model.layers.${index}.w`,
      dtype,
      shape,
      bytes: randomBytes(random, shape[0]! * shape[1]! * sizes[dtype]!),
    };
  });
}

describe('sharded round trip', () => {
  it('splits into shards of at most maxShardBytes, indexes them, and reads every tensor back', async () => {
    const dir = join(root, 'sharded');
    const tensors = randomTensors(7, 23);
    const maxShardBytes = 1500;
    const written = await writeShardedCheckpoint(dir, tensors, { maxShardBytes });
    const totalBytes = tensors.reduce((sum, tensor) => sum + tensor.bytes.byteLength, 0);
    expect(written.totalBytes).toBe(totalBytes);
    const count = written.files.length;
    expect(count).toBeGreaterThan(2);
    const names = written.files.map((file) => file.slice(dir.length + 1));
    expect(names).toEqual(
      Array.from(
        { length: count },
        (_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.safetensors`,
      ),
    );
    expect((await readdir(dir)).sort()).toEqual([...names, INDEX_FILE_NAME].sort());

    // The index, read as plain JSON: total size, sorted weight map, and each shard within its budget.
    const index = JSON.parse(await readFile(join(dir, INDEX_FILE_NAME), 'utf8'));
    expect(index.metadata).toEqual({ total_size: totalBytes });
    expect(Object.keys(index.weight_map)).toEqual(tensors.map((tensor) => tensor.name).sort());
    const order: string[] = [];
    for (const file of written.files) {
      const shard = await openSafetensors(file);
      expect(shard.metadata).toEqual({ format: 'pt' });
      const shardBytes = [...shard.entries.values()].reduce((sum, info) => sum + info.byteLength, 0);
      if (shard.entries.size > 1) expect(shardBytes).toBeLessThanOrEqual(maxShardBytes);
      for (const name of shard.entries.keys()) {
        expect(index.weight_map[name]).toBe(file.slice(dir.length + 1));
        order.push(name);
      }
      await shard.close();
    }
    expect(order).toEqual(tensors.map((tensor) => tensor.name)); // greedy, order kept

    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.indexFile).toBe(join(dir, INDEX_FILE_NAME));
    expect(checkpoint.shards.map((shard) => shard.path)).toEqual(written.files);
    expect([...checkpoint.entries.keys()]).toEqual(tensors.map((tensor) => tensor.name));
    for (const tensor of tensors) {
      expect(checkpoint.has(tensor.name)).toBe(true);
      const raw = await checkpoint.readTensor(tensor.name);
      expect(raw.dtype).toBe(tensor.dtype);
      expect(raw.shape).toEqual(tensor.shape);
      expect(raw.bytes).toEqual(tensor.bytes);
    }
    expect(checkpoint.has('nope')).toBe(false);
    await expect(checkpoint.readTensor('nope')).rejects.toThrow(
      /model\.safetensors\.index\.json: tensor "nope": no such tensor/,
    );
    await checkpoint.close();
    await checkpoint.close();
  });

  it('gives a tensor larger than maxShardBytes a shard of its own', async () => {
    const dir = join(root, 'big-tensor');
    const tensors = [
      { name: 'small.a', dtype: 'U8' as const, shape: [10], bytes: new Uint8Array(10).fill(1) },
      { name: 'big', dtype: 'U8' as const, shape: [100], bytes: new Uint8Array(100).fill(2) },
      { name: 'small.b', dtype: 'U8' as const, shape: [10], bytes: new Uint8Array(10).fill(3) },
    ];
    const written = await writeShardedCheckpoint(dir, tensors, { maxShardBytes: 50 });
    expect(written.files).toHaveLength(3);
    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.entries.get('big')!.file).toBe(written.files[1]);
    expect([...(await checkpoint.readTensor('small.b')).bytes]).toEqual(new Array(10).fill(3));
    await checkpoint.close();
  });

  it('writes a single model.safetensors when everything fits, removing a stale index', async () => {
    const dir = join(root, 'single');
    const tensors = randomTensors(8, 6);
    await writeShardedCheckpoint(dir, tensors, { maxShardBytes: 100 }); // sharded first
    const written = await writeShardedCheckpoint(dir, tensors, {
      maxShardBytes: 1e9,
      metadata: { note: 'x' },
    });
    expect(written.indexFile).toBeUndefined();
    expect(written.files).toEqual([join(dir, SINGLE_FILE_NAME)]);
    expect((await readdir(dir)).includes(INDEX_FILE_NAME)).toBe(false);
    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.indexFile).toBeUndefined();
    expect(checkpoint.shards[0]!.metadata).toEqual({ format: 'pt', note: 'x' });
    for (const tensor of tensors)
      expect((await checkpoint.readTensor(tensor.name)).bytes).toEqual(tensor.bytes);
    await checkpoint.close();
  });

  it('removes the shards it wrote when a later shard fails', async () => {
    const dir = join(root, 'failing');
    const tensors = [
      { name: 'a', dtype: 'U8' as const, shape: [8], bytes: new Uint8Array(8) },
      { name: 'b', dtype: 'U8' as const, shape: [8], bytes: new Uint8Array(7) }, // wrong length
    ];
    await expect(writeShardedCheckpoint(dir, tensors, { maxShardBytes: 8 })).rejects.toThrow(
      /model-00002-of-00002\.safetensors: tensor "b": got 7 bytes, expected 8/,
    );
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('invalid checkpoints', () => {
  /** A fresh directory with two valid shards (a, b in shard 1; c in shard 2) and the given index. */
  async function shardedDir(name: string, index: unknown): Promise<string> {
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    const u8 = (tensorName: string) => ({
      name: tensorName,
      dtype: 'U8' as const,
      shape: [2],
      bytes: new Uint8Array(2),
    });
    await writeSafetensors(join(dir, 'one.safetensors'), [u8('a'), u8('b')]);
    await writeSafetensors(join(dir, 'two.safetensors'), [u8('c')]);
    await writeFile(join(dir, INDEX_FILE_NAME), typeof index === 'string' ? index : JSON.stringify(index));
    return dir;
  }
  const goodMap = { a: 'one.safetensors', b: 'one.safetensors', c: 'two.safetensors' };

  it('opens the valid fixture', async () => {
    const checkpoint = await openCheckpoint(await shardedDir('fixture', { weight_map: goodMap }));
    expect([...checkpoint.entries.keys()]).toEqual(['a', 'b', 'c']);
    await checkpoint.close();
  });

  it.each([
    {
      what: 'an index that is not JSON',
      index: '{"weight_map": ',
      tensor: undefined,
      field: undefined,
      message: /is not valid JSON/,
    },
    {
      what: 'an index without weight_map',
      index: { metadata: {} },
      tensor: undefined,
      field: 'weight_map',
      message: /expected an object mapping tensor names to shard files/,
    },
    {
      what: 'a shard path outside the directory',
      index: { weight_map: { ...goodMap, c: '../two.safetensors' } },
      tensor: 'c',
      field: 'weight_map',
      message: /expected a shard file name in the same directory, got "..\/two.safetensors"/,
    },
    {
      what: 'a shard that is not a string',
      index: { weight_map: { ...goodMap, c: 2 } },
      tensor: 'c',
      field: 'weight_map',
      message: /got 2/,
    },
    {
      what: 'a missing shard file',
      index: { weight_map: { ...goodMap, d: 'three.safetensors' } },
      tensor: undefined,
      field: 'weight_map',
      message: /lists shard "three.safetensors", which does not exist/,
    },
    {
      what: 'a tensor absent from its shard',
      index: { weight_map: { ...goodMap, d: 'two.safetensors' } },
      tensor: 'd',
      field: 'weight_map',
      message: /is mapped to shard "two.safetensors", which does not hold it/,
    },
    {
      what: 'a shard tensor the index does not list',
      index: { weight_map: { a: 'one.safetensors', c: 'two.safetensors' } },
      tensor: 'b',
      field: 'weight_map',
      message: /is stored in shard "one.safetensors" but not listed/,
    },
  ])('rejects $what, naming the index', async ({ what, index, tensor, field, message }) => {
    const dir = await shardedDir(what.replaceAll(/\W+/g, '-'), index);
    const error = await openCheckpoint(dir).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SafetensorsError);
    const typed = error as SafetensorsError;
    expect(typed.file).toBe(join(dir, INDEX_FILE_NAME));
    expect(typed.tensor).toBe(tensor);
    expect(typed.field).toBe(field);
    expect(typed.message).toMatch(message);
  });

  it('rejects a tensor stored in two shards', async () => {
    const dir = await shardedDir('duplicate', { weight_map: goodMap });
    await writeSafetensors(join(dir, 'two.safetensors'), [
      { name: 'c', dtype: 'U8', shape: [2], bytes: new Uint8Array(2) },
      { name: 'a', dtype: 'U8', shape: [2], bytes: new Uint8Array(2) },
    ]);
    await expect(openCheckpoint(dir)).rejects.toThrow(
      /index\.json: tensor "a" field "weight_map": is stored in two shards, "one.safetensors" \(as listed\) and "two.safetensors"/,
    );
  });

  it('names the shard file when a shard is corrupt', async () => {
    const dir = await shardedDir('corrupt-shard', { weight_map: goodMap });
    await writeFile(join(dir, 'two.safetensors'), new Uint8Array(3));
    await expect(openCheckpoint(dir)).rejects.toThrow(`${join(dir, 'two.safetensors')}: file is 3 bytes`);
  });

  it('names the directory when it holds no checkpoint', async () => {
    const dir = join(root, 'empty');
    await mkdir(dir);
    await expect(openCheckpoint(dir)).rejects.toThrow(
      `${dir}: holds neither ${INDEX_FILE_NAME} nor ${SINGLE_FILE_NAME}`,
    );
  });
});
