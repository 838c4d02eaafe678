/**
 * The decoder paths a serving engine stands on, through the public API only (`loadModel`,
 * `Decoder.forward`, `createKVCache`): batches of different rows, multi-token chunks after a cached
 * prefix, and the last-position readout. Each is checked against the float64 reference and against another
 * forward of the same model where the code promises bit-identity.
 *
 * Observed over 50 runs of this file (fresh seeds each, both backends): the worst error against the
 * reference, relative to the position's largest logit, was 1.1e-6 (one seed; every other below 8e-7). A
 * row of a batch, a chunk after a cached prefix and the last-position readout equalled their counterparts
 * bit for bit every time, on cpu and on wasm.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Decoder, loadModel } from '../src/index.js';
import { idsTensor, maxAbsDifference, randomTokens, readAndDispose, worstRelativeError } from './logits.js';
import { type ReferenceConfig, type ReferenceWeights, referenceLogits } from './reference.js';
import { randomConfigs, writeRandomModel } from './random-model.js';

/** Relative error bound against the reference: about 3× the worst observed (1.1e-6). */
const referenceTolerance = 3e-6;

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`decoder paths for serving (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-decoder-paths-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    /** A fresh random model of `name` on a fresh seed, loaded; the test disposes it. */
    async function randomModel(name: string): Promise<{
      seed: number;
      reference: ReferenceConfig;
      weights: ReferenceWeights;
      model: Decoder;
      baseline: number;
    }> {
      const seed = 1000 + Math.floor(Math.random() * 1e6);
      const dir = join(workDir, `${name}-${seed}`);
      const { reference, weights } = await writeRandomModel(dir, name, seed);
      const baseline = backend.numTensors();
      const model = await loadModel(dir, backend);
      return { seed, reference, weights, model, baseline };
    }

    for (const name of Object.keys(randomConfigs)) {
      it(`${name}: a batch of rows with 13, 8 and 3 real tokens: each row equals itself alone bit for bit and the reference`, async () => {
        const { seed, reference, weights, model, baseline } = await randomModel(name);
        const vocab = reference.vocabSize;
        const length = 13;
        // Right-padded with token 0: causal attention keeps the padding out of every real position.
        const real = [13, 8, 3].map((count, row) => randomTokens(seed + row, count, vocab));
        const rows = real.map((tokens) => [...tokens, ...new Array<number>(length - tokens.length).fill(0)]);

        const ids = idsTensor(backend, rows);
        const batched = await readAndDispose(backend, model.forward(ids).logits);
        backend.dispose(ids);
        for (const [row, tokens] of rows.entries()) {
          const oneRow = idsTensor(backend, [tokens]);
          const alone = await readAndDispose(backend, model.forward(oneRow).logits);
          backend.dispose(oneRow);
          expect(maxAbsDifference(alone, batched, row * length * vocab), `row ${row}, seed ${seed}`).toBe(0);
          const expected = referenceLogits(reference, weights, real[row]!);
          expect(
            worstRelativeError(batched, expected, row * length),
            `row ${row}, seed ${seed}`,
          ).toBeLessThanOrEqual(referenceTolerance);
        }
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      });

      it(`${name}: chunks of 4, 5, 3, 1, 6 and 2 tokens after a cached prefix equal a full recompute bit for bit and the reference (batch 1 and 2)`, async () => {
        const { seed, reference, weights, model, baseline } = await randomModel(name);
        const vocab = reference.vocabSize;
        const chunkLengths = [4, 5, 3, 1, 6, 2]; // offsets 0, 4, 9, 12, 13 (crossing 16 keys), 19
        const length = chunkLengths.reduce((a, b) => a + b, 0);
        const rows = [0, 1].map((row) => randomTokens(seed + row, length, vocab));
        const expected = rows.map((tokens) => referenceLogits(reference, weights, tokens));

        for (const batch of [1, 2]) {
          const batchRows = rows.slice(0, batch);
          const ids = idsTensor(backend, batchRows);
          const full = await readAndDispose(backend, model.forward(ids).logits);
          backend.dispose(ids);
          const cache = createKVCache(backend, { depths: reference.numHiddenLayers, capacity: length });
          let offset = 0;
          for (const chunkLength of chunkLengths) {
            const chunkIds = idsTensor(
              backend,
              batchRows.map((tokens) => tokens.slice(offset, offset + chunkLength)),
            );
            const chunk = await readAndDispose(backend, model.forward(chunkIds, { cache }).logits);
            backend.dispose(chunkIds);
            for (let row = 0; row < batch; row++) {
              const where = `batch ${batch}, row ${row}, positions ${offset}…${offset + chunkLength - 1}, seed ${seed}`;
              const rowLogits = chunk.subarray(row * chunkLength * vocab, (row + 1) * chunkLength * vocab);
              expect(maxAbsDifference(rowLogits, full, (row * length + offset) * vocab), where).toBe(0);
              expect(
                worstRelativeError(rowLogits, expected[row]!.slice(offset, offset + chunkLength)),
                where,
              ).toBeLessThanOrEqual(referenceTolerance);
            }
            offset += chunkLength;
          }
          expect(cache.offset).toBe(length);
          cache.dispose();
        }
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      });

      it(`${name}: lastPositionOnly is the full logits' last row bit for bit, with and without a cached prefix`, async () => {
        const { seed, reference, model, baseline } = await randomModel(name);
        const vocab = reference.vocabSize;
        const rows = [0, 1].map((row) => randomTokens(seed + row, 16, vocab));
        const prefix = rows.map((tokens) => tokens.slice(0, 9));
        const chunk = rows.map((tokens) => tokens.slice(9));

        // Without a cache: the 9-token prefix alone.
        const prefixIds = idsTensor(backend, prefix);
        const full = await readAndDispose(backend, model.forward(prefixIds).logits);
        const lastOutput = model.forward(prefixIds, { lastPositionOnly: true }).logits;
        expect(lastOutput.shape).toEqual([2, 1, vocab]);
        const last = await readAndDispose(backend, lastOutput);
        for (let row = 0; row < 2; row++) {
          const readout = last.subarray(row * vocab, (row + 1) * vocab);
          expect(maxAbsDifference(readout, full, (row * 9 + 8) * vocab), `row ${row}, seed ${seed}`).toBe(0);
        }

        // After the cached prefix: the 7-token chunk, in two caches holding the same prefix.
        const caches = [0, 1].map(() =>
          createKVCache(backend, { depths: reference.numHiddenLayers, capacity: 16 }),
        );
        for (const cache of caches) backend.dispose(model.forward(prefixIds, { cache }).logits);
        backend.dispose(prefixIds);
        const chunkIds = idsTensor(backend, chunk);
        const fullChunk = await readAndDispose(backend, model.forward(chunkIds, { cache: caches[0] }).logits);
        const lastChunk = await readAndDispose(
          backend,
          model.forward(chunkIds, { cache: caches[1], lastPositionOnly: true }).logits,
        );
        backend.dispose(chunkIds);
        for (let row = 0; row < 2; row++) {
          const readout = lastChunk.subarray(row * vocab, (row + 1) * vocab);
          expect(
            maxAbsDifference(readout, fullChunk, (row * 7 + 6) * vocab),
            `cached, row ${row}, seed ${seed}`,
          ).toBe(0);
        }
        for (const cache of caches) cache.dispose();
        model.dispose();
        expect(backend.numTensors()).toBe(baseline);
      });
    }
  });
}
