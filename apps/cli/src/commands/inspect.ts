import {
  type ModelConfig,
  openCheckpoint,
  type RopeScaling,
  readConfig,
  SAFETENSORS_DTYPE_BYTES,
} from '@rrt/core';
import { type Command, formatTable } from '../cli-io.js';
import { parseFlags } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

function ropeScalingText(scaling: RopeScaling): string {
  if (scaling.type === 'none') return '';
  if (scaling.type === 'linear') return ` (linear ×${scaling.factor})`;
  return ` (llama3 ×${scaling.factor}, from ${scaling.originalMaxPositions} positions)`;
}

const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;

/** Layer indices as ranges: `0, 2-4, 7`. */
function layerList(layers: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < layers.length; ) {
    let end = i;
    while (end + 1 < layers.length && layers[end + 1] === layers[end]! + 1) end++;
    parts.push(end > i ? `${layers[i]}-${layers[end]}` : `${layers[i]}`);
    i = end + 1;
  }
  return parts.join(', ');
}

/**
 * The architecture features beyond a plain Llama that the config switches on, one phrase each: what a
 * user checks first when a model's outputs look wrong.
 */
function featureList(config: ModelConfig): string[] {
  const features: string[] = [];
  if (config.normType === 'layer') features.push('LayerNorm with bias');
  if (config.family === 'gpt_neox') {
    features.push(config.parallelResidual ? 'parallel residual' : 'sequential residual');
  }
  if (config.rotaryDim !== config.headDim) {
    const share = Math.round((100 * config.rotaryDim) / config.headDim);
    features.push(`rotary ${config.rotaryDim} of ${config.headDim} head dims (${share}%)`);
  }
  if (!config.gatedMlp) features.push('non-gated MLP');
  if (config.qkNorm) features.push('q/k norms');
  if (config.sandwichNorms) features.push('pre/post attention and feed-forward norms');
  const local = config.layerWindows.flatMap((window, layer) => (window === undefined ? [] : [layer]));
  if (local.length > 0) {
    const sizes = [...new Set(local.map((layer) => config.layerWindows[layer]))].join('/');
    const which = local.length === config.numHiddenLayers ? 'all layers' : `layers ${layerList(local)}`;
    features.push(`sliding window ${sizes} on ${which}`);
  }
  if (config.localRopeTheta !== undefined) features.push(`local RoPE θ ${config.localRopeTheta}`);
  if (config.attentionSoftCap !== undefined) features.push(`attention soft-cap ${config.attentionSoftCap}`);
  if (config.finalSoftCap !== undefined) features.push(`final soft-cap ${config.finalSoftCap}`);
  if (Math.abs(config.attentionScale * Math.sqrt(config.headDim) - 1) > 1e-12) {
    features.push(`query scale ${config.attentionScale.toPrecision(4)}`);
  }
  if (config.biasedModules.length > 0) {
    features.push(`biases on ${config.biasedModules.map((module) => module.replace('_proj', '')).join('/')}`);
  }
  return features;
}

