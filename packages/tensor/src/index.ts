/**
 * `@rrt/tensor`: the backend-agnostic tensor interface of rrt. It imports no tensor library: a backend
 * package implements {@link Backend}, and `@rrt/tensor/testing` checks that it does so correctly.
 *
 * @packageDocumentation
 */
export type {
  AttentionOptions,
  Backend,
  DType,
  GateActivation,
  LowRankSegment,
  MatmulOptions,
  PagedAttentionOptions,
  PagedAttentionSpan,
  Shape,
  StorageDType,
  Tensor,
  TensorData,
  TensorOrScalar,
  TopK,
  ValueAndGrad,
  Variable,
} from './backend.js';
export {
  bfloat16BitsToNumber,
  bytesPerElement,
  decodeBfloat16,
  decodeFloat16,
  encodeBfloat16,
  encodeFloat16,
  float16BitsToNumber,
  numberToBfloat16Bits,
  numberToFloat16Bits,
} from './half.js';
export {
  compositeAddLowRank,
  compositeAttention,
  compositeGatedActivation,
  compositeGelu,
  compositeLayerNorm,
  compositePagedAttention,
  erfcCoefficients,
  keyBlock,
} from './composite.js';
export { formatShape, sameShape, sizeOf } from './shape.js';
