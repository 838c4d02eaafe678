/**
 * {@link exportUnrolled}: a recursive or relaxed model back to N plain layers, LoRA merged, as a vanilla
 * Hugging Face checkpoint any engine can load.
 *
 * @module
 */
import { resolve } from 'node:path';
import {
  assertOutputApart,
  layerNorms,
  layerSchedule,
  linearModules,
  type LoopNorm,
  loopNormTensorName,
  normTensorName,
  linearShapes,
  loraTensorName,
  moduleTensorName,
  type TensorPlanEntry,
  unrolledModelConfig,
} from '@rrt/core';
import { type Backend, sizeOf } from '@rrt/tensor';
import { InvalidOptionError } from './errors.js';
import { addLowRank, type FloatDType, isFloatDType, storeAs, torchDtypeNames } from './numeric.js';
import { type TensorProgress, TensorStream, writeModelDirectory } from './output.js';
import { addCopy, checkDecoderTensors, openSource } from './source.js';

/** Options of {@link exportUnrolled}. */
export interface ExportOptions {
  /** dtype of the output; default that of the stored layer 0's `q_proj`. */
  outputDtype?: FloatDType;
  /** Backend for the `B · A` products of large modules (float32); without one they run in float64 here. */
  backend?: Backend;
  /** Most tensor bytes per output shard; default 5 GB. */
  maxShardBytes?: number;
  /** Replace an existing output directory; default false. */
  overwrite?: boolean;
  /** Called once per output tensor, in write order. */
  onProgress?: (progress: TensorProgress) => void;
  /** Stops the export before the next tensor: its temporary output is removed, nothing is written. */
  signal?: AbortSignal;
}

/** What {@link exportUnrolled} wrote. */
export interface ExportResult {
  outDir: string;
  /** The `config.json` written: the source's, without `recursion`. */
  config: Record<string, unknown>;
  /** N, the layers written. */
  numLayers: number;
  /** Parameters of the unrolled model. */
  parameters: number;
  outputDtype: FloatDType;
  copiedFiles: string[];
  seconds: number;
}

/**
 * Writes the N effective layers of a recursive or relaxed model as plain layers: layer ℓ gets the norms
 * and biases of its stored layer and, for each module, `W_shared + (α/r)·B·A` of its loop (computed in
 * float64 from the stored values, then rounded once to the output dtype). The config loses its
 * `recursion` section. Streaming and atomic like {@link convertToRecursive}.
 *
 * @example
 * ```ts
 * await exportUnrolled('models/llama-rrt', 'models/llama-rrt-unrolled');
 * ```
 */
export async function exportUnrolled(
  sourceDir: string,
  outDir: string,
  options: ExportOptions = {},
): Promise<ExportResult> {
  const started = performance.now();
  if (options.outputDtype !== undefined && !isFloatDType(options.outputDtype)) {
    throw new InvalidOptionError('outputDtype', 'F32, F16 or BF16', options.outputDtype);
  }
  await assertOutputApart(outDir, [{ path: sourceDir }]);
  const source = await openSource(sourceDir, 'recursive');
  try {
    const { config } = source;
    const recursion = config.recursion!;
    const shapes = linearShapes(config);
    const hidden = [config.hiddenSize];
    // Check everything that will be read before writing anything.
    const storedLayers = Array.from({ length: recursion.storedLayers }, (_, layer) => layer);
    const storedDtype = checkDecoderTensors(source, storedLayers);
    const hasHead = source.checkpoint.has('lm_head.weight');
    const schedule = layerSchedule(recursion, config.numHiddenLayers);
    for (const step of schedule) {
      if (!step.shared) continue;
      for (const norm of recursion.loopNorms ?? []) {
        const width = norm === 'q_norm' || norm === 'k_norm' ? config.headDim : config.hiddenSize;
        source.check(loopNormTensorName(step.loopIndex, step.blockLayer, norm), [width]);
      }
      for (const module of linearModules) {
        const rank = recursion.loraRanks[module];
        if (rank === 0) continue;
        const [outFeatures, inFeatures] = shapes[module];
        const prefix = loraTensorName(step.loopIndex, step.blockLayer, module);
        source.check(`${prefix}.lora_A.weight`, [rank, inFeatures]);
        source.check(`${prefix}.lora_B.weight`, [outFeatures, rank]);
      }
    }
    const outputDtype = options.outputDtype ?? storedDtype;

    const stream = new TensorStream('export', options.onProgress, options.signal);
    const copy = (from: string, to: string, shape: readonly number[]) =>
      addCopy(stream, source, from, to, shape, outputDtype);
    copy('model.embed_tokens.weight', 'model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]);
    for (const step of schedule) {
      const { depth, blockLayer, loopIndex } = step;
      for (const { norm, width } of layerNorms(config)) {
        // A norm kept per loop unrolls to that loop's copy; a shared one to the stored layer's.
        const perLoop = step.shared && (recursion.loopNorms ?? []).includes(norm as LoopNorm);
        const from = perLoop
          ? loopNormTensorName(loopIndex, blockLayer, norm)
          : normTensorName(blockLayer, norm);
        copy(from, normTensorName(depth, norm), [width]);
      }
      for (const module of linearModules) {
        const [outFeatures, inFeatures] = shapes[module];
        const rank = step.shared ? recursion.loraRanks[module] : 0;
        const name = `${moduleTensorName(depth, module)}.weight`;
        const entry: TensorPlanEntry = { name, dtype: outputDtype, shape: [outFeatures, inFeatures] };
        stream.add([entry], async () => {
          const storedName = `${moduleTensorName(blockLayer, module)}.weight`;
          if (rank === 0) return new Map([[name, await source.readAs(storedName, outputDtype)]]);
          const prefix = loraTensorName(loopIndex, blockLayer, module);
          const merged = await addLowRank(
            await source.readValues(storedName),
            await source.readValues(`${prefix}.lora_B.weight`),
            await source.readValues(`${prefix}.lora_A.weight`),
            outFeatures,
            inFeatures,
            rank,
            recursion.loraAlpha / rank,
            options.backend,
          );
          return new Map([[name, storeAs(merged, outputDtype).bytes]]);
        });
        if (config.biasedModules.includes(module)) {
          copy(`${moduleTensorName(blockLayer, module)}.bias`, `${moduleTensorName(depth, module)}.bias`, [
            outFeatures,
          ]);
        }
      }
    }
    copy('model.norm.weight', 'model.norm.weight', hidden);
    if (hasHead) copy('lm_head.weight', 'lm_head.weight', [config.vocabSize, config.hiddenSize]);

    const outputConfig: Record<string, unknown> = {
      ...unrolledModelConfig(source.rawConfig),
      num_hidden_layers: config.numHiddenLayers,
      torch_dtype: torchDtypeNames[outputDtype],
    };
    const copiedFiles = await writeModelDirectory(
      { outDir, overwrite: options.overwrite, maxShardBytes: options.maxShardBytes },
      sourceDir,
      stream.tensors,
      outputConfig,
      source.assertUnchanged,
    );
    return {
      outDir: resolve(outDir),
      config: outputConfig,
      numLayers: config.numHiddenLayers,
      parameters: stream.tensors.reduce((total, tensor) => total + sizeOf(tensor.shape), 0),
      outputDtype,
      copiedFiles,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await source.close();
  }
}
