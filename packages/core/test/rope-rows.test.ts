/**
 * `Decoder.rows` copies each row's RoPE cosines and sines out of host tables (no gather per step): every
 * row gets exactly its position's row of `ropeTables` (what the device-table gather it replaced gave),
 * spans with several sequences and prefill chunks included, Gemma 3's local tables too, and the tensors
 * it makes are freed by `dispose`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import type { Backend, Tensor } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type RowSpan, ropeTables } from '../src/index.js';
import { writeRandomModel } from './random-model.js';

for (const kind of ['cpu', 'wasm'] as const) {
  describe(`Decoder.rows RoPE rows (${kind})`, () => {
    let backend: Backend;
    let workDir: string;
    beforeAll(async () => {
      backend = (await createBackend(kind)).backend;
      workDir = await mkdtemp(join(tmpdir(), 'rrt-rope-rows-'));
    });
    afterAll(async () => {
      await rm(workDir, { recursive: true, force: true });
    });

    // llama3-tied: llama3 frequency scaling; gemma3-local: linear-scaled global tables and local ones.
    for (const name of ['llama3-tied', 'gemma3-local'] as const) {
      it(`${name}: each row holds its own position's table row, exactly`, async () => {
        const seed = 1 + Math.floor(Math.random() * 1e6);
        const dir = join(workDir, `${name}-${seed}`);
        await writeRandomModel(dir, name, seed);
        const model = await loadModel(dir, backend);
        const { config } = model;
        const last = config.maxPositionEmbeddings;
        const baseline = backend.numTensors();
        // A decode row, two sequences sharing a chunk's positions, a chunk after a prefix, the last position.
        const spans: RowSpan[] = [
          { batch: 1, length: 1, offset: 9 },
          { batch: 2, length: 3, offset: 4 },
          { batch: 1, length: 5, offset: 0 },
          { batch: 1, length: 1, offset: last - 1 },
        ];
        const positions = spans.flatMap(({ batch, length, offset }) =>
          Array.from({ length: batch * length }, (_, row) => offset + (row % length)),
        );
        const half = config.rotaryDim / 2;
        const rows = model.rows(spans);
        expect(rows.count).toBe(positions.length);
        const tables: [string, Tensor | undefined, Float32Array][] = [];
        const global = ropeTables({ ...config, headDim: config.rotaryDim });
        tables.push(['cos', rows.cos, global.cos], ['sin', rows.sin, global.sin]);
        if (config.localRopeTheta !== undefined) {
          const local = ropeTables({
            ...config,
            headDim: config.rotaryDim,
            ropeTheta: config.localRopeTheta,
            ropeScaling: { type: 'none' },
          });
          tables.push(['localCos', rows.localCos, local.cos], ['localSin', rows.localSin, local.sin]);
        } else {
          expect(rows.localCos).toBeUndefined();
        }
        for (const [label, tensor, table] of tables) {
          expect(tensor, label).toBeDefined();
          expect(tensor!.shape, label).toEqual([positions.length, 1, half]);
          const expected = new Float32Array(positions.length * half);
          for (const [row, position] of positions.entries()) {
            expected.set(table.subarray(position * half, (position + 1) * half), row * half);
          }
          expect(await backend.read(tensor!), `${label}, seed ${seed}`).toEqual(expected);
        }
        // Not a constant table: rows of different positions differ.
        expect(global.cos.subarray(9 * half, 10 * half)).not.toEqual(global.cos.subarray(4 * half, 5 * half));
        rows.dispose();
        expect(backend.numTensors()).toBe(baseline);
        expect(() => model.rows([{ batch: 1, length: 2, offset: last - 1 }])).toThrow(RangeError);
        expect(backend.numTensors()).toBe(baseline);
        model.dispose();
      });
    }
  });
}
