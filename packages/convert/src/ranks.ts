/**
 * LoRA ranks: one for every module or one per module group, checked and clamped to what each module's
 * shape allows.
 *
 * @module
 */
import { type LinearModule, linearModules } from '@rrt/core';
import { InvalidOptionError } from './errors.js';

/** The module groups that ranks and reconstruction errors are reported by. */
export type ModuleGroup = 'q' | 'kv' | 'o' | 'ffn';

/** The modules of each {@link ModuleGroup}. */
export const moduleGroups: Readonly<Record<ModuleGroup, readonly LinearModule[]>> = {
  q: ['q_proj'],
  kv: ['k_proj', 'v_proj'],
  o: ['o_proj'],
  ffn: ['gate_proj', 'up_proj', 'down_proj'],
};

/** Every {@link ModuleGroup}, attention first. */
export const moduleGroupNames: readonly ModuleGroup[] = ['q', 'kv', 'o', 'ffn'];

/** The group a module belongs to. */
export function groupOf(module: LinearModule): ModuleGroup {
  return moduleGroupNames.find((group) => moduleGroups[group].includes(module))!;
}

/**
 * LoRA ranks: one number for every module, or per group with a default for the groups not named. Rank 0
 * means no LoRA for that module (the model is purely recursive there).
 *
 * @example
 * ```ts
 * const ranks: RankOption = { default: 64, ffn: 128 };
 * ```
 */
export type RankOption = number | ({ default?: number } & Partial<Record<ModuleGroup, number>>);

/**
 * Resolves a {@link RankOption} to a rank per module. A rank above `min(out, in)` of a module is clamped
 * to it (the residual has no more singular values than that) and reported through `onWarning`.
 *
 * @throws {@link InvalidOptionError} for a rank that is not a non-negative integer, or an unknown group
 */
export function resolveRanks(
  option: RankOption | undefined,
  shapes: Readonly<Record<LinearModule, readonly [number, number]>>,
  onWarning: (message: string) => void,
): Record<LinearModule, number> {
  const check = (name: string, value: unknown): number => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
      throw new InvalidOptionError(name, 'a non-negative integer rank (0: no LoRA)', value);
    }
    return value;
  };
  let perGroup: Record<ModuleGroup, number>;
  if (option === undefined || typeof option === 'number') {
    const rank = check('ranks', option ?? 0);
    perGroup = { q: rank, kv: rank, o: rank, ffn: rank };
  } else {
    if (typeof option !== 'object' || option === null)
      throw new InvalidOptionError('ranks', 'a number or an object', option);
    for (const key of Object.keys(option)) {
      if (key !== 'default' && !(moduleGroupNames as readonly string[]).includes(key)) {
        throw new InvalidOptionError(`ranks.${key}`, `one of default, ${moduleGroupNames.join(', ')}`, key);
      }
    }
    const fallback = check('ranks.default', option.default ?? 0);
    perGroup = {} as Record<ModuleGroup, number>;
    for (const group of moduleGroupNames)
      perGroup[group] = check(`ranks.${group}`, option[group] ?? fallback);
  }
  const ranks = {} as Record<LinearModule, number>;
  for (const module of linearModules) {
    const [outFeatures, inFeatures] = shapes[module];
    const asked = perGroup[groupOf(module)];
    const limit = Math.min(outFeatures, inFeatures);
    if (asked > limit) {
      onWarning(
        `rank ${asked} for ${module} is above min(out, in) = min(${outFeatures}, ${inFeatures}) = ${limit}; clamped to ${limit}`,
      );
    }
    ranks[module] = Math.min(asked, limit);
  }
  return ranks;
}
