/**
 * Helpers shared by the safetensors tests: a seeded PRNG, temporary directories, and a byte-level file
 * builder that does not use the writer (so tests can build invalid files). Not exported by the package.
 *
 * @internal
 * @module
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The seeded stream of core's samplers (mulberry32), so failures reproduce from their seed.
export { seededRandom } from '../generate/sampling.js';

/** `count` random bytes from `random`. */
export function randomBytes(random: () => number, count: number): Uint8Array {
  const bytes = new Uint8Array(count);
  for (let i = 0; i < count; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
}

/** A fresh temporary directory and a function that removes it. */
export async function makeTempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `rrt-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * The bytes of a safetensors-like file: an 8-byte little-endian length (`length` overrides the true
 * one), the header text (or object, serialized as is) and the data bytes.
 */
export function fileBytes(
  header: string | object,
  data: Uint8Array = new Uint8Array(0),
  length?: bigint,
): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

/** Writes {@link fileBytes} to `path`. */
export async function writeRawFile(
  path: string,
  header: string | object,
  data?: Uint8Array,
  length?: bigint,
): Promise<string> {
  await writeFile(path, fileBytes(header, data, length));
  return path;
}
