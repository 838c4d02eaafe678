/**
 * A decoder whose weights are backend variables, listed as named parameters, and its export back to a
 * Hugging Face model directory.
 *
 * @module
 */
import { copyFile, mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  Decoder,
  encodeAs,
  type LayerWeights,
  type Linear,
  type LinearModule,
  type LoopNorm,
  type LoopNorms,
  type LoRA,
  linearModules,
  loadModel,
  loopNormTensorName,
  loraKey,
  loraTensorName,
  type ModelConfig,
  type ModelWeights,
  moduleTensorName,
  normTensorName,
  writeSafetensors,
} from '@rrt/core';
import type { Backend, Tensor, Variable } from '@rrt/tensor';
import { UnsupportedModelError } from './errors.js';

/** How a parameter's in-memory tensor relates to its checkpoint tensor. */
export type ParameterLayout =
  /** Stored as in the checkpoint. */
  | 'plain'
  /** A matrix held `[in, out]`, the transpose of the checkpoint's `[out, in]`. */
  | 'transposed'
  /** An RMSNorm gain held as `1 + w` (Gemma), the checkpoint holding `w`. */
  | 'norm-add-one';

/** One trainable tensor of a model. */
export interface Parameter {
  /** Its Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`, ...). */
  name: string;
  /** Its value, updated in place by the optimizer. */
  variable: Variable;
  layout: ParameterLayout;
  /** What kind of weight it is: weight decay applies to `matrix` and `lora` only. */
  kind: 'embedding' | 'matrix' | 'bias' | 'norm' | 'lora';
}

/**
 * A {@link Decoder} over variables. Its forward pass is the decoder's own; training differentiates it
 * with respect to {@link TrainableModel.parameters}.
 */
export class TrainableModel {
  /** Every trainable tensor, in checkpoint order (embedding, layers, LoRA, final norm, head). */
  readonly parameters: readonly Parameter[];
  /** The decoder that runs the forward pass. */
  readonly decoder: Decoder;

  /** Wraps a loaded decoder: its weights become variables; `source` is disposed. */
  constructor(
    readonly backend: Backend,
    source: Decoder,
    /** The model directory it was loaded from (config and tokenizer files are copied from it on export). */
    readonly sourceDir: string,
  ) {
    const { config } = source;
    if (config.normType === 'layer') {
      // NOTE: the trainable weights hold no LayerNorm biases and no per-loop LoRA biases yet.
      source.dispose();
      throw new UnsupportedModelError(
        sourceDir,
        `training ${config.modelType} models (LayerNorm with bias) is not supported yet`,
      );
    }
    const parameters: Parameter[] = [];
    const variable = (tensor: Tensor, name: string, layout: ParameterLayout, kind: Parameter['kind']) => {
      const v = backend.variable(tensor, name);
      parameters.push({ name, variable: v, layout, kind });
      return v;
    };
    const normLayout: ParameterLayout = config.normAddOne ? 'norm-add-one' : 'plain';
    const w = source.weights;
    const embedding = variable(w.embedding, 'model.embed_tokens.weight', 'plain', 'embedding');
    const layers: LayerWeights[] = w.layers.map((layer, blockLayer) => {
      const linears = {} as Record<LinearModule, Linear>;
      for (const module of linearModules) {
        const prefix = moduleTensorName(blockLayer, module);
        const linear = layer.linears[module];
        if (!linear) continue;
        linears[module] = {
          weight: variable(linear.weight, `${prefix}.weight`, 'transposed', 'matrix'),
          ...(linear.bias ? { bias: variable(linear.bias, `${prefix}.bias`, 'plain', 'bias') } : {}),
        };
      }
      const trained: LayerWeights = {
        inputNorm: variable(
          layer.inputNorm,
          `model.layers.${blockLayer}.input_layernorm.weight`,
          normLayout,
          'norm',
        ),
        postAttentionNorm: variable(
          layer.postAttentionNorm,
          `model.layers.${blockLayer}.post_attention_layernorm.weight`,
          normLayout,
          'norm',
        ),
        linears,
      };
      // The norms of Qwen3 and Gemma 2/3 layers beyond the two every layer has.
      const extra = [
        ['qNorm', 'q_norm'],
        ['kNorm', 'k_norm'],
        ['preFeedforwardNorm', 'pre_feedforward_layernorm'],
        ['postFeedforwardNorm', 'post_feedforward_layernorm'],
      ] as const;
      for (const [field, norm] of extra) {
        const tensor = layer[field];
        if (tensor) trained[field] = variable(tensor, normTensorName(blockLayer, norm), normLayout, 'norm');
      }
      return trained;
    });
    let loopNorms: ModelWeights['loopNorms'];
    for (const [key, perNorm] of w.loopNorms ?? []) {
      const [loopIndex, blockLayer] = key.split('.').map(Number) as [number, number];
      const trained: LoopNorms = {};
      for (const [norm, tensor] of Object.entries(perNorm) as [LoopNorm, Tensor][]) {
        trained[norm] = variable(tensor, loopNormTensorName(loopIndex, blockLayer, norm), normLayout, 'norm');
      }
      loopNorms ??= new Map();
      loopNorms.set(key, trained);
    }
    const loras: ModelWeights['loras'] = new Map();
    for (const [key, perModule] of w.loras) {
      const [loopIndex, blockLayer] = key.split('.').map(Number) as [number, number];
      const trained: Partial<Record<LinearModule, LoRA>> = {};
      for (const module of linearModules) {
        const lora = perModule[module];
        if (!lora) continue;
        const prefix = loraTensorName(loopIndex, blockLayer, module);
        trained[module] = {
          a: variable(lora.a, `${prefix}.lora_A.weight`, 'transposed', 'lora'),
          b: variable(lora.b, `${prefix}.lora_B.weight`, 'transposed', 'lora'),
          scale: lora.scale,
        };
      }
      loras.set(loraKey(loopIndex, blockLayer), trained);
    }
    const finalNorm = variable(w.finalNorm, 'model.norm.weight', normLayout, 'norm');
    // A tied head is the embedding's transpose, made afresh in every forward pass (see withHead).
    const lmHead = config.tieWordEmbeddings
      ? embedding
      : variable(w.lmHead, 'lm_head.weight', 'transposed', 'matrix');
    source.dispose();
    this.parameters = parameters;
    this.weights = { embedding, layers, finalNorm, lmHead, loras, ...(loopNorms ? { loopNorms } : {}) };
    // Segment LoRAs: masked mode would keep concatenated copies of the LoRA variables, stale after a step.
    this.decoder = new Decoder(backend, config, this.weights, { loraMode: 'segment' });
  }

