/**
 * Property test of the parser: valid files of random tensors are mutated (truncated, extended, bytes
 * flipped in the length prefix and the header, JSON fields spliced, offsets / dtypes / shapes changed)
 * and every attempt must end in either a consistent parse or a SafetensorsError — never another
 * exception, never an entry outside the file.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsError } from '../errors.js';
import { SAFETENSORS_DTYPE_BYTES, type SafetensorsDType } from './dtype.js';
import { buildHeader } from './header.js';
import { openSafetensors } from './reader.js';
import { makeTempDir, randomBytes, seededRandom } from './test-support.js';

let dir: string;
let removeDir: () => Promise<void>;
beforeAll(async () => {
  ({ dir, remove: removeDir } = await makeTempDir('st-fuzz'));
});
afterAll(() => removeDir());

const dtypes = Object.keys(SAFETENSORS_DTYPE_BYTES) as SafetensorsDType[];

/** A valid file: random tensors (possibly none, possibly empty) and metadata, laid out by the writer's header code. */
const validFile = fc
  .record({
    tensors: fc.uniqueArray(
      fc.record({
        name: fc.string({
          maxLength: 6,
          unit: fc.constantFrom('a', 'b', '.', '0', '1', 'é', '"', '\\', '\u{1f600}'),
        }),
        dtype: fc.constantFrom(...dtypes),
        shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
      }),
      { selector: (tensor) => tensor.name, maxLength: 5 },
    ),
    metadata: fc.option(
      fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
      {
        nil: undefined,
      },
    ),
    dataSeed: fc.integer(),
  })
  .map(({ tensors, metadata, dataSeed }) => {
    const header = buildHeader(tensors, metadata, 'generated');
    const bytes = new Uint8Array(header.fileSize);
    bytes.set(header.bytes);
    bytes.set(
      randomBytes(seededRandom(dataSeed), header.fileSize - header.bytes.byteLength),
      header.bytes.byteLength,
    );
    return bytes;
  });

/** A value to put where the format expects something specific. */
const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    -1,
    1.5,
    2 ** 53,
    2 ** 64,
    1e300,
    -0,
    null,
    '',
    'F32',
    'BF16',
    'X',
    [],
    [0],
    [0, 1, 2],
    [-1, 4],
    ['0', '8'],
  ),
  fc.array(fc.integer({ min: -2, max: 2 ** 40 }), { maxLength: 3 }),
);

