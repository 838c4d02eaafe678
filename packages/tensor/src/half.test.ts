/**
 * The half-precision codecs checked against references written here from the IEEE 754 definitions:
 * decoding by the textbook formula (powers of two), encoding by locating the input between the two
 * neighbouring representable values in a sorted table and comparing it with their exact midpoint
 * (midpoints of adjacent binary16/bfloat16 values need at most 12 significant bits, so float64 holds them
 * exactly and every comparison below is exact).
 */
import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToNumber,
  decodeBfloat16,
  decodeFloat16,
  encodeBfloat16,
  encodeFloat16,
  float16BitsToNumber,
  numberToBfloat16Bits,
  numberToFloat16Bits,
} from './half.js';
import { SeededRandom } from './testing/random.js';

/** The conformance suite's seeded stream (mulberry32) as a function, so a failure reproduces. */
function mulberry32(seed: number): () => number {
  const random = new SeededRandom(seed);
  return () => random.next();
}

/** A format described by its field widths, enough to define its values and its rounding. */
interface HalfFormat {
  readonly name: string;
  readonly exponentBits: number;
  readonly mantissaBits: number;
}
const binary16: HalfFormat = { name: 'binary16', exponentBits: 5, mantissaBits: 10 };
const bfloat16: HalfFormat = { name: 'bfloat16', exponentBits: 8, mantissaBits: 7 };

/** The value of a bit pattern by the IEEE 754 definition: (-1)^s · 2^(e-bias) · (1 + m/2^p), or subnormal. */
function referenceDecode(format: HalfFormat, bits: number): number {
  const p = format.mantissaBits;
  const bias = 2 ** (format.exponentBits - 1) - 1;
  const maxExponent = 2 ** format.exponentBits - 1;
  const sign = (bits >> (format.exponentBits + p)) & 1 ? -1 : 1;
  const exponent = (bits >> p) & maxExponent;
  const mantissa = bits & ((1 << p) - 1);
  if (exponent === maxExponent) return mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  if (exponent === 0) return sign * mantissa * 2 ** (1 - bias - p);
  return sign * (1 + mantissa / 2 ** p) * 2 ** (exponent - bias);
}

/**
 * Round-to-nearest-even by search: the non-negative finite patterns are increasing in their bits, and the
 * pattern after the largest finite one (+∞) is treated as the next power of two for the midpoint, which
 * is what IEEE overflow rounding means.
 */
function makeReferenceEncoder(format: HalfFormat): (value: number) => number {
  const p = format.mantissaBits;
  const infinityBits = ((1 << format.exponentBits) - 1) << p;
  const signBit = 1 << (format.exponentBits + p);
  const values = new Float64Array(infinityBits + 1);
  for (let bits = 0; bits < infinityBits; bits++) values[bits] = referenceDecode(format, bits);
  const bias = 2 ** (format.exponentBits - 1) - 1;
  values[infinityBits] = 2 ** (bias + 1);
  return (value: number) => {
    if (Number.isNaN(value)) return Number.NaN;
    const sign = value < 0 || Object.is(value, -0) ? signBit : 0;
    const magnitude = Math.abs(value);
    if (magnitude === Number.POSITIVE_INFINITY) return sign | infinityBits;
    // Largest pattern whose value is <= magnitude.
    let lo = 0;
    let hi = infinityBits;
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (values[mid]! <= magnitude) lo = mid;
      else hi = mid;
    }
    if (values[lo] === magnitude) return sign | lo;
    const midpoint = (values[lo]! + values[lo + 1]!) / 2;
    if (magnitude < midpoint) return sign | lo;
    if (magnitude > midpoint) return sign | (lo + 1);
    return sign | (lo % 2 === 0 ? lo : lo + 1);
  };
}

const referenceFloat16 = makeReferenceEncoder(binary16);
const referenceBfloat16 = makeReferenceEncoder(bfloat16);

function isNaNBits(format: HalfFormat, bits: number): boolean {
  const p = format.mantissaBits;
  const maxExponent = 2 ** format.exponentBits - 1;
  return ((bits >> p) & maxExponent) === maxExponent && (bits & ((1 << p) - 1)) !== 0;
}

