/**
 * The step API a serving engine composes (`Decoder.rows`, `embed`, `layer`, `readout`) against
 * `Decoder.forward` of each sequence alone, on a relaxed recursive model (K = 2, L = 3, a LoRA per loop):
 * ragged steps mixing prefill chunks and decode rows of several sequences, each reading its own KV
 * history, and one layer call over spans at different loops (LoRA by segment). The code promises bit
 * identity (each row depends only on its own row and its own span's keys), so the test asserts it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache, type KVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Decoder, type LoRAMode, loadModel } from '../src/index.js';
import { idsTensor, maxAbsDifference, randomTokens, readAndDispose, staggeredLoopLogits } from './logits.js';
import { writeRelaxedModel } from './relaxed-model.js';

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`ragged step API (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-ragged-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    async function relaxedModel(loraMode?: LoRAMode) {
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      const dir = join(workDir, `relaxed-${seed}`);
      const { reference, blockSize } = await writeRelaxedModel(dir, seed);
      const baseline = backend.numTensors();
      const model = await loadModel(dir, backend, loraMode ? { loraMode } : {});
      return { seed, vocab: reference.vocabSize, blockSize, model, baseline };
    }

    /** Full-depth logits of `tokens` alone, `[T, vocab]` flat. */
    async function alone(model: Decoder, tokens: readonly number[]): Promise<Float32Array> {
      const ids = idsTensor(backend, [tokens]);
      const logits = await readAndDispose(backend, model.forward(ids).logits);
      backend.dispose(ids);
      return logits;
    }

    it('steps mixing prefill chunks and decode rows of three sequences equal each sequence alone, bit for bit', async () => {
      const { seed, vocab, model, baseline } = await relaxedModel();
      const tokens = [11, 7, 9].map((count, s) => randomTokens(seed + s, count, vocab));
      const caches: KVCache[] = tokens.map(() =>
        createKVCache(backend, { depths: model.schedule.length, capacity: 16 }),
      );
      // Each step: [sequence, chunk length] spans, in row order; every sequence ends fully fed.
      const steps: [number, number][][] = [
        [
          [0, 5],
          [1, 3],
        ],
        [
          [1, 2],
          [0, 1],
          [2, 4],
        ],
        [
          [2, 1],
          [0, 3],
          [1, 1],
        ],
        [
          [0, 1],
          [1, 1],
          [2, 3],
        ],
        [
          [0, 1],
          [2, 1],
        ],
      ];
      const fed = tokens.map(() => 0);
      const got = tokens.map((t) => new Float32Array(t.length * vocab));
      for (const step of steps) {
        const spans = step.map(([s, length]) => ({ batch: 1, length, offset: fed[s]! }));
        const ids = step.flatMap(([s, length]) => tokens[s]!.slice(fed[s]!, fed[s]! + length));
        const logits = backend.tidy(() => {
          const rows = model.rows(spans);
          let hidden = model.embed(backend.fromArray(Int32Array.from(ids), [ids.length], 'int32'));
          for (const { depth } of model.schedule) {
            hidden = model.layer(
              hidden,
              rows,
              step.map(([s]) => ({ depth, cache: caches[s]!.layers[depth]! })),
            );
          }
          return model.readout(hidden);
        });
        const values = await readAndDispose(backend, logits);
        let row = 0;
        for (const [s, length] of step) {
          got[s]!.set(values.subarray(row * vocab, (row + length) * vocab), fed[s]! * vocab);
          row += length;
          fed[s]! += length;
        }
      }
      expect(fed).toEqual(tokens.map((t) => t.length));
      for (const [s, sequence] of tokens.entries()) {
        expect(maxAbsDifference(got[s]!, await alone(model, sequence)), `sequence ${s}, seed ${seed}`).toBe(
          0,
        );
      }
      for (const cache of caches) cache.dispose();
      model.dispose();
      expect(backend.numTensors()).toBe(baseline);
    });

    for (const loraMode of ['segment', 'masked'] as const) {
      it(`one layer call over spans at different loops (LoRA ${loraMode}) equals each sequence alone, bit for bit`, async () => {
        const { seed, vocab, model, baseline } = await relaxedModel(loraMode);
        const tokens = [6, 4].map((count, s) => randomTokens(seed + s, count, vocab));
        // Sequence 1 runs one loop behind sequence 0: call j runs 0 at depth j and 1 at depth j − K, the
        // same stored layer with another loop's LoRA. Each keeps its own hidden rows between calls.
        const logits = backend.tidy(() => staggeredLoopLogits(model, [tokens[0]!, tokens[1]!]));
        for (const [s, sequence] of tokens.entries()) {
          const values = await readAndDispose(backend, logits[s]!);
          expect(maxAbsDifference(values, await alone(model, sequence)), `sequence ${s}, seed ${seed}`).toBe(
            0,
          );
        }
        expect(() =>
          backend.tidy(() => {
            const span = { batch: 1, length: 1, offset: 0 };
            const rows = model.rows([span, span]);
            model.layer(backend.fill([2, model.config.hiddenSize], 0), rows, [{ depth: 0 }, { depth: 1 }]);
          }),
        ).toThrow(RangeError);
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      });
    }
  });
}