/** Edits of the parsed header object; the file is then re-serialized with a correct length prefix. */
const jsonEdit = fc.oneof(
  fc.record({
    kind: fc.constant('set-field' as const),
    pick: fc.nat(),
    field: fc.constantFrom('dtype', 'shape', 'data_offsets'),
    value: oddValue,
  }),
  fc.record({
    kind: fc.constant('delete-field' as const),
    pick: fc.nat(),
    field: fc.constantFrom('dtype', 'shape', 'data_offsets'),
  }),
  fc.record({
    kind: fc.constant('shift-offsets' as const),
    pick: fc.nat(),
    begin: fc.integer({ min: -9, max: 9 }),
    end: fc.integer({ min: -9, max: 9 }),
  }),
  fc.record({ kind: fc.constant('other-dtype' as const), pick: fc.nat(), dtype: fc.constantFrom(...dtypes) }),
  fc.record({
    kind: fc.constant('reshape' as const),
    pick: fc.nat(),
    shape: fc.array(fc.integer({ min: -1, max: 5 }), { maxLength: 4 }),
  }),
  fc.record({
    kind: fc.constant('duplicate-entry' as const),
    pick: fc.nat(),
    name: fc.string({ maxLength: 3 }),
  }),
  fc.record({ kind: fc.constant('rename-to-metadata' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('set-metadata' as const), value: oddValue }),
  fc.record({ kind: fc.constant('replace-root' as const), value: fc.jsonValue({ maxDepth: 3 }) }),
  fc.record({ kind: fc.constant('reverse-keys' as const) }), // harmless: order is free
  fc.record({
    kind: fc.constant('metadata-strings' as const),
    key: fc.string({ maxLength: 5 }),
    value: fc.string({ maxLength: 5 }),
  }), // harmless
);
type JsonEdit = typeof jsonEdit extends fc.Arbitrary<infer T> ? T : never;

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('none' as const) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({
    kind: fc.constant('flip-prefix' as const),
    index: fc.integer({ min: 0, max: 7 }),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant('set-prefix' as const), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  fc.record({
    kind: fc.constant('flip-header' as const),
    at: fc.nat(),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant('flip-anywhere' as const),
    at: fc.nat(),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant('splice-text' as const), at: fc.nat(), text: fc.string({ maxLength: 12 }) }),
  fc.record({ kind: fc.constant('json' as const), edit: jsonEdit }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function headerLengthOf(bytes: Uint8Array): number {
  if (bytes.byteLength < 8) return 0;
  const length = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return Number(length > BigInt(bytes.byteLength - 8) ? BigInt(Math.max(0, bytes.byteLength - 8)) : length);
}

/** Rebuilds a file from a header text (padded to 8) and the original data section. */
function withHeaderText(bytes: Uint8Array, text: string): Uint8Array {
  const json = new TextEncoder().encode(text);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const data = bytes.subarray(8 + headerLengthOf(bytes));
  const out = new Uint8Array(8 + padded + data.byteLength).fill(0x20, 8 + json.byteLength, 8 + padded);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.set(data, 8 + padded);
  return out;
}

function applyJsonEdit(header: Record<string, unknown>, edit: JsonEdit): unknown {
  const names = Object.keys(header).filter((key) => key !== '__metadata__');
  const pickName = (pick: number) => (names.length === 0 ? undefined : names[pick % names.length]!);
  const entryOf = (pick: number) => {
    const name = pickName(pick);
    const entry = name === undefined ? undefined : header[name];
    return typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>) : undefined;
  };
  switch (edit.kind) {
    case 'set-field': {
      const entry = entryOf(edit.pick);
      if (entry) entry[edit.field] = edit.value;
      return header;
    }
    case 'delete-field': {
      const entry = entryOf(edit.pick);
      if (entry) delete entry[edit.field];
      return header;
    }
    case 'shift-offsets': {
      const entry = entryOf(edit.pick);
      const offsets = entry?.['data_offsets'];
      if (entry && Array.isArray(offsets))
        entry['data_offsets'] = [offsets[0] + edit.begin, offsets[1] + edit.end];
      return header;
    }
    case 'other-dtype': {
      const entry = entryOf(edit.pick);
      if (entry) entry['dtype'] = edit.dtype;
      return header;
    }
    case 'reshape': {
      const entry = entryOf(edit.pick);
      if (entry) entry['shape'] = edit.shape;
      return header;
    }
    case 'duplicate-entry': {
      const entry = entryOf(edit.pick);
      if (entry) header[`${edit.name}#copy`] = { ...entry };
      return header;
    }
    case 'rename-to-metadata': {
      const name = pickName(edit.pick);
      if (name !== undefined) {
        header['__metadata__'] = header[name];
        delete header[name];
      }
      return header;
    }
    case 'set-metadata':
      header['__metadata__'] = edit.value;
      return header;
    case 'replace-root':
      return edit.value;
    case 'reverse-keys':
      return Object.fromEntries(Object.entries(header).reverse());
    case 'metadata-strings': {
      const metadata = header['__metadata__'];
      header['__metadata__'] = { ...(typeof metadata === 'object' ? metadata : {}), [edit.key]: edit.value };
      return header;
    }
  }
}

function applyMutation(bytes: Uint8Array, change: Mutation): Uint8Array {
  const out = bytes.slice();
  switch (change.kind) {
    case 'none':
      return out;
    case 'truncate':
      return out.subarray(0, change.at % (out.byteLength + 1));
    case 'extend': {
      const longer = new Uint8Array(out.byteLength + change.bytes.byteLength);
      longer.set(out);
      longer.set(change.bytes, out.byteLength);
      return longer;
    }
    case 'flip-prefix':
      if (change.index < out.byteLength) out[change.index]! ^= change.mask;
      return out;
    case 'set-prefix':
      if (out.byteLength >= 8) new DataView(out.buffer).setBigUint64(0, change.value, true);
      return out;
    case 'flip-header': {
      const headerLength = headerLengthOf(out);
      if (headerLength > 0) out[8 + (change.at % headerLength)]! ^= change.mask;
      return out;
    }
    case 'flip-anywhere':
      if (out.byteLength > 0) out[change.at % out.byteLength]! ^= change.mask;
      return out;
    case 'splice-text': {
      const text = new TextDecoder().decode(out.subarray(8, 8 + headerLengthOf(out)));
      const at = change.at % (text.length + 1);
      return withHeaderText(out, text.slice(0, at) + change.text + text.slice(at));
    }
    case 'json': {
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder().decode(out.subarray(8, 8 + headerLengthOf(out))));
      } catch {
        return out; // an earlier mutation broke the JSON; leave it broken
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) return out;
      const edited = applyJsonEdit(header as Record<string, unknown>, change.edit);
      return withHeaderText(out, JSON.stringify(edited) ?? 'undefined');
    }
  }
}

/** Checks an accepted file against the format, reading the file independently of the reader. */
async function expectConsistent(path: string, bytes: Uint8Array): Promise<void> {
  const file = await openSafetensors(path);
  try {
    const dataStart = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, dataStart))) as Record<
      string,
      unknown
    >;
    expect(new Set(file.entries.keys())).toEqual(
      new Set(Object.keys(header).filter((key) => key !== '__metadata__')),
    );
    let cursor = dataStart;
    for (const info of file.entries.values()) {
      expect(dtypes).toContain(info.dtype);
      for (const dim of info.shape) expect(Number.isSafeInteger(dim) && dim >= 0).toBe(true);
      const elements = info.shape.reduce((a, b) => a * b, 1);
      expect(info.byteLength).toBe(elements * SAFETENSORS_DTYPE_BYTES[info.dtype]);
      expect(info.byteOffset).toBe(cursor); // in order, contiguous, inside the data section
      cursor += info.byteLength;
      const raw = await file.readTensor(info.name);
      expect(raw.bytes).toEqual(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength));
    }
    expect(cursor).toBe(bytes.byteLength);
    for (const value of Object.values(file.metadata)) expect(typeof value).toBe('string');
  } finally {
    await file.close();
  }
}