/** Every float32 bit pattern class: random bits cover normals, subnormals, ±0, ±∞ and NaN. */
function randomFloat32Values(random: () => number, count: number): Float32Array {
  const bits = new Uint32Array(count);
  for (let i = 0; i < count; i++) bits[i] = Math.floor(random() * 4294967296);
  return new Float32Array(bits.buffer);
}

/** Values near the rounding boundaries of a format: exact midpoints and float64 values just beside them. */
function boundaryValues(format: HalfFormat, random: () => number, count: number): number[] {
  const p = format.mantissaBits;
  const infinityBits = ((1 << format.exponentBits) - 1) << p;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const bits = Math.floor(random() * infinityBits);
    const lower = referenceDecode(format, bits);
    // Above the largest finite value the next "value" is 2^(bias + 1), where overflow rounding splits.
    const upper =
      bits + 1 === infinityBits ? 2 ** (2 ** (format.exponentBits - 1)) : referenceDecode(format, bits + 1);
    const midpoint = (lower + upper) / 2;
    const sign = random() < 0.5 ? -1 : 1;
    // The nudge is far below float32 resolution, so a codec that rounds through float32 first (double
    // rounding) lands on the midpoint and breaks the tie the wrong way.
    const nudge = midpoint * 2 ** -40;
    out.push(sign * midpoint, sign * (midpoint + nudge), sign * (midpoint - nudge));
  }
  return out;
}

describe('binary16 decoding', () => {
  it('matches the IEEE definition for all 65,536 bit patterns', () => {
    const bytes = new Uint8Array(65536 * 2);
    for (let bits = 0; bits < 65536; bits++) {
      bytes[2 * bits] = bits & 0xff;
      bytes[2 * bits + 1] = bits >> 8;
    }
    const decoded = decodeFloat16(bytes);
    let mismatches = 0;
    for (let bits = 0; bits < 65536; bits++) {
      const expected = referenceDecode(binary16, bits);
      // Object.is tells -0 from +0 and accepts NaN for NaN.
      if (!Object.is(float16BitsToNumber(bits), expected)) mismatches++;
      if (!Object.is(decoded[bits], expected)) mismatches++;
    }
    expect(mismatches).toBe(0);
  });

  it('decodes landmarks: 1, -2, max finite, smallest subnormal and normal, ±0, ±∞, NaN', () => {
    expect(float16BitsToNumber(0x3c00)).toBe(1);
    expect(float16BitsToNumber(0xc000)).toBe(-2);
    expect(float16BitsToNumber(0x7bff)).toBe(65504);
    expect(float16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(float16BitsToNumber(0x0400)).toBe(2 ** -14);
    expect(Object.is(float16BitsToNumber(0x8000), -0)).toBe(true);
    expect(float16BitsToNumber(0x7c00)).toBe(Number.POSITIVE_INFINITY);
    expect(float16BitsToNumber(0xfc00)).toBe(Number.NEGATIVE_INFINITY);
    expect(float16BitsToNumber(0x7e00)).toBeNaN();
  });
});

describe('bfloat16 decoding', () => {
  it('matches the IEEE-style definition (8-bit exponent, 7-bit mantissa) for all 65,536 bit patterns', () => {
    const bytes = new Uint8Array(65536 * 2);
    for (let bits = 0; bits < 65536; bits++) {
      bytes[2 * bits] = bits & 0xff;
      bytes[2 * bits + 1] = bits >> 8;
    }
    const decoded = decodeBfloat16(bytes);
    let mismatches = 0;
    for (let bits = 0; bits < 65536; bits++) {
      const expected = referenceDecode(bfloat16, bits);
      if (!Object.is(bfloat16BitsToNumber(bits), expected)) mismatches++;
      if (!Object.is(decoded[bits], expected)) mismatches++;
    }
    expect(mismatches).toBe(0);
  });
});

describe.each([
  { format: binary16, encode: numberToFloat16Bits, reference: referenceFloat16 },
  { format: bfloat16, encode: numberToBfloat16Bits, reference: referenceBfloat16 },
])('$format.name encoding', ({ format, encode, reference }) => {
  function mismatchesOn(values: ArrayLike<number>): string[] {
    const failures: string[] = [];
    for (let i = 0; i < values.length; i++) {
      const value = values[i]!;
      const actual = encode(value);
      const expected = reference(value);
      const ok = Number.isNaN(expected) ? isNaNBits(format, actual) : actual === expected;
      if (!ok && failures.length < 5)
        failures.push(`${value}: got 0x${actual.toString(16)}, want 0x${expected.toString(16)}`);
    }
    return failures;
  }

  it('round-trips every non-NaN bit pattern exactly', () => {
    const failures: string[] = [];
    for (let bits = 0; bits < 65536; bits++) {
      if (isNaNBits(format, bits)) continue;
      const back = encode(referenceDecode(format, bits));
      if (back !== bits && failures.length < 5)
        failures.push(`0x${bits.toString(16)} -> 0x${back.toString(16)}`);
    }
    expect(failures).toEqual([]);
  });

  it('rounds 200,000 random float32 values (all classes) to nearest, ties to even', () => {
    expect(mismatchesOn(randomFloat32Values(mulberry32(0x5eed16), 200_000))).toEqual([]);
  });

  it('rounds exact ties to even and near-ties (float64 inputs) to the nearer neighbour', () => {
    expect(mismatchesOn(boundaryValues(format, mulberry32(0x71e5), 20_000))).toEqual([]);
  });

  it('rounds random float64 values across the whole range', () => {
    const random = mulberry32(0xf64);
    const values: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const exponent = Math.floor(random() * 320) - 160;
      values.push((random() < 0.5 ? -1 : 1) * (1 + random()) * 2 ** exponent);
    }
    expect(mismatchesOn(values)).toEqual([]);
  });

  it('keeps NaN, ±∞ and ±0, and overflows to ∞', () => {
    const infinity = format === binary16 ? 0x7c00 : 0x7f80;
    const signBit = 0x8000;
    expect(isNaNBits(format, encode(Number.NaN))).toBe(true);
    expect(encode(Number.POSITIVE_INFINITY)).toBe(infinity);
    expect(encode(Number.NEGATIVE_INFINITY)).toBe(signBit | infinity);
    expect(encode(0)).toBe(0);
    expect(encode(-0)).toBe(signBit);
    expect(encode(1e300)).toBe(infinity);
    expect(encode(-1e300)).toBe(signBit | infinity);
  });
});

