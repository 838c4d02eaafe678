import { describe, expect, it } from 'vitest';
import { SafetensorsError } from '../errors.js';
import { encodeAs, float32Bytes, int32Bytes, toFloat32, toInt32 } from './bytes.js';
import type { SafetensorsDType } from './dtype.js';
import { seededRandom } from './test-support.js';

/** Little-endian bytes of 16-bit patterns, placed at an odd offset so that views would be misaligned. */
function misaligned(bytes: Uint8Array): Uint8Array {
  const buffer = new Uint8Array(bytes.byteLength + 1);
  buffer.set(bytes, 1);
  return buffer.subarray(1);
}
function u16(bits: number[]): Uint8Array {
  return misaligned(new Uint8Array(bits.flatMap((b) => [b & 0xff, b >> 8])));
}
function raw(dtype: SafetensorsDType, bytes: Uint8Array, shape = [bytes.byteLength]) {
  return { name: 't', dtype, shape, bytes };
}

describe('toFloat32', () => {
  it('copies F32 from an unaligned buffer', () => {
    const values = new Float32Array([1.5, -0, Number.POSITIVE_INFINITY, 3.25e-40]);
    const out = toFloat32(raw('F32', misaligned(new Uint8Array(values.buffer))));
    expect([...out]).toEqual([...values]);
    expect(Object.is(out[1], -0)).toBe(true);
  });

  it('decodes F16 and BF16 landmarks', () => {
    // binary16: 1, -2, 65504, 2^-24, 0.0999755859375 (0x2e66); bfloat16: 1, -2, 2^-133, 0.10009765625 (0x3dcd).
    expect([...toFloat32(raw('F16', u16([0x3c00, 0xc000, 0x7bff, 0x0001, 0x2e66])))]).toEqual([
      1,
      -2,
      65504,
      2 ** -24,
      0.0999755859375,
    ]);
    expect([...toFloat32(raw('BF16', u16([0x3f80, 0xc000, 0x0001, 0x3dcd])))]).toEqual([
      1,
      -2,
      2 ** -133,
      0.10009765625,
    ]);
  });

  it('narrows F64 to the nearest float32 and converts integers', () => {
    const random = seededRandom(64);
    const doubles = Float64Array.from({ length: 100 }, () => (random() - 0.5) * 1e6);
    const out = toFloat32(raw('F64', misaligned(new Uint8Array(doubles.buffer))));
    expect([...out]).toEqual([...doubles].map(Math.fround));
    expect([...toFloat32(raw('I64', new Uint8Array(new BigInt64Array([-3n, 2n ** 40n]).buffer)))]).toEqual([
      -3,
      2 ** 40,
    ]);
    expect([...toFloat32(raw('I8', new Uint8Array([0xff, 5])))]).toEqual([-1, 5]);
    expect([...toFloat32(raw('BOOL', new Uint8Array([0, 2, 1])))]).toEqual([0, 1, 1]);
    expect([...toFloat32(raw('U16', u16([65535])))]).toEqual([65535]);
  });

  it('refuses FP8 and byte counts that are not whole elements', () => {
    expect(() => toFloat32(raw('F8_E4M3', new Uint8Array(2)))).toThrow(SafetensorsError);
    expect(() => toFloat32(raw('F32', new Uint8Array(6)))).toThrow(
      /tensor "t": 6 bytes are not a whole number of F32 elements/,
    );
  });
});

describe('toInt32', () => {
  it('copies I32, widens narrow types and checks wide ones', () => {
    const values = new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, 42]);
    expect([...toInt32(raw('I32', misaligned(new Uint8Array(values.buffer))))]).toEqual([...values]);
    expect([...toInt32(raw('I64', new Uint8Array(new BigInt64Array([-5n, 2147483647n]).buffer)))]).toEqual([
      -5, 2147483647,
    ]);
    expect([...toInt32(raw('U8', new Uint8Array([255])))]).toEqual([255]);
    expect([...toInt32(raw('I16', u16([0xffff])))]).toEqual([-1]);
    expect(() => toInt32(raw('I64', new Uint8Array(new BigInt64Array([2n ** 31n]).buffer)))).toThrow(
      /tensor "t": element 0 is 2147483648, outside the int32 range/,
    );
    expect(() => toInt32(raw('U32', new Uint8Array(new Uint32Array([2 ** 32 - 1]).buffer)))).toThrow(
      /outside the int32 range/,
    );
    expect(() => toInt32(raw('F32', new Uint8Array(4)))).toThrow(/expected an integer dtype, got F32/);
  });
});

describe('encoding helpers', () => {
  it('views F32 and I32 bytes without copying and encodes F16 / BF16 little-endian', () => {
    const values = new Float32Array([1, -2, 0.1]);
    const bytes = float32Bytes(values);
    expect(bytes.buffer).toBe(values.buffer);
    expect(encodeAs(values, 'F32')).toEqual(bytes);
    expect([...encodeAs(values, 'F16')]).toEqual([0x00, 0x3c, 0x00, 0xc0, 0x66, 0x2e]);
    // 0.1f is 0x3dcccccd: the dropped half 0xcccd is above the midpoint, so BF16 rounds up to 0x3dcd.
    expect([...encodeAs(values, 'BF16')]).toEqual([0x80, 0x3f, 0x00, 0xc0, 0xcd, 0x3d]);
    const ints = new Int32Array([7, -1]);
    expect([...int32Bytes(ints)]).toEqual([7, 0, 0, 0, 255, 255, 255, 255]);
    expect([...toFloat32(raw('F16', encodeAs(values, 'F16')))]).toEqual([1, -2, 0.0999755859375]);
  });
});
