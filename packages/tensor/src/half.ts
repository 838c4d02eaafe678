/**
 * IEEE 754 half precision (binary16) and bfloat16 conversions, exact to the definitions: encoding
 * rounds to nearest, ties to even; NaN stays NaN; overflow becomes ±∞; subnormals are kept.
 *
 * @module
 */

const scratch = new DataView(new ArrayBuffer(4));

/** Decodes one binary16 bit pattern to a number. */
export function float16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Encodes a number as binary16 bits (round to nearest even). */
export function numberToFloat16Bits(value: number): number {
  scratch.setFloat32(0, value);
  const f32 = scratch.getUint32(0);
  const sign = (f32 >>> 16) & 0x8000;
  const exponent = (f32 >>> 23) & 0xff;
  let mantissa = f32 & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  // Work from the float32 value: half's exponent range is [-14, 15] for normals.
  const unbiased = exponent - 127;
  if (unbiased > 15) return sign | 0x7c00;
  if (unbiased >= -14) {
    // Normal half: keep 10 mantissa bits, round the 13 dropped ones to nearest even.
    let half = ((unbiased + 15) << 10) | (mantissa >>> 13);
    const dropped = mantissa & 0x1fff;
    if (dropped > 0x1000 || (dropped === 0x1000 && (half & 1) === 1)) half += 1; // may carry into ∞: correct
    return sign | half;
  }
  if (unbiased < -25) return sign; // below half the smallest subnormal: rounds to zero
  // Subnormal half: value = m · 2^-24 with the implicit bit made explicit.
  mantissa |= 0x800000;
  const shift = -unbiased - 14 + 13; // bits to drop from the 24-bit significand
  let half = mantissa >>> shift;
  const dropped = mantissa & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (dropped > halfway || (dropped === halfway && (half & 1) === 1)) half += 1;
  return sign | half;
}

/** Decodes one bfloat16 bit pattern to a number. */
export function bfloat16BitsToNumber(bits: number): number {
  scratch.setUint32(0, (bits & 0xffff) << 16);
  return scratch.getFloat32(0);
}

/** Encodes a number as bfloat16 bits (round to nearest even; NaN stays a quiet NaN). */
export function numberToBfloat16Bits(value: number): number {
  scratch.setFloat32(0, value);
  const f32 = scratch.getUint32(0);
  if ((f32 & 0x7f800000) === 0x7f800000 && (f32 & 0x7fffff) !== 0) return ((f32 >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((f32 >>> 16) & 1);
  return ((f32 + rounding) >>> 16) & 0xffff;
}

/** Decodes little-endian binary16 bytes into a new Float32Array. */
export function decodeFloat16(bytes: Uint8Array): Float32Array {
  const count = bytes.byteLength >>> 1;
  const out = new Float32Array(count);
  const table = float16Table();
  for (let i = 0; i < count; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
  return out;
}

/** Decodes little-endian bfloat16 bytes into a new Float32Array. */
export function decodeBfloat16(bytes: Uint8Array): Float32Array {
  const count = bytes.byteLength >>> 1;
  const out = new Float32Array(count);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < count; i++) outBits[i] = (bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16;
  return out;
}

/** Encodes values as little-endian binary16 bytes. */
export function encodeFloat16(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const bits = numberToFloat16Bits(values[i]!);
    out[2 * i] = bits & 0xff;
    out[2 * i + 1] = bits >>> 8;
  }
  return out;
}

/** Encodes values as little-endian bfloat16 bytes. */
export function encodeBfloat16(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const bits = numberToBfloat16Bits(values[i]!);
    out[2 * i] = bits & 0xff;
    out[2 * i + 1] = bits >>> 8;
  }
  return out;
}

let cachedFloat16Table: Float32Array | undefined;
function float16Table(): Float32Array {
  if (!cachedFloat16Table) {
    cachedFloat16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) cachedFloat16Table[bits] = float16BitsToNumber(bits);
  }
  return cachedFloat16Table;
}

/** Bytes per element of a storage dtype. */
export function bytesPerElement(dtype: 'float32' | 'float16' | 'bfloat16' | 'int32'): number {
  return dtype === 'float16' || dtype === 'bfloat16' ? 2 : 4;
}
