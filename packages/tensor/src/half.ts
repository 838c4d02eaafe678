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

/** Encodes a number as binary16 bits (round to nearest even; NaN becomes the quiet NaN 0x7e00). */
export function numberToFloat16Bits(value: number): number {
  // NOTE: a value that is not exactly a float32 is rounded from its float64 value directly: going
  // through float32 first (as this once did for every input) rounds twice and breaks near-ties the wrong
  // way, e.g. 713.7499999993508. Exact float32 values (all of a Float32Array) take the bit-level path,
  // about 5x faster.
  if (Math.fround(value) === value) return float32ToFloat16Bits(value);
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 ? 0x8000 : 0; // ±0 took the float32 path
  const magnitude = Math.abs(value);
  // 65520 is halfway between the largest finite half (65504) and 2^16; the tie goes to the even
  // neighbour, which is the overflow to ∞. This also covers ∞ itself.
  if (magnitude >= 65520) return sign | 0x7c00;
  // Subnormal halves are the multiples of 2^-24; rounding up to 1024 gives the smallest normal (0x0400).
  if (magnitude < 2 ** -14) return sign | roundHalfToEven(magnitude * 2 ** 24);
  const exponent = float64Exponent(magnitude);
  // The significand scaled to [1024, 2048]; a carry to 2048 moves into the next binade, as it should.
  const significand = roundHalfToEven(magnitude * 2 ** (10 - exponent));
  return sign | (((exponent + 15) << 10) + significand - 1024);
}

/** Decodes one bfloat16 bit pattern to a number. */
export function bfloat16BitsToNumber(bits: number): number {
  scratch.setUint32(0, (bits & 0xffff) << 16);
  return scratch.getFloat32(0);
}

/** Encodes a number as bfloat16 bits (round to nearest even; NaN becomes the quiet NaN 0x7fc0). */
export function numberToBfloat16Bits(value: number): number {
  // NOTE: as for binary16, only exact float32 values may take the float32 bit path (double rounding).
  if (Math.fround(value) === value) return float32ToBfloat16Bits(value);
  if (Number.isNaN(value)) return 0x7fc0;
  const sign = value < 0 ? 0x8000 : 0; // ±0 took the float32 path
  const magnitude = Math.abs(value);
  // Halfway between the largest finite bfloat16, (2 - 2^-7)·2^127, and 2^128: ties go to ∞.
  if (magnitude >= BFLOAT16_OVERFLOW) return sign | 0x7f80;
  // Subnormal bfloat16 values are the multiples of 2^-133.
  if (magnitude < 2 ** -126) return sign | roundHalfToEven(magnitude * 2 ** 133);
  const exponent = float64Exponent(magnitude);
  const significand = roundHalfToEven(magnitude * 2 ** (7 - exponent)); // in [128, 256]
  return sign | (((exponent + 127) << 7) + significand - 128);
}

/** binary16 bits of a value that is exactly a float32 (round to nearest even on the float32 bits). */
function float32ToFloat16Bits(value: number): number {
  scratch.setFloat32(0, value);
  const f32 = scratch.getUint32(0);
  const sign = (f32 >>> 16) & 0x8000;
  const exponent = (f32 >>> 23) & 0xff;
  let mantissa = f32 & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  // Half's exponent range is [-14, 15] for normals.
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

/** bfloat16 bits of a value that is exactly a float32 (NaN stays a quiet NaN). */
function float32ToBfloat16Bits(value: number): number {
  scratch.setFloat32(0, value);
  const f32 = scratch.getUint32(0);
  if ((f32 & 0x7f800000) === 0x7f800000 && (f32 & 0x7fffff) !== 0) return ((f32 >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((f32 >>> 16) & 1);
  return ((f32 + rounding) >>> 16) & 0xffff;
}

const BFLOAT16_OVERFLOW = (2 - 2 ** -8) * 2 ** 127;
const scratch64 = new DataView(new ArrayBuffer(8));

/** ⌊log2 x⌋ for a positive normal float64, read from its exponent field (exact, unlike Math.log2). */
function float64Exponent(x: number): number {
  scratch64.setFloat64(0, x);
  return ((scratch64.getUint16(0) >>> 4) & 0x7ff) - 1023;
}

/**
 * Rounds a non-negative number below 2^52 to an integer, ties to even. Every step is exact: `scaled`
 * came from a power-of-two scaling, and `scaled - floor(scaled)` is exact for such numbers.
 */
function roundHalfToEven(scaled: number): number {
  const floor = Math.floor(scaled);
  const fraction = scaled - floor;
  if (fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1)) return floor + 1;
  return floor;
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
