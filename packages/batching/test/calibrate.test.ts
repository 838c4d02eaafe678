/**
 * Exit calibration: the exact threshold sweep against a brute-force search on random profiles, the
 * outcome of one threshold on a hand-made profile, and the teacher-forced profile of a relaxed model
 * (K = 2, L = 3, wasm) against a float64 log-softmax of `Decoder.forward`'s per-loop logits.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { type Decoder, loadModel, seededRandom } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRelaxedModel } from '../../core/test/relaxed-model.js';
import {
  CalibrationError,
  calibrateExit,
  chooseThreshold,
  type ExitProfile,
  exitOutcome,
  exitProfile,
} from '../src/index.js';

/** The spacing of float32 values at `x` (> 0): 2^(⌊log2 x⌋ − 23). */
const float32Ulp = (x: number) => 2 ** (Math.floor(Math.log2(x)) - 23);

/** A profile of `positions` × `loops` with argmaxes from a small vocabulary (so agreements happen). */
function randomProfile(seed: number, positions: number, loops: number): ExitProfile {
  const random = seededRandom(seed);
  const argmax = Int32Array.from({ length: positions * loops }, () => Math.floor(random() * 3));
  // Probabilities on a coarse grid, so that ties between positions and loops occur.
  const maxProbability = Float64Array.from(
    { length: positions * loops },
    () => Math.round(random() * 20) / 20,
  );
  const targetLogProbability = Float64Array.from({ length: positions * loops }, () => -3 * random());
  return { loops, positions, argmax, maxProbability, targetLogProbability };
}

