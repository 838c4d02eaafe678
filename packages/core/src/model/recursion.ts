import { ConfigError } from '../errors.js';

/**
 * How effective layers map onto the stored block:
 * - `cycle`: effective layer ℓ runs block layer ℓ mod K (the paper's default);
 * - `sequence`: each block layer runs L times in a row;
 * - `middle-cycle`: the first and last layers stay unique, the N − 2 in between cycle through K layers.
 */
export type SharingStrategy = 'cycle' | 'sequence' | 'middle-cycle';

/** How the shared layers were initialised from the pretrained ones (recorded for provenance). */
export type InitMethod = 'stepwise' | 'average' | 'lower' | 'upper' | 'random';

/** The linear modules of a decoder layer that carry a per-loop LoRA. */
export type LinearModule = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

/** Every {@link LinearModule}, attention first. */
export const linearModules: readonly LinearModule[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
];

/** The `recursion` section of a recursive model's `config.json`, resolved. */
export interface RecursionConfig {
  /** K: number of looped (shared) block layers. */
  blockSize: number;
  /** L: how many times the block runs. */
  loops: number;
  strategy: SharingStrategy;
  init: InitMethod;
  /** LoRA rank per module (0: that module has no LoRA, the model is purely recursive there). */
  loraRanks: Record<LinearModule, number>;
  /** LoRA scaling numerator: a module's correction is `(loraAlpha / rank) · B · A`. */
  loraAlpha: number;
  /** Layers stored in the checkpoint: K, or K + 2 for `middle-cycle`. */
  storedLayers: number;
  /**
   * Each LoRA also carries a per-loop bias correction, PEFT's `lora_B.bias` (`lora_bias` in the section;
   * default false): the loop's output gains `scale · b_B`. Written by conversions of models with biased
   * projections after LayerNorms (GPT-NeoX), where it keeps the full-rank model exact.
   */
  loraBias?: boolean;
  /**
   * Norms stored once per (loop, shared layer) instead of shared (`loop_norms`): the ones no projection
   * can absorb (q/k norms, Gemma's post-attention and post-feed-forward norms), kept per loop so that a
   * full-rank relaxed model stays exact. Absent or empty: every norm is shared.
   */
  loopNorms?: readonly LoopNorm[];
}

/** A layer norm that a recursive model may store per loop ({@link RecursionConfig.loopNorms}). */
export type LoopNorm = 'q_norm' | 'k_norm' | 'post_attention_layernorm' | 'post_feedforward_layernorm';

/** Every {@link LoopNorm}. */
export const loopNormNames: readonly LoopNorm[] = [
  'q_norm',
  'k_norm',
  'post_attention_layernorm',
  'post_feedforward_layernorm',
];

/** One effective layer of the unrolled model. */
export interface EffectiveLayer {
  /** Position in the unrolled model, 0 … N − 1; also the KV-cache depth. */
  depth: number;
  /** Stored layer whose weights run here. */
  blockLayer: number;
  /** Which pass over the block this is (0 for unique layers). */
  loopIndex: number;
  /** Whether the block layer runs at more than one depth (only shared layers carry LoRA). */
  shared: boolean;
}

const strategies: readonly SharingStrategy[] = ['cycle', 'sequence', 'middle-cycle'];
const inits: readonly InitMethod[] = ['stepwise', 'average', 'lower', 'upper', 'random'];

/** The number of effective layers a (K, L, strategy) layout produces. */
export function effectiveLayerCount(blockSize: number, loops: number, strategy: SharingStrategy): number {
  return blockSize * loops + (strategy === 'middle-cycle' ? 2 : 0);
}

/**
 * Resolves the `recursion` section of `config.json` (snake_case keys: `block_size`, `loops`, `strategy`,
 * `init`, `lora_ranks`, `lora_alpha`) and checks it against the number of effective layers.
 */