/** The parameter group a tensor name belongs to. */
function groupOf(name: string): string {
  if (name.startsWith('model.loras.')) return 'lora';
  if (name.includes('embed_tokens') || name.includes('embed_in')) return 'embedding';
  if (name.startsWith('lm_head') || name.startsWith('embed_out')) return 'head';
  if (name.includes('norm')) return 'norms';
  if (name.includes('.self_attn.') || name.includes('.attention.')) return 'attention';
  if (name.includes('.mlp.')) return 'mlp';
  return 'other';
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'show a model directory: config, parameter counts by group, dtypes and bytes',
  help: `rrt inspect <model-dir> [--json]

Reads config.json and the safetensors headers (no weights are loaded) and prints the architecture,
the recursion layout if any, the features beyond a plain Llama (GPT-NeoX's parallel residual, LayerNorm
and rotary share, say), and parameters and bytes per group and per dtype.
A model may also be a Hub repo id (owner/name[@revision]), pulled into the cache first;
--offline, --hub-url and --cache-dir work as for rrt pull.

Example:
  rrt inspect models/stories260K`,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, {
      options: { json: { type: 'boolean', default: false }, ...hubFlags },
      positionals: ['<model-dir>'],
    });
    const dir = await modelArgument(positionals[0]!, values, io);
    const config = await readConfig(dir);
    const checkpoint = await openCheckpoint(dir);
    const groups = new Map<string, { tensors: number; parameters: number; bytes: number }>();
    const dtypes = new Map<string, { parameters: number; bytes: number }>();
    try {
      for (const [name, info] of checkpoint.entries) {
        const parameters = info.shape.reduce((a, b) => a * b, 1);
        const bytes = parameters * SAFETENSORS_DTYPE_BYTES[info.dtype];
        const group = groups.get(groupOf(name)) ?? { tensors: 0, parameters: 0, bytes: 0 };
        groups.set(groupOf(name), {
          tensors: group.tensors + 1,
          parameters: group.parameters + parameters,
          bytes: group.bytes + bytes,
        });
        const byType = dtypes.get(info.dtype) ?? { parameters: 0, bytes: 0 };
        dtypes.set(info.dtype, { parameters: byType.parameters + parameters, bytes: byType.bytes + bytes });
      }
    } finally {
      await checkpoint.close();
    }
    const total = [...groups.values()].reduce((sum, group) => sum + group.parameters, 0);
    const totalBytes = [...groups.values()].reduce((sum, group) => sum + group.bytes, 0);
    if (values.json) {
      io.stdout(
        `${JSON.stringify({ config, parameters: total, bytes: totalBytes, groups: Object.fromEntries(groups), dtypes: Object.fromEntries(dtypes) })}\n`,
      );
      return 0;
    }
    const recursion = config.recursion;
    io.stdout(
      [
        `${dir}: ${config.modelType === config.family ? config.modelType : `${config.modelType} (${config.family} family)`}`,
        `  hidden ${config.hiddenSize}, ffn ${config.intermediateSize}, layers ${config.numHiddenLayers}, ` +
          `heads ${config.numAttentionHeads} (kv ${config.numKeyValueHeads}, head dim ${config.headDim}), vocab ${config.vocabSize}`,
        `  rope θ ${config.ropeTheta}${ropeScalingText(config.ropeScaling)}, ` +
          `max positions ${config.maxPositionEmbeddings}, tied head ${config.tieWordEmbeddings}, act ${config.hiddenAct}`,
        `  features: ${featureList(config).join(', ') || 'none beyond the family'}`,
        recursion
          ? `  recursion: ${plural(recursion.blockSize, 'block layer')} × ${plural(recursion.loops, 'loop')} (${recursion.strategy}, init ${recursion.init}), ` +
            `LoRA ranks ${Object.entries(recursion.loraRanks)
              .map(([module, rank]) => `${module.replace('_proj', '')}=${rank}`)
              .join(' ')}, α ${recursion.loraAlpha}` +
            (recursion.loopNorms && recursion.loopNorms.length > 0
              ? `, per-loop ${recursion.loopNorms.join('/')}`
              : '') +
            (recursion.loraBias ? ', per-loop LoRA bias' : '')
          : '  recursion: none (vanilla)',
        '',
        formatTable(
          ['group', 'tensors', 'parameters', 'share', 'bytes'],
          [...groups].map(([name, group]) => [
            name,
            group.tensors,
            group.parameters.toLocaleString('en-US'),
            `${((100 * group.parameters) / total).toFixed(1)}%`,
            group.bytes.toLocaleString('en-US'),
          ]),
        ),
        '',
        formatTable(
          ['dtype', 'parameters', 'bytes'],
          [...dtypes].map(([dtype, entry]) => [
            dtype,
            entry.parameters.toLocaleString('en-US'),
            entry.bytes.toLocaleString('en-US'),
          ]),
        ),
        '',
        `total: ${total.toLocaleString('en-US')} parameters, ${totalBytes.toLocaleString('en-US')} bytes`,
        '',
      ].join('\n'),
    );
    return 0;
  },
};
