/**
 * How early could a relaxed model's tokens exit, by which signal? Teacher-forced on held-out text (the
 * last 10 % of tinystories_val.txt's documents, as bench/serving holds out), every position read out after
 * every loop. Each exit rule is fitted on the first half of those documents and measured on the second,
 * at several budgets of changed tokens (the exit loop's argmax differs from the last loop's):
 *
 * - `confidence`: max softmax probability ≥ τ, one τ for every loop (`chooseThreshold`, the rule the
 *   engine runs and `rrt calibrate-exit` picks);
 * - `per-loop τ`: a threshold per loop (coordinate descent on the fit half);
 * - `agreement + τ`: the same argmax as the previous loop and a probability ≥ that loop's τ;
 * - `linear probe`: a logistic regression per loop on the loop's hidden state, its log max-probability,
 *   its top-2 logit margin and its agreement with the previous loop (CALM's learned exit classifier),
 *   predicting "this loop's argmax is the last one's", with one threshold on its probability;
 * - `oracle`: the earliest loop whose argmax equals the last one's (changes nothing; the bound).
 *
 * Prints, per rule and budget, the changed share and mean exit loop (0-based) on the measured half.
 *
 *   node --import tsx bench/exit-signals.ts --model <relaxed model dir> [--backend wasm] [--tokens 8192]
 *     [--budgets 0.01,0.02,0.05] [--probe-steps 300]
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { chooseThreshold, exitOutcome, exitProfile } from '@rrt/batching';
import { type Decoder, loadModel, loadTokenizer } from '@rrt/core';
import { splitDocuments } from '@rrt/train';
import { stories260KAssetsOrExit } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    backend: { type: 'string', default: 'wasm' },
    tokens: { type: 'string', default: '8192' },
    budgets: { type: 'string', default: '0.01,0.02,0.05' },
    'probe-steps': { type: 'string', default: '300' },
  },
});
const assets = stories260KAssetsOrExit('exit-signals');
if (!values.model) {
  console.error('bench/exit-signals: --model <relaxed model dir> is required');
  process.exit(2);
}
const maxTokens = Number(values.tokens);
const budgets = values.budgets.split(',').map(Number);

/** Per position and loop: argmax, log max-probability, top-2 margin and the hidden state. */
interface Readouts {
  loops: number;
  positions: number;
  argmax: Int32Array;
  logMaxProbability: Float64Array;
  margin: Float64Array;
  hidden: Float32Array;
}

async function readouts(model: Decoder, sequences: readonly number[][]): Promise<Readouts> {
  const { backend, config } = model;
  const [vocab, width] = [config.vocabSize, config.hiddenSize];
  const rows: { argmax: number; logMax: number; margin: number; hidden: Float32Array }[][] = [];
  for (const sequence of sequences) {
    if (rows.length >= maxTokens) break;
    const window = sequence.slice(0, Math.min(sequence.length, config.maxPositionEmbeddings, 512));
    if (window.length < 2) continue;
    const ids = backend.fromArray(Int32Array.from(window), [1, window.length], 'int32');
    const output = model.forward(ids, { loopOutputs: true });
    const loops = [];
    for (const loop of output.loops) {
      loops.push({
        hidden: (await backend.read(loop.hidden)) as Float32Array,
        logits: (await backend.read(loop.logits)) as Float32Array,
      });
    }
    backend.dispose([ids, output.logits, ...output.loops.flatMap((loop) => [loop.hidden, loop.logits])]);
    for (let t = 0; t + 1 < window.length && rows.length < maxTokens; t++) {
      rows.push(
        loops.map(({ hidden, logits }) => {
          const row = logits.subarray(t * vocab, (t + 1) * vocab);
          let best = 0;
          for (let v = 1; v < vocab; v++) if (row[v]! > row[best]!) best = v;
          let total = 0;
          let second = Number.NEGATIVE_INFINITY;
          for (let v = 0; v < vocab; v++) {
            total += Math.exp(row[v]! - row[best]!);
            if (v !== best && row[v]! > second) second = row[v]!;
          }
          return {
            argmax: best,
            logMax: -Math.log(total),
            margin: row[best]! - second,
            hidden: hidden.slice(t * width, (t + 1) * width),
          };
        }),
      );
    }
  }
  const loops = rows[0]!.length;
  const at = (p: number, l: number) => rows[p]![l]!;
  const size = rows.length * loops;
  const hidden = new Float32Array(size * width);
  rows.forEach((row, p) => {
    row.forEach((readout, l) => {
      hidden.set(readout.hidden, (p * loops + l) * width);
    });
  });
  return {
    loops,
    positions: rows.length,
    argmax: Int32Array.from({ length: size }, (_, i) => at(Math.floor(i / loops), i % loops).argmax),
    logMaxProbability: Float64Array.from(
      { length: size },
      (_, i) => at(Math.floor(i / loops), i % loops).logMax,
    ),
    margin: Float64Array.from({ length: size }, (_, i) => at(Math.floor(i / loops), i % loops).margin),
    hidden,
  };
}