export function resolveRecursion(raw: unknown, numHiddenLayers: number, file: string): RecursionConfig {
  if (typeof raw !== 'object' || raw === null) throw new ConfigError(file, 'recursion', 'an object');
  const section = raw as Record<string, unknown>;
  const int = (key: string, min: number): number => {
    const value = section[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
      throw new ConfigError(file, `recursion.${key}`, `an integer ≥ ${min} (got ${JSON.stringify(value)})`);
    }
    return value;
  };
  const blockSize = int('block_size', 1);
  const loops = int('loops', 1);
  const strategy = (section.strategy ?? 'cycle') as SharingStrategy;
  if (!strategies.includes(strategy)) {
    throw new ConfigError(file, 'recursion.strategy', `one of ${strategies.join(', ')}`);
  }
  const init = (section.init ?? 'stepwise') as InitMethod;
  if (!inits.includes(init)) throw new ConfigError(file, 'recursion.init', `one of ${inits.join(', ')}`);
  if (effectiveLayerCount(blockSize, loops, strategy) !== numHiddenLayers) {
    throw new ConfigError(
      file,
      'recursion',
      `block_size × loops${strategy === 'middle-cycle' ? ' + 2' : ''} = num_hidden_layers ${numHiddenLayers} ` +
        `(got ${blockSize} × ${loops}, ${strategy})`,
    );
  }
  const ranksRaw = (section.lora_ranks ?? {}) as Record<string, unknown>;
  const loraRanks = {} as Record<LinearModule, number>;
  for (const module of linearModules) {
    const rank = ranksRaw[module] ?? 0;
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0) {
      throw new ConfigError(file, `recursion.lora_ranks.${module}`, 'a non-negative integer');
    }
    loraRanks[module] = rank;
  }
  const loopNorms = section.loop_norms ?? [];
  if (!Array.isArray(loopNorms) || !loopNorms.every((norm) => loopNormNames.includes(norm))) {
    throw new ConfigError(file, 'recursion.loop_norms', `a list of ${loopNormNames.join(', ')}`);
  }
  const loraAlpha = section.lora_alpha ?? 1;
  if (typeof loraAlpha !== 'number' || !(loraAlpha > 0)) {
    throw new ConfigError(file, 'recursion.lora_alpha', 'a positive number');
  }
  const loraBias = section.lora_bias ?? false;
  if (typeof loraBias !== 'boolean') {
    throw new ConfigError(file, 'recursion.lora_bias', `true or false (got ${JSON.stringify(loraBias)})`);
  }
  return {
    blockSize,
    loops,
    strategy,
    init,
    loraRanks,
    loraAlpha,
    storedLayers: blockSize + (strategy === 'middle-cycle' ? 2 : 0),
    loraBias,
    ...(loopNorms.length > 0 ? { loopNorms: loopNorms as LoopNorm[] } : {}),
  };
}

/** Writes a {@link RecursionConfig} back into its `config.json` form. */
export function recursionToJson(recursion: RecursionConfig): Record<string, unknown> {
  return {
    block_size: recursion.blockSize,
    loops: recursion.loops,
    strategy: recursion.strategy,
    init: recursion.init,
    lora_ranks: { ...recursion.loraRanks },
    lora_alpha: recursion.loraAlpha,
    ...(recursion.loraBias ? { lora_bias: true } : {}),
    ...(recursion.loopNorms && recursion.loopNorms.length > 0
      ? { loop_norms: [...recursion.loopNorms] }
      : {}),
  };
}

/**
 * The unrolled schedule: which stored layer and loop run at each effective depth. A vanilla model
 * (no recursion) maps depth ℓ to block layer ℓ, loop 0.
 */
export function layerSchedule(
  recursion: RecursionConfig | undefined,
  numHiddenLayers: number,
): EffectiveLayer[] {
  if (!recursion) {
    return Array.from({ length: numHiddenLayers }, (_, depth) => ({
      depth,
      blockLayer: depth,
      loopIndex: 0,
      shared: false,
    }));
  }
  const { blockSize, loops, strategy } = recursion;
  const shared = loops > 1;
  if (strategy === 'cycle') {
    return Array.from({ length: numHiddenLayers }, (_, depth) => ({
      depth,
      blockLayer: depth % blockSize,
      loopIndex: Math.floor(depth / blockSize),
      shared,
    }));
  }
  if (strategy === 'sequence') {
    return Array.from({ length: numHiddenLayers }, (_, depth) => ({
      depth,
      blockLayer: Math.floor(depth / loops),
      loopIndex: depth % loops,
      shared,
    }));
  }
  // middle-cycle: stored layer 0 is the unique first layer, 1 … K the looped ones, K + 1 the unique last.
  return Array.from({ length: numHiddenLayers }, (_, depth) => {
    if (depth === 0) return { depth, blockLayer: 0, loopIndex: 0, shared: false };
    if (depth === numHiddenLayers - 1)
      return { depth, blockLayer: blockSize + 1, loopIndex: 0, shared: false };
    const middle = depth - 1;
    return { depth, blockLayer: 1 + (middle % blockSize), loopIndex: Math.floor(middle / blockSize), shared };
  });
}

/**
 * Effective depths after which a pass over the block completes: the places where a token may exit early
 * and be read out through the final norm and head. The last entry is always N − 1.
 */
export function exitDepths(recursion: RecursionConfig | undefined, numHiddenLayers: number): number[] {
  if (!recursion || recursion.strategy === 'sequence') return [numHiddenLayers - 1];
  const offset = recursion.strategy === 'middle-cycle' ? 1 : 0;
  const depths = Array.from(
    { length: recursion.loops },
    (_, loop) => offset + (loop + 1) * recursion.blockSize - 1,
  );
  if (depths[depths.length - 1] !== numHiddenLayers - 1) depths.push(numHiddenLayers - 1);
  return depths;
}
