import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { convertToRecursive } from '@rrt/convert';
import { type SyntheticModelSpec, writeSyntheticCheckpoint } from '@rrt/convert/testing';
import { argmax, loadModel, readConfig } from '@rrt/core';
import type { Backend } from '@rrt/tensor';
import { type Command, formatTable } from '../cli-io.js';
import { backendFlag, numberFlag, parseFlags } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

/**
 * The embedded default: a small Llama-shaped model (GQA, untied head) made from a fixed seed, with
 * layers that resemble each other as trained models' do, so that what recursion loses, and what each
 * LoRA rank wins back, shows.
 */
const demoSpec: SyntheticModelSpec = {
  modelType: 'llama',
  vocabSize: 512,
  hiddenSize: 128,
  intermediateSize: 344,
  numHiddenLayers: 6,
  numAttentionHeads: 8,
  numKeyValueHeads: 2,
  tieWordEmbeddings: false,
  dtype: 'F32',
  seed: 2025,
  layerSpecificity: 0.3,
};

/** Teacher-forced logits of `tokens` through the model in `dir`. */
async function logitsOf(dir: string, backend: Backend, tokens: number[]): Promise<Float32Array> {
  const model = await loadModel(dir, backend);
  const ids = backend.fromArray(Int32Array.from(tokens), [1, tokens.length], 'int32');
  try {
    const { logits } = model.forward(ids);
    const values = (await backend.read(logits)) as Float32Array;
    backend.dispose(logits);
    return values;
  } finally {
    backend.dispose(ids);
    model.dispose();
  }
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job on an embedded default: convert a model to relaxed recursive and show what it saves',
  help: `rrt demo [--model <hf-dir>] [--loops 2] [--backend auto|node-gpu|node|wasm|webgpu|cpu] [--json]

Picks a backend and says why; takes a model (by default a small Llama-shaped one built from a fixed seed),
converts it into a recursive model of N/L shared layers looped L times (average init), and into relaxed
ones with per-loop LoRA of growing rank; then runs every one on the same tokens and prints its size and
how far its logits are from the original's. At full rank the relaxed model is the original.

Example:
  rrt demo
  rrt demo --model models/stories260K --loops 5`,
  async run(args, io) {
    const { values } = parseFlags(args, {
      options: {
        model: { type: 'string' },
        loops: { type: 'string', default: '2' },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    const loops = numberFlag('loops', values.loops, { integer: true, min: 1 })!;
    const backendKind = backendFlag(values.backend);
    const say = (text: string) => {
      if (!values.json) io.stdout(`${text}\n`);
    };
    const { backend, kind, reason } = await createBackend(backendKind);
    say(`backend: ${kind} (${backend.name}): ${reason}`);
    const baseline = backend.numTensors();

    const workDir = await mkdtemp(join(tmpdir(), 'rrt-demo-'));
    try {
      let sourceDir = values.model === undefined ? undefined : await modelArgument(values.model, values, io);
      if (!sourceDir) {
        sourceDir = join(workDir, 'source');
        const written = await writeSyntheticCheckpoint(sourceDir, demoSpec);
        say(
          `model:   embedded default (seeded Llama-shaped, ${written.parameters.toLocaleString('en-US')} parameters)`,
        );
      } else {
        say(`model:   ${sourceDir}`);
      }
      const config = await readConfig(sourceDir);
      const fullRank = Math.max(
        config.hiddenSize,
        config.intermediateSize,
        config.numAttentionHeads * config.headDim,
      );
      const tokens = Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % config.vocabSize);
      const original = await logitsOf(sourceDir, backend, tokens);

      const ranks = [0, 8, 16, 32, fullRank];
      const rows: {
        rank: string;
        parameters: number;
        saved: number;
        maxAbsError: number;
        relativeError: number;
        argmaxAgreement: number;
      }[] = [];
      for (const rank of ranks) {
        const outDir = join(workDir, `relaxed-${rank}`);
        const result = await convertToRecursive(sourceDir, outDir, {
          loops,
          init: 'average',
          ranks: rank,
          svd: { backend },
          signal: io.signal,
          onWarning: () => {}, // full rank is clamped per module on purpose
        });
        const logits = await logitsOf(outDir, backend, tokens);
        let maxAbsError = 0;
        let squaredError = 0;
        let squaredNorm = 0;
        let agree = 0;
        const vocab = config.vocabSize;
        for (let position = 0; position < tokens.length; position++) {
          const row = logits.subarray(position * vocab, (position + 1) * vocab);
          const reference = original.subarray(position * vocab, (position + 1) * vocab);
          for (let i = 0; i < vocab; i++) {
            const difference = row[i]! - reference[i]!;
            maxAbsError = Math.max(maxAbsError, Math.abs(difference));
            squaredError += difference * difference;
            squaredNorm += reference[i]! * reference[i]!;
          }
          if (argmax(row) === argmax(reference)) agree++;
        }
        const { original: originalCount, relaxed } = result.parameters;
        rows.push({
          rank: rank === 0 ? '0 (recursive)' : rank === fullRank ? `${fullRank} (full)` : String(rank),
          parameters: relaxed,
          saved: 1 - relaxed / originalCount,
          maxAbsError,
          relativeError: Math.sqrt(squaredError / squaredNorm),
          argmaxAgreement: agree / tokens.length,
        });
        await rm(outDir, { recursive: true, force: true });
      }
      const leaked = backend.numTensors() - baseline;
      if (values.json) {
        io.stdout(`${JSON.stringify({ backend: kind, reason, loops, rows, leakedTensors: leaked })}\n`);
      } else {
        say(
          `layout:  ${config.numHiddenLayers} layers → ${config.numHiddenLayers / loops} shared × ${loops} loops, average init\n`,
        );
        say(
          formatTable(
            [
              'LoRA rank',
              'parameters',
              'saved',
              '‖Δ logits‖ / ‖logits‖',
              'max |Δ logits|',
              'same next token',
            ],
            rows.map((row) => [
              row.rank,
              row.parameters.toLocaleString('en-US'),
              `${(100 * row.saved).toFixed(1)}%`,
              row.relativeError.toExponential(2),
              row.maxAbsError.toExponential(2),
              `${(100 * row.argmaxAgreement).toFixed(0)}%`,
            ]),
          ),
        );
        if (leaked !== 0) io.stderr(`rrt demo: ${leaked} tensors were not freed (a leak)\n`);
      }
      const exact = rows[rows.length - 1]!.maxAbsError <= 1e-4;
      if (!exact)
        io.stderr('rrt demo: the full-rank relaxed model does not reproduce the original (max |Δ| > 1e-4)\n');
      return exact && leaked === 0 ? 0 : 1;
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  },
};
