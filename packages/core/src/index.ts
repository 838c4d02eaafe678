/**
 * `@rrt/core`: the rrt decoder. It loads Hugging Face checkpoints (Llama, Mistral, Qwen2, Gemma) and
 * their recursive and relaxed conversions, runs them exactly on any `@rrt/tensor` backend, and generates
 * text.
 *
 * @packageDocumentation
 */
export {
  ConfigError,
  InterruptedError,
  OutputLocationError,
  OutputRestoreError,
  RrtError,
  SafetensorsError,
  type SafetensorsErrorLocation,
  WeightError,
} from './errors.js';
export {
  assertOutputApart,
  createTempDirectory,
  type OutputInput,
  removeStaleTemporaries,
  type StaleTemporary,
} from './output-directory.js';
export { replaceDirectory } from './replace-directory.js';
export {
  type GenerateOptions,
  type GenerateTextOptions,
  encodePrompt,
  type StopReason,
  yieldToEventLoop,
  generateText,
  generateTokens,
} from './generate/generate.js';
export {
  argmax,
  createSampler,
  type Sampler,
  type SamplingOptions,
  seededRandom,
} from './generate/sampling.js';
export {
  checkLoopsRepeatLayerTypes,
  type HiddenActivation,
  type ModelConfig,
  type ModelFamily,
  type NormType,
  type ResolvedConfig,
  recursiveModelConfig,
  recursiveModelTypePrefix,
  resolveConfig,
  supportedModelTypes,
  unrolledModelConfig,
} from './model/config.js';
export {
  Decoder,
  type DecoderOptions,
  type ForwardOptions,
  type ForwardOutput,
  type LayerKV,
  type LoopOutput,
  type LoRAMode,
  type RaggedRows,
  type RowSpan,
  type SpanLayer,
} from './model/decoder.js';
export { type RopeScaling, ropeFrequencies, ropeTables } from './model/rope.js';
export { fuseQkvRows, neoxCheckpointView, neoxEmbeddingName, neoxTensorName } from './model/neox.js';
export { type LoadModelOptions, loadModel, readConfig } from './model/load.js';
export {
  type EffectiveLayer,
  effectiveLayerCount,
  exitDepths,
  type InitMethod,
  type LinearModule,
  type LoopNorm,
  layerSchedule,
  linearModules,
  loopNormNames,
  type RecursionConfig,
  recursionToJson,
  resolveRecursion,
  type SharingStrategy,
} from './model/recursion.js';
export {
  configLinearModules,
  type LayerLinears,
  type LayerNormName,
  type LayerWeights,
  layerNorms,
  type Linear,
  type LoopNorms,
  loopNormTensorName,
  normTensorName,
  type LoRA,
  linearShapes,
  type LoadWeightsOptions,
  loadWeights,
  loraKey,
  loraTensorName,
  type ModelWeights,
  moduleTensorName,
} from './model/weights.js';
export * from './safetensors/index.js';
export * from './import/index.js';
export * from './tokenizer/index.js';