describe('chooseThreshold', () => {
  it('picks the smallest τ below which no larger τ breaches maxChange (brute force over every τ)', () => {
    const seed = Math.floor(Math.random() * 1e6);
    for (let trial = 0; trial < 40; trial++) {
      const profile = randomProfile(seed + trial, 30 + trial, 2 + (trial % 4));
      const maxChange = [0, 0.05, 0.2, 0.5][trial % 4]!;
      const minLoops = 1 + (trial % 2);
      const chosen = chooseThreshold(profile, { maxChange, minLoops });
      // Brute force: candidates are every probability value (and ∞); walk down until the first breach.
      const { loops } = profile;
      const eligible = [...profile.maxProbability].filter(
        (_, i) => i % loops >= minLoops - 1 && i % loops < loops - 1,
      );
      const candidates = [...new Set(eligible)].sort((a, b) => b - a);
      let expected = Number.POSITIVE_INFINITY;
      for (const threshold of candidates) {
        if (exitOutcome(profile, threshold, minLoops).changedShare > maxChange) break;
        expected = threshold;
      }
      // Between two τ at which some exit moves every τ gives the same exits, so the chooser may name any
      // τ of that interval (it names the interval's top, where the last exit moved): it must give the
      // brute force's outcome, exit for exit, and lie at or above the brute force's τ.
      const message = `seed ${seed + trial}`;
      expect(chosen.threshold, message).toBeGreaterThanOrEqual(expected);
      const bruteForce = exitOutcome(profile, expected, minLoops);
      expect(chosen.exitLoopShares, message).toEqual(bruteForce.exitLoopShares);
      expect(chosen.changedShare, message).toBe(bruteForce.changedShare);
      expect(chosen.perplexity, message).toBe(bruteForce.perplexity);
      expect(chosen.changedShare).toBeLessThanOrEqual(maxChange);
      expect(chosen.changedShare).toBe(exitOutcome(profile, chosen.threshold, minLoops).changedShare);
    }
  });

  it('with a readout cost, picks the loops to check and τ of least cost per token (brute force over every set and τ)', () => {
    const seed = Math.floor(Math.random() * 1e6);
    for (let trial = 0; trial < 30; trial++) {
      const loops = 2 + (trial % 4);
      const profile = randomProfile(seed + trial, 25 + trial, loops);
      const maxChange = [0.05, 0.2, 0.5][trial % 3]!;
      const minLoops = 1 + (trial % 2);
      const readoutCost = [0, 0.3, 1, 2.5][trial % 4]!;
      const chosen = chooseThreshold(profile, { maxChange, minLoops, readoutCost });
      // Independently of the library: a token exits at the first checked loop whose probability is ≥ τ,
      // pays one pass per loop run and one readout per checked loop reached (and the last loop's).
      const cost = (checks: readonly number[], threshold: number) => {
        let passes = 0;
        let readouts = 0;
        let changed = 0;
        for (let p = 0; p < profile.positions; p++) {
          let exit = loops - 1;
          for (const loop of checks) {
            if (profile.maxProbability[p * loops + loop]! >= threshold) {
              exit = loop;
              break;
            }
          }
          passes += exit + 1;
          readouts += checks.filter((loop) => loop <= exit).length + (exit === loops - 1 ? 1 : 0);
          if (profile.argmax[p * loops + exit] !== profile.argmax[p * loops + loops - 1]) changed++;
        }
        return {
          perToken: (passes + readoutCost * readouts) / profile.positions,
          changed: changed / profile.positions,
        };
      };
      const candidates = Array.from({ length: loops - 1 }, (_, loop) => loop).filter(
        (loop) => loop + 1 >= minLoops,
      );
      let cheapest = Number.POSITIVE_INFINITY;
      for (let bits = 0; bits < 1 << candidates.length; bits++) {
        const checks = candidates.filter((_, index) => bits & (1 << index));
        // The smallest τ that holds from above, walking down every probability of a checked loop.
        const taus = [
          ...new Set(
            checks.flatMap((loop) =>
              Array.from({ length: profile.positions }, (_, p) => profile.maxProbability[p * loops + loop]!),
            ),
          ),
        ].sort((a, b) => b - a);
        let threshold = Number.POSITIVE_INFINITY;
        for (const tau of taus) {
          if (cost(checks, tau).changed > maxChange) break;
          threshold = tau;
        }
        cheapest = Math.min(cheapest, cost(checks, threshold).perToken);
      }
      const message = `seed ${seed + trial}`;
      const measured = cost(chosen.checkLoops, chosen.threshold);
      expect(chosen.costPerToken, message).toBeCloseTo(cheapest, 12);
      expect(measured.perToken, message).toBeCloseTo(cheapest, 12);
      expect(measured.changed, message).toBeLessThanOrEqual(maxChange);
      expect(chosen.changedShare, message).toBe(measured.changed);
      expect(
        chosen.checkLoops.every((loop) => loop + 1 >= minLoops && loop < loops - 1),
        message,
      ).toBe(true);
    }
  });

  it('without a readout cost checks every loop from minLoops − 1, as before', () => {
    const profile = randomProfile(Math.floor(Math.random() * 1e6), 40, 5);
    const plain = chooseThreshold(profile, { maxChange: 0.2, minLoops: 2 });
    expect(plain.checkLoops).toEqual([1, 2, 3]);
    expect(plain.readoutCost).toBe(0);
    expect(plain).toEqual({ ...exitOutcome(profile, plain.threshold, 2), ...plain });
    expect(() => chooseThreshold(profile, { readoutCost: -1 })).toThrow(CalibrationError);
    expect(() => chooseThreshold(randomProfile(1, 3, 15), { readoutCost: 0.5 })).toThrow(/at most 12 loops/);
    expect(
      chooseThreshold(randomProfile(1, 3, 15), { readoutCost: 0.5, minLoops: 3 }).checkLoops.length,
    ).toBeLessThanOrEqual(12);
  });

  it('reports a threshold outcome exactly on a hand-made profile', () => {
    // 3 positions × 3 loops; last-loop argmaxes 5, 6, 7.
    const profile: ExitProfile = {
      loops: 3,
      positions: 3,
      argmax: Int32Array.from([5, 5, 5, 1, 6, 6, 7, 2, 7]),
      maxProbability: Float64Array.from([0.95, 0.9, 0.99, 0.5, 0.92, 0.99, 0.96, 0.97, 0.99]),
      targetLogProbability: Float64Array.from([-1, -2, -3, -4, -5, -6, -7, -8, -9]),
    };
    // τ 0.9: position 0 exits at loop 0 (same), 1 at loop 1 (same), 2 at loop 0 (7 = 7, same).
    const at90 = exitOutcome(profile, 0.9);
    expect(at90.changedShare).toBe(0);
    expect(at90.meanExitLoop).toBeCloseTo(1 / 3, 15);
    expect(at90.exitLoopShares).toEqual([2 / 3, 1 / 3, 0]);
    expect(at90.perplexity).toBeCloseTo(Math.exp((1 + 5 + 7) / 3), 12);
    // τ 0.5: position 1 exits at loop 0 with argmax 1 ≠ 6: one change in three.
    expect(exitOutcome(profile, 0.5).changedShare).toBeCloseTo(1 / 3, 15);
    // minLoops 2: nobody exits at loop 0; position 2 exits at loop 1 with argmax 2 ≠ 7.
    expect(exitOutcome(profile, 0.9, 2).changedShare).toBeCloseTo(1 / 3, 15);
    // Not monotone: τ 0.97 sends position 2 out at loop 1 (2 ≠ 7), lower τ mend it; the sweep stops at
    // the first breach from above.
    expect(exitOutcome(profile, 0.97).changedShare).toBeCloseTo(1 / 3, 15);
    expect(chooseThreshold(profile, { maxChange: 0 }).threshold).toBe(Number.POSITIVE_INFINITY);
    const chosen = chooseThreshold(profile, { maxChange: 0.34 });
    expect(chosen.threshold).toBe(0.5);
    expect(chosen.fullDepthPerplexity).toBeCloseTo(Math.exp((3 + 6 + 9) / 3), 12);
    expect(chosen.curve.map((point) => point.threshold)).toEqual(
      [...chosen.curve.map((p) => p.threshold)].sort((a, b) => b - a),
    );
    expect(() => chooseThreshold(profile, { maxChange: 2 })).toThrow(CalibrationError);
    // Checked at loop 1 only (τ 0.9): every position exits there (0.9, 0.92, 0.97), one readout each,
    // and position 2's loop-1 argmax 2 ≠ 7 is a change.
    const atLoop1 = exitOutcome(profile, 0.9, 1, [1]);
    expect(atLoop1.exitLoopShares).toEqual([0, 1, 0]);
    expect(atLoop1.readoutsPerToken).toBe(1);
    expect(atLoop1.changedShare).toBeCloseTo(1 / 3, 15);
    // Every loop checked: readouts 1, 2, 1 (positions 0 and 2 exit at loop 0, 1 at loop 1).
    expect(at90.readoutsPerToken).toBeCloseTo(4 / 3, 15);
    expect(exitOutcome(profile, 0.9, 1, []).exitLoopShares).toEqual([0, 0, 1]);
  });
});

