/**
 * Safetensors I/O: lazy, fully validated reading of files and sharded checkpoints, and atomic streaming
 * writing. Pure TypeScript over `node:fs/promises`; it deals in bytes, not tensors.
 *
 * @module
 */
export { encodeAs, float32Bytes, int32Bytes, toFloat32, toInt32 } from './bytes.js';
export {
  type Checkpoint,
  type CheckpointTensorInfo,
  INDEX_FILE_NAME,
  openCheckpoint,
  SINGLE_FILE_NAME,
  type ShardingOptions,
  type WrittenCheckpoint,
  writeShardedCheckpoint,
} from './checkpoint.js';
export { isSafetensorsDType, SAFETENSORS_DTYPE_BYTES, type SafetensorsDType } from './dtype.js';
export { MAX_HEADER_BYTES, type TensorInfo, type TensorPlanEntry } from './header.js';
export { openSafetensors, type RawTensor, type SafetensorsFile } from './reader.js';
export {
  createSafetensorsWriter,
  removeStaleTempFiles,
  type SafetensorsWriter,
  TEMP_SUFFIX,
  type TensorToWrite,
  writeSafetensors,
} from './writer.js';