  private readonly weights: ModelWeights;

  /** The model's configuration. */
  get config(): ModelConfig {
    return this.decoder.config;
  }

  /** Loads a model directory as trainable variables. */
  static async load(dir: string, backend: Backend): Promise<TrainableModel> {
    return new TrainableModel(backend, await loadModel(dir, backend), dir);
  }

  /**
   * Runs `fn` with the decoder's output head in place. For a tied head that is `embeddingᵀ`, computed
   * here (inside the caller's gradient or tidy scope) so that the head's gradient reaches the embedding.
   */
  withHead<T>(fn: (decoder: Decoder) => T): T {
    if (!this.config.tieWordEmbeddings) return fn(this.decoder);
    const head = this.backend.transpose(this.weights.embedding);
    this.weights.lmHead = head;
    try {
      return fn(this.decoder);
    } finally {
      this.weights.lmHead = this.weights.embedding;
      this.backend.dispose(head);
    }
  }

  /** The parameter of a Hugging Face tensor name. */
  parameter(name: string): Parameter | undefined {
    return this.parameters.find((p) => p.name === name);
  }

  /** The checkpoint (Hugging Face) layout of a parameter's values. */
  async checkpointValues(parameter: Parameter): Promise<{ shape: number[]; values: Float32Array }> {
    const values = (await this.backend.read(parameter.variable)) as Float32Array;
    const shape = [...parameter.variable.shape];
    if (parameter.layout === 'transposed') {
      const [rows, cols] = shape as [number, number];
      const out = new Float32Array(values.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
      return { shape: [cols, rows], values: out };
    }
    if (parameter.layout === 'norm-add-one') return { shape, values: values.map((v) => v - 1) };
    return { shape, values };
  }

  /**
   * Writes the model as a Hugging Face directory: `model.safetensors` (float32 or float16) plus the
   * source's `config.json`, tokenizer and generation files. Each file is written under a temporary name
   * and renamed into place; other files in `dir` (a run's training state) are left alone.
   */
  async save(
    dir: string,
    options: { dtype?: 'F32' | 'F16'; metadata?: Record<string, string> } = {},
  ): Promise<void> {
    const dtype = options.dtype ?? 'F32';
    await mkdir(dir, { recursive: true });
    const tensors = [];
    for (const parameter of this.parameters) {
      const { shape, values } = await this.checkpointValues(parameter);
      tensors.push({ name: parameter.name, dtype, shape, bytes: encodeAs(values, dtype) });
    }
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', ...options.metadata });
    if (resolve(this.sourceDir) === resolve(dir)) return;
    for (const name of await readdir(this.sourceDir)) {
      if (
        name === 'config.json' ||
        /^(tokenizer|special_tokens_map|generation_config).*\.(json|model)$/.test(name)
      ) {
        const temp = join(dir, `${name}.tmp-${process.pid}`);
        await copyFile(join(this.sourceDir, name), temp);
        await rename(temp, join(dir, name));
      }
    }
  }

  /** Frees every variable and the decoder's tables. */
  dispose(): void {
    this.decoder.dispose();
  }
}

/** Writes a JSON file atomically (temporary file, then rename). */
export async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  const temp = `${path}.tmp-${process.pid}`;
  await writeFile(temp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(temp, path);
}