describe('exitProfile (wasm, relaxed K=2 L=3)', () => {
  let backend: Backend;
  let workDir: string;
  let model: Decoder;
  let baseline: number;
  let seed: number;
  beforeAll(async () => {
    backend = (await createBackend('wasm')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-calibrate-'));
    seed = 1000 + Math.floor(Math.random() * 1e6);
    await writeRelaxedModel(join(workDir, 'relaxed'), seed);
    model = await loadModel(join(workDir, 'relaxed'), backend);
    baseline = backend.numTensors();
  });
  afterAll(async () => {
    model?.dispose();
    await rm(workDir, { recursive: true, force: true });
  });

  it('holds each position and loop: argmax, its probability and the target log-probability (float64 reference)', async () => {
    const random = seededRandom(seed);
    const vocab = model.config.vocabSize;
    const sequences = [13, 2, 9].map((length) => Array.from({ length }, () => Math.floor(random() * vocab)));
    // context 5 cuts the 13-token sequence into windows of 5, 5 and 3 tokens and the 9-token one into 5 and 4.
    const profile = await exitProfile(model, sequences, { context: 5 });
    expect(backend.numTensors()).toBe(baseline);
    const windows = [
      sequences[0]!.slice(0, 5),
      sequences[0]!.slice(5, 10),
      sequences[0]!.slice(10),
      sequences[1]!,
      sequences[2]!.slice(0, 5),
      sequences[2]!.slice(5),
    ];
    expect(profile.positions).toBe(windows.reduce((sum, w) => sum + w.length - 1, 0));
    expect(profile.loops).toBe(3);
    let position = 0;
    let worst = 0;
    let worstProbability = 0;
    let worstUlps = 0;
    for (const window of windows) {
      const ids = backend.fromArray(Int32Array.from(window), [1, window.length], 'int32');
      const output = model.forward(ids, { loopOutputs: true });
      for (const [loop, readout] of output.loops.entries()) {
        const logits = (await backend.read(readout.logits)) as Float32Array;
        for (let t = 0; t + 1 < window.length; t++) {
          const row = Array.from(logits.subarray(t * vocab, (t + 1) * vocab));
          const max = Math.max(...row);
          const logSum = max + Math.log(row.reduce((sum, v) => sum + Math.exp(v - max), 0));
          const at = (position + t) * 3 + loop;
          expect(profile.argmax[at]).toBe(row.indexOf(max));
          const reference = Math.exp(max - logSum);
          worstProbability = Math.max(worstProbability, Math.abs(profile.maxProbability[at]! - reference));
          worstUlps = Math.max(
            worstUlps,
            Math.abs(profile.maxProbability[at]! - reference) / float32Ulp(reference),
          );
          worst = Math.max(
            worst,
            Math.abs(profile.targetLogProbability[at]! - (row[window[t + 1]!]! - logSum)),
          );
        }
      }
      backend.dispose([ids, output.logits, ...output.loops.flatMap((l) => [l.hidden, l.logits])]);
      position += window.length - 1;
    }
    // The target's log-probability: same float32 logits, float64 arithmetic both sides (observed ≤ 1e-15).
    expect(worst).toBeLessThan(1e-12);
    // The max probability is the backend's float32 softmax, as the engine reads it, so its error scales
    // with the float32 spacing at the value: observed ≤ 3.1 ulps over 65 seeds (≤ 5.3e-8 absolute). The
    // earlier absolute bound of 1e-7 failed once on a clean clone at 1.1e-7 (its seed was not printed;
    // the message now names it).
    // A 1e-6 relative change of the probabilities gives 17 ulps.
    expect(worstUlps, `worst ${worstUlps} ulps (${worstProbability} absolute), seed ${seed}`).toBeLessThan(6);
    const calibration = await calibrateExit(model, sequences, { context: 5, maxChange: 0.25 });
    expect(calibration.changedShare).toBeLessThanOrEqual(0.25);
    expect(calibration.positions).toBe(profile.positions);
    expect(backend.numTensors()).toBe(baseline);
    await expect(exitProfile(model, [[1]])).rejects.toThrow(CalibrationError);
    await expect(exitProfile(model, [[1, vocab]])).rejects.toThrow(/tokenIds/);
  });
});