/** An exit rule: whether position `p` leaves after loop `l` (the last loop always ends it). */
type Rule = (r: Readouts, p: number, l: number) => boolean;

function outcome(r: Readouts, rule: Rule): { changed: number; meanExit: number } {
  const { loops } = r;
  let changed = 0;
  let exits = 0;
  for (let p = 0; p < r.positions; p++) {
    let l = 0;
    while (l < loops - 1 && !rule(r, p, l)) l++;
    exits += l;
    if (r.argmax[p * loops + l] !== r.argmax[p * loops + loops - 1]) changed++;
  }
  return { changed: changed / r.positions, meanExit: exits / r.positions };
}

const agrees = (r: Readouts, p: number, l: number) =>
  l > 0 && r.argmax[p * r.loops + l] === r.argmax[p * r.loops + l - 1];
const probability = (r: Readouts, p: number, l: number) => Math.exp(r.logMaxProbability[p * r.loops + l]!);

/** Thresholds per loop by coordinate descent: the lowest mean exit on `fit` within `budget`. */
function perLoopThresholds(fit: Readouts, budget: number, withAgreement: boolean): Rule {
  const thresholds = new Array<number>(fit.loops - 1).fill(2);
  const rule: Rule = (r, p, l) =>
    (!withAgreement || agrees(r, p, l)) && probability(r, p, l) >= thresholds[l]!;
  const grid = [...Array.from({ length: 240 }, (_, k) => 1 - 10 ** (-k / 40)), 2];
  for (let sweep = 0; sweep < 3; sweep++) {
    for (let l = 0; l < fit.loops - 1; l++) {
      let best = thresholds[l]!;
      let bestExit = outcome(fit, rule).meanExit;
      for (const candidate of grid) {
        thresholds[l] = candidate;
        const result = outcome(fit, rule);
        if (result.changed <= budget && result.meanExit < bestExit)
          [best, bestExit] = [candidate, result.meanExit];
      }
      thresholds[l] = best;
    }
  }
  return rule;
}

/** A logistic regression per loop (Adam, L2 1e-3) on standardised features; returns P(argmax is final). */
function linearProbe(fit: Readouts, steps: number): (r: Readouts, p: number, l: number) => number {
  const width = fit.hidden.length / (fit.positions * fit.loops);
  const count = width + 4; // bias, hidden, log max-probability, margin, agreement
  const features = (r: Readouts, p: number, l: number, into: Float64Array) => {
    const at = p * r.loops + l;
    into[0] = 1;
    for (let i = 0; i < width; i++) into[1 + i] = r.hidden[at * width + i]!;
    into[width + 1] = r.logMaxProbability[at]!;
    into[width + 2] = r.margin[at]!;
    into[width + 3] = agrees(r, p, l) ? 1 : 0;
  };
  const scratch = new Float64Array(count);
  const mean = new Float64Array(count);
  const deviation = new Float64Array(count).fill(1);
  for (let k = 1; k < count; k++) {
    let [sum, squares] = [0, 0];
    for (let p = 0; p < fit.positions; p++) {
      for (let l = 0; l < fit.loops - 1; l++) {
        features(fit, p, l, scratch);
        sum += scratch[k]!;
        squares += scratch[k]! ** 2;
      }
    }
    const n = fit.positions * (fit.loops - 1);
    mean[k] = sum / n;
    deviation[k] = Math.sqrt(Math.max(1e-12, squares / n - mean[k]! ** 2));
  }
  const standardised = (r: Readouts, p: number, l: number, into: Float64Array) => {
    features(r, p, l, into);
    for (let k = 1; k < count; k++) into[k] = (into[k]! - mean[k]!) / deviation[k]!;
  };
  const weights = Array.from({ length: fit.loops - 1 }, () => new Float64Array(count));
  for (let l = 0; l < fit.loops - 1; l++) {
    const inputs = Array.from({ length: fit.positions }, (_, p) => {
      const x = new Float64Array(count);
      standardised(fit, p, l, x);
      return x;
    });
    const labels = Array.from({ length: fit.positions }, (_, p) =>
      fit.argmax[p * fit.loops + l] === fit.argmax[p * fit.loops + fit.loops - 1] ? 1 : 0,
    );
    const w = weights[l]!;
    const [m, v] = [new Float64Array(count), new Float64Array(count)];
    for (let step = 1; step <= steps; step++) {
      const gradient = new Float64Array(count);
      for (const [p, x] of inputs.entries()) {
        let z = 0;
        for (let k = 0; k < count; k++) z += x[k]! * w[k]!;
        const error = 1 / (1 + Math.exp(-z)) - labels[p]!;
        for (let k = 0; k < count; k++) gradient[k]! += error * x[k]!;
      }
      for (let k = 0; k < count; k++) {
        const g = gradient[k]! / inputs.length + 1e-3 * w[k]!;
        m[k] = 0.9 * m[k]! + 0.1 * g;
        v[k] = 0.999 * v[k]! + 0.001 * g * g;
        w[k]! -= (0.05 * (m[k]! / (1 - 0.9 ** step))) / (Math.sqrt(v[k]! / (1 - 0.999 ** step)) + 1e-8);
      }
    }
  }
  return (r, p, l) => {
    standardised(r, p, l, scratch);
    let z = 0;
    for (let k = 0; k < count; k++) z += scratch[k]! * weights[l]![k]!;
    return 1 / (1 + Math.exp(-z));
  };
}

