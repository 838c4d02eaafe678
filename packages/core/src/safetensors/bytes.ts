/**
 * Conversions between raw safetensors bytes and typed arrays.
 *
 * NOTE: typed-array views assume a little-endian host, which every platform rrt runs on (x86-64, arm64,
 * wasm) is; safetensors data is little-endian.
 *
 * @module
 */
import { decodeBfloat16, decodeFloat16, encodeBfloat16, encodeFloat16 } from '@rrt/tensor';
import { SafetensorsError } from '../errors.js';
import { SAFETENSORS_DTYPE_BYTES } from './dtype.js';
import type { RawTensor } from './reader.js';

/** Label used as the "file" of errors about tensors in memory. */
const IN_MEMORY = '(in memory)';

/**
 * The values of a tensor as a new Float32Array: F32 copied, F16 and BF16 decoded exactly, F64 and the
 * integer types rounded to the nearest float32 (exact for integers up to 2^24).
 *
 * @example
 * ```ts
 * const weights = toFloat32(await file.readTensor('model.norm.weight'));
 * ```
 *
 * @throws {@link SafetensorsError} for the FP8 dtypes (not decoded yet) or bytes that do not fit the dtype
 */
export function toFloat32(raw: RawTensor): Float32Array {
  const bytes = alignedCopy(raw);
  switch (raw.dtype) {
    case 'F32':
      return new Float32Array(bytes.buffer);
    case 'F16':
      return decodeFloat16(bytes);
    case 'BF16':
      return decodeBfloat16(bytes);
    case 'F64':
      return Float32Array.from(new Float64Array(bytes.buffer));
    case 'I64':
      return Float32Array.from(new BigInt64Array(bytes.buffer), Number);
    case 'U64':
      return Float32Array.from(new BigUint64Array(bytes.buffer), Number);
    case 'F8_E4M3':
    case 'F8_E5M2':
      throw new SafetensorsError(IN_MEMORY, `dtype ${raw.dtype} cannot be converted to float32 yet`, {
        tensor: raw.name,
        field: 'dtype',
      });
    default:
      return Float32Array.from(smallIntegers(raw, bytes));
  }
}

/**
 * The values of an integer tensor as a new Int32Array: I32 copied, narrower types widened, BOOL as 0/1,
 * U32 / I64 / U64 checked to fit in int32.
 *
 * @throws {@link SafetensorsError} for floating-point dtypes or a value outside the int32 range
 */
export function toInt32(raw: RawTensor): Int32Array {
  const bytes = alignedCopy(raw);
  switch (raw.dtype) {
    case 'I32':
      return new Int32Array(bytes.buffer);
    case 'U32':
    case 'I64':
    case 'U64': {
      const source =
        raw.dtype === 'U32'
          ? new Uint32Array(bytes.buffer)
          : raw.dtype === 'I64'
            ? new BigInt64Array(bytes.buffer)
            : new BigUint64Array(bytes.buffer);
      const out = new Int32Array(source.length);
      for (let i = 0; i < source.length; i++) {
        const value = Number(source[i]!);
        if (value < -2147483648 || value > 2147483647) {
          throw new SafetensorsError(IN_MEMORY, `element ${i} is ${source[i]}, outside the int32 range`, {
            tensor: raw.name,
          });
        }
        out[i] = value;
      }
      return out;
    }
    case 'BOOL':
    case 'U8':
    case 'I8':
    case 'I16':
    case 'U16':
      return Int32Array.from(smallIntegers(raw, bytes));
    default:
      throw new SafetensorsError(IN_MEMORY, `expected an integer dtype, got ${raw.dtype}`, {
        tensor: raw.name,
        field: 'dtype',
      });
  }
}

/** A Uint8Array view (no copy) of a Float32Array's bytes, for writing an F32 tensor. */
export function float32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** A Uint8Array view (no copy) of an Int32Array's bytes, for writing an I32 tensor. */
export function int32Bytes(values: Int32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * Float32 values as the bytes of an F32, F16 or BF16 tensor (F16/BF16 rounded to nearest even; F32 is a
 * view, not a copy).
 *
 * @example
 * ```ts
 * const bytes = encodeAs(new Float32Array([0.1, 0.2]), 'BF16'); // 4 bytes
 * ```
 */
export function encodeAs(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return float32Bytes(values);
  return dtype === 'F16' ? encodeFloat16(values) : encodeBfloat16(values);
}

/** A copy of the bytes in a fresh buffer (aligned for any view), after checking the length fits the dtype. */
function alignedCopy(raw: RawTensor): Uint8Array {
  const size = SAFETENSORS_DTYPE_BYTES[raw.dtype];
  if (size === undefined || raw.bytes.byteLength % size !== 0) {
    throw new SafetensorsError(
      IN_MEMORY,
      `${raw.bytes.byteLength} bytes are not a whole number of ${raw.dtype} elements`,
      { tensor: raw.name },
    );
  }
  return raw.bytes.slice();
}

function smallIntegers(raw: RawTensor, bytes: Uint8Array): ArrayLike<number> {
  switch (raw.dtype) {
    case 'I8':
      return new Int8Array(bytes.buffer);
    case 'I16':
      return new Int16Array(bytes.buffer);
    case 'U16':
      return new Uint16Array(bytes.buffer);
    case 'I32':
      return new Int32Array(bytes.buffer);
    case 'U32':
      return new Uint32Array(bytes.buffer);
    case 'BOOL':
      return bytes.map((byte) => (byte === 0 ? 0 : 1));
    default:
      return bytes; // U8
  }
}