describe('parser under mutation', () => {
  it('parses consistently or throws SafetensorsError for 1,500 mutated files', async () => {
    const path = join(dir, 'mutated.safetensors');
    const outcomes = { accepted: 0, rejected: 0, unchangedAccepted: 0 };
    await fc.assert(
      fc.asyncProperty(
        validFile,
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        async (original, changes) => {
          const bytes = changes.reduce(applyMutation, original);
          await writeFile(path, bytes);
          let opened = false;
          try {
            const file = await openSafetensors(path);
            await file.close();
            opened = true;
          } catch (error) {
            // Anything but our typed error (a TypeError, a RangeError, a JSON SyntaxError) fails the property.
            if (!(error instanceof SafetensorsError)) throw error;
            expect(error.message.startsWith(`${path}: `)).toBe(true);
            // A file the mutations left intact must never be rejected.
            expect(Buffer.compare(Buffer.from(bytes), Buffer.from(original))).not.toBe(0);
            outcomes.rejected += 1;
          }
          if (opened) {
            await expectConsistent(path, new Uint8Array(await readFile(path)));
            outcomes.accepted += 1;
            if (Buffer.compare(Buffer.from(bytes), Buffer.from(original)) === 0)
              outcomes.unchangedAccepted += 1;
          }
        },
      ),
      { numRuns: 1500, seed: 0x5afe7e45 },
    );
    expect(outcomes.accepted + outcomes.rejected).toBe(1500);
    // Both branches were exercised, including files that were mutated yet stayed valid.
    expect(outcomes.rejected).toBeGreaterThan(500);
    expect(outcomes.accepted - outcomes.unchangedAccepted).toBeGreaterThan(10);
    console.info(`safetensors fuzz: ${JSON.stringify(outcomes)}`);
  });
});