/** The lowest threshold on `score` whose rule, and every higher grid threshold's, keeps `fit` within `budget`. */
function scoreThreshold(fit: Readouts, score: (r: Readouts, p: number, l: number) => number, budget: number) {
  let chosen = 2;
  for (let k = 700; k >= 0; k--) {
    const threshold = 1 - 10 ** (-k / 100);
    if (outcome(fit, (r, p, l) => score(r, p, l) >= threshold).changed > budget) break;
    chosen = threshold;
  }
  return chosen;
}

const { backend, kind } = await createBackend(values.backend as BackendKind);
const model = await loadModel(values.model, backend);
const tokenizer = await loadTokenizer(values.model);
const documents = splitDocuments(await readFile(resolve(assets, '../text/tinystories_val.txt'), 'utf8'));
const heldOut = documents
  .slice(Math.floor(documents.length * 0.9))
  .map((text) => [tokenizer.bosId!, ...tokenizer.encode(text, { addBos: false, parseSpecialTokens: false })]);
const half = Math.floor(heldOut.length / 2);
const [fit, measured] = [
  await readouts(model, heldOut.slice(0, half)),
  await readouts(model, heldOut.slice(half)),
];
console.log(
  `${values.model} on ${kind}: ${fit.positions} positions fitted, ${measured.positions} measured, ${fit.loops} loops`,
);
let oracleExit = 0;
for (let p = 0; p < measured.positions; p++) {
  const last = measured.argmax[p * measured.loops + measured.loops - 1];
  let l = 0;
  while (measured.argmax[p * measured.loops + l] !== last) l++;
  oracleExit += l;
}
console.log(`oracle: mean exit loop ${(oracleExit / measured.positions).toFixed(2)}, 0 changed\n`);
const probe = linearProbe(fit, Number(values['probe-steps']));
// The engine's own rule, through the calibration it ships (exitProfile over the same documents).
const [fitProfile, measuredProfile] = [
  await exitProfile(model, heldOut.slice(0, half), { maxTokens }),
  await exitProfile(model, heldOut.slice(half), { maxTokens }),
];
console.log('| budget | rule | changed (measured half) | mean exit loop |');
console.log('|---:|---|---:|---:|');
for (const budget of budgets) {
  const confidence = exitOutcome(
    measuredProfile,
    chooseThreshold(fitProfile, { maxChange: budget }).threshold,
  );
  const rows: [string, { changed: number; meanExit: number }][] = [
    ['confidence (one τ)', { changed: confidence.changedShare, meanExit: confidence.meanExitLoop }],
    ['per-loop τ', outcome(measured, perLoopThresholds(fit, budget, false))],
    ['agreement + per-loop τ', outcome(measured, perLoopThresholds(fit, budget, true))],
  ];
  const probeThreshold = scoreThreshold(fit, probe, budget);
  rows.push(['linear probe', outcome(measured, (r, p, l) => probe(r, p, l) >= probeThreshold)]);
  for (const [rule, { changed, meanExit }] of rows) {
    console.log(
      `| ${(budget * 100).toFixed(0)} % | ${rule} | ${(changed * 100).toFixed(2)} % | ${meanExit.toFixed(2)} |`,
    );
  }
}
model.dispose();
