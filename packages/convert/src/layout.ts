/**
 * Which source layers become which stored layers: the (K, L) layout, subsampling, and the choice of the
 * source layers each shared layer is initialised from. Pure functions, no I/O.
 *
 * @module
 */
import {
  type InitMethod,
  layerSchedule,
  type RecursionConfig,
  type SharingStrategy,
  seededRandom,
} from '@rrt/core';
import { IncompatibleLayoutError, InvalidOptionError, type LayoutPair } from './errors.js';

/**
 * Rounds to the nearest integer, ties to the even neighbour (numpy's `np.round`, Python's `round`), where
 * `Math.round` sends ties up: `roundHalfToEven(8.5) === 8`, `roundHalfToEven(10.5) === 10`.
 */
export function roundHalfToEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * `num` evenly spaced float64 values from `start` to `stop` inclusive, computed exactly as numpy's
 * `linspace` does (`start + i · ((stop − start) / (num − 1))`, the last value set to `stop`), so that
 * rounding them lands on the same integers as the reference implementation.
 */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return [];
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const values = Array.from({ length: num }, (_, i) => i * step + start);
  values[num - 1] = stop;
  return values;
}

/**
 * The Stepwise choice of `count` layers out of `numLayers`: `round(linspace(0, numLayers − 1, count))`
 * with round half to even, as the reference implementation does.
 *
 * @example
 * ```ts
 * stepwiseLayers(18, 9); // [0, 2, 4, 6, 8, 11, 13, 15, 17]
 * ```
 */
export function stepwiseLayers(numLayers: number, count: number): number[] {
  return linspace(0, numLayers - 1, count).map(roundHalfToEven);
}

/** The (K, L) layouts that tile `numLayers` exactly under `strategy`, fewest loops first. */
export function validLayoutPairs(numLayers: number, strategy: SharingStrategy): LayoutPair[] {
  const looped = strategy === 'middle-cycle' ? numLayers - 2 : numLayers;
  const pairs: LayoutPair[] = [];
  for (let loops = 1; loops <= looped; loops++) {
    if (looped % loops === 0) pairs.push({ blockSize: looped / loops, loops });
  }
  return pairs;
}

/** One stored layer of the recursive model and the source layers it stands for. */
export interface StoredLayerPlan {
  /** Index of the stored layer (`model.layers.{index}` in the output). */
  index: number;
  /** The source layer that each loop's application of this layer replaces, by loop index. */
  sources: number[];
  /** Whether the layer runs at more than one depth (only shared layers get LoRA). */
  shared: boolean;
}

/** A resolved layout: how the source's layers map onto the recursive model. */
export interface RecursiveLayout {
  strategy: SharingStrategy;
  /** K. */
  blockSize: number;
  /** L. */
  loops: number;
  /** Layers of the source, N. */
  sourceLayers: number;
  /** Effective layers of the converted model: N, or fewer when subsampled. */
  effectiveLayers: number;
  /** The source layer at each effective depth: `0 … N − 1` unless subsampled. */
  keptLayers: number[];
  /** K stored layers (K + 2 for middle-cycle), in storage order. */
  storedLayers: StoredLayerPlan[];
}

/** What {@link planLayout} needs. */
export interface LayoutRequest {
  /** N, the source's `num_hidden_layers`. */
  sourceLayers: number;
  /** K; derived from `loops` when omitted. */
  blockSize?: number | undefined;
  /** L; derived from `blockSize` when omitted. */
  loops?: number | undefined;
  strategy: SharingStrategy;
  /** Keep a subset of the layers when K·L does not tile them (see {@link planLayout}). */
  subsample?: boolean | undefined;
  /** Named in error messages (the source's `config.json`). */
  file: string;
}

/**
 * Resolves K and L and maps the source layers onto stored layers, using the model loader's own
 * `layerSchedule` so that the two can never disagree.
 *
 * NOTE: subsampling. When K·L (+ 2 for middle-cycle) = N' < N and `subsample` is set, the converted model
 * keeps N' of the N source layers, chosen like Stepwise: `round(linspace(0, N − 1, N'))`, half to even.
 * That keeps the first and the last layer and spreads the dropped ones evenly; the kept layers then play
 * the part of the original model (LoRA reconstructs them, the dropped ones are gone). With only `loops`
 * given, K = ⌊(N or N − 2) / L⌋; with only `blockSize`, L = ⌊…/ K⌋.
 *
 * @throws {@link InvalidOptionError} for a block size or loop count that is not a positive integer
 * @throws {@link IncompatibleLayoutError} listing the valid (K, L) pairs when the layout does not tile N
 */