describe('binary16 landmarks', () => {
  it('overflows at exactly 65520 (the tie between 65504 and 2^16 goes to even, i.e. ∞)', () => {
    expect(numberToFloat16Bits(65504)).toBe(0x7bff);
    expect(numberToFloat16Bits(65519.99)).toBe(0x7bff);
    expect(numberToFloat16Bits(65520)).toBe(0x7c00);
  });
  it('rounds below half the smallest subnormal to zero and the tie 2^-25 to even (zero)', () => {
    expect(numberToFloat16Bits(2 ** -25)).toBe(0);
    expect(numberToFloat16Bits(2 ** -25 * 1.0001)).toBe(1);
    expect(numberToFloat16Bits(3 * 2 ** -25)).toBe(2); // tie between 1 and 2 ulps: even is 2
    expect(numberToFloat16Bits(-(2 ** -26))).toBe(0x8000);
  });
  it('ties to even in the normal range: 1 + 2^-11 -> 1, 1 + 3·2^-11 -> 1 + 2^-9', () => {
    expect(numberToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(numberToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
  });
});

describe('byte codecs', () => {
  it('write little-endian pairs and decode them back', () => {
    expect([...encodeFloat16([1, -2])]).toEqual([0x00, 0x3c, 0x00, 0xc0]);
    expect([...encodeBfloat16([1, -2])]).toEqual([0x80, 0x3f, 0x00, 0xc0]);
    const random = mulberry32(7);
    const values = randomFloat32Values(random, 4096).map((v) => (Number.isFinite(v) ? v : 0));
    const viaF16 = decodeFloat16(encodeFloat16(values));
    const viaBf16 = decodeBfloat16(encodeBfloat16(values));
    for (let i = 0; i < values.length; i++) {
      expect(Object.is(viaF16[i], float16BitsToNumber(referenceFloat16(values[i]!)))).toBe(true);
      expect(Object.is(viaBf16[i], bfloat16BitsToNumber(referenceBfloat16(values[i]!)))).toBe(true);
    }
  });
});