export function planLayout(request: LayoutRequest): RecursiveLayout {
  const { sourceLayers, strategy, file } = request;
  const middle = strategy === 'middle-cycle';
  for (const key of ['blockSize', 'loops'] as const) {
    const value = request[key];
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 1)) {
      throw new InvalidOptionError(key, 'a positive integer', value);
    }
  }
  if (request.blockSize === undefined && request.loops === undefined) {
    throw new InvalidOptionError('loops', 'a positive integer (or a blockSize)', undefined);
  }
  const looped = middle ? sourceLayers - 2 : sourceLayers;
  if (looped < 1) {
    throw new IncompatibleLayoutError(file, sourceLayers, 'any K×L', strategy, []);
  }
  const asked =
    request.blockSize !== undefined && request.loops !== undefined
      ? `${request.blockSize}×${request.loops}`
      : request.loops !== undefined
        ? `${request.loops} loops`
        : `block size ${request.blockSize}`;
  const incompatible = () =>
    new IncompatibleLayoutError(
      file,
      sourceLayers,
      asked,
      strategy,
      validLayoutPairs(sourceLayers, strategy),
    );
  const loops = request.loops ?? Math.floor(looped / request.blockSize!);
  const blockSize = request.blockSize ?? Math.floor(looped / loops);
  if (loops < 1 || blockSize < 1 || blockSize * loops > looped) throw incompatible();
  if (blockSize * loops !== looped && !request.subsample) throw incompatible();

  const effectiveLayers = blockSize * loops + (middle ? 2 : 0);
  const keptLayers =
    effectiveLayers === sourceLayers
      ? Array.from({ length: sourceLayers }, (_, i) => i)
      : stepwiseLayers(sourceLayers, effectiveLayers);
  const stored = blockSize + (middle ? 2 : 0);
  const storedLayers: StoredLayerPlan[] = Array.from({ length: stored }, (_, index) => ({
    index,
    sources: [],
    shared: false,
  }));
  for (const layer of layerSchedule(scheduleOnly(blockSize, loops, strategy), effectiveLayers)) {
    const plan = storedLayers[layer.blockLayer]!;
    plan.sources[layer.loopIndex] = keptLayers[layer.depth]!;
    plan.shared = layer.shared;
  }
  return { strategy, blockSize, loops, sourceLayers, effectiveLayers, keptLayers, storedLayers };
}

/** A recursion config carrying just what `layerSchedule` reads. */
function scheduleOnly(blockSize: number, loops: number, strategy: SharingStrategy): RecursionConfig {
  return {
    blockSize,
    loops,
    strategy,
    init: 'stepwise',
    loraRanks: { q_proj: 0, k_proj: 0, v_proj: 0, o_proj: 0, gate_proj: 0, up_proj: 0, down_proj: 0 },
    loraAlpha: 1,
    storedLayers: blockSize + (strategy === 'middle-cycle' ? 2 : 0),
  };
}

/** How one stored layer's weights are initialised from the source. */
export type SharedInit =
  /** Copied from one source layer. */
  | { kind: 'copy'; source: number }
  /** The element-wise mean of several source layers (computed in float64). */
  | { kind: 'average'; sources: number[] };

/**
 * The initialisation of every stored layer. Unique (unshared) layers are copies of their source layer.
 * Shared layers, by `init`:
 * - `stepwise`: block layer i takes layer `round(linspace(0, P − 1, K)[i])` of the pool, half to even;
 * - `average`: the mean of the layers tied to it (the ones it replaces);
 * - `lower` / `upper`: the first / last K layers of the pool;
 * - `random`: a seeded, sorted choice of K layers of the pool.
 *
 * The pool is the P = K·L looped layers: all the effective layers, or the middle N' − 2 for middle-cycle
 * (so Stepwise over middle-cycle spreads over the middle layers), in source-layer numbers.
 */
export function sharedInits(layout: RecursiveLayout, init: InitMethod, seed: number): SharedInit[] {
  const middle = layout.strategy === 'middle-cycle';
  const pool = middle ? layout.keptLayers.slice(1, -1) : layout.keptLayers;
  const k = layout.blockSize;
  const choice = (() => {
    switch (init) {
      case 'stepwise':
        return stepwiseLayers(pool.length, k).map((i) => pool[i]!);
      case 'lower':
        return pool.slice(0, k);
      case 'upper':
        return pool.slice(pool.length - k);
      case 'random':
        return seededSortedChoice(pool.length, k, seed).map((i) => pool[i]!);
      case 'average':
        return undefined;
      default:
        throw new InvalidOptionError('init', 'stepwise, average, lower, upper or random', init);
    }
  })();
  return layout.storedLayers.map((layer): SharedInit => {
    if (!layer.shared) return { kind: 'copy', source: layer.sources[0]! };
    const blockIndex = layer.index - (middle ? 1 : 0);
    if (choice === undefined) return { kind: 'average', sources: [...layer.sources] };
    return { kind: 'copy', source: choice[blockIndex]! };
  });
}

/**
 * `count` distinct integers of `0 … size − 1`, chosen uniformly by a seeded partial Fisher–Yates shuffle
 * (mulberry32: `seededRandom` of `@rrt/core`), sorted ascending. The same seed gives the same choice on
 * every platform.
 */
export function seededSortedChoice(size: number, count: number, seed: number): number[] {
  const next = seededRandom(seed);
  const indices = Array.from({ length: size }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(next() * (size - i));
    [indices[i], indices[j]] = [indices[j]!, indices[i]!];
  }
  return indices.slice(0, count).sort((a, b) => a - b);
}
