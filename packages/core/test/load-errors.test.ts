import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackend } from '@rrt/backend-tfjs';
import { createKVCache, KVCacheError } from '@rrt/kv-cache';
import type { Backend } from '@rrt/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  generateTokens,
  loadModel,
  openSafetensors,
  type RawTensor,
  WeightError,
  writeSafetensors,
} from '../src/index.js';
import { writeRandomModel } from './random-model.js';

describe('loadModel on bad input: typed errors naming the file and the tensor or field, nothing left allocated', () => {
  let backend: Backend;
  let workDir: string;
  let modelDir: string;
  beforeAll(async () => {
    backend = (await createBackend('cpu')).backend;
    workDir = await mkdtemp(join(tmpdir(), 'rrt-load-errors-'));
    modelDir = join(workDir, 'good');
    await writeRandomModel(modelDir, 'llama-gqa', 7);
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  /** A copy of the good model with its config and tensors edited. */
  async function variant(
    name: string,
    edit: { config?: (config: Record<string, unknown>) => void; tensors?: (tensors: Tensors) => Tensors },
  ): Promise<string> {
    const dir = join(workDir, name);
    const config = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8'));
    edit.config?.(config);
    const file = await openSafetensors(join(modelDir, 'model.safetensors'));
    let tensors: Tensors = [];
    for (const entryName of file.entries.keys()) tensors.push(await file.readTensor(entryName));
    await file.close();
    if (edit.tensors) tensors = edit.tensors(tensors);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    return dir;
  }
  type Tensors = RawTensor[];

  async function expectFailure(
    dir: string,
    errorClass: typeof ConfigError | typeof WeightError,
    pattern: RegExp,
  ) {
    const before = backend.numTensors();
    const failure = await loadModel(dir, backend).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(errorClass);
    expect((failure as Error).message).toMatch(pattern);
    expect(backend.numTensors()).toBe(before);
  }

  it('a tensor the config needs but the file lacks', async () => {
    const dir = await variant('missing', {
      tensors: (tensors) => tensors.filter((tensor) => tensor.name !== 'model.layers.2.mlp.up_proj.weight'),
    });
    await expectFailure(dir, WeightError, /missing.*model\.layers\.2\.mlp\.up_proj\.weight.*missing/);
  });

  it('a tensor with the wrong shape', async () => {
    const dir = await variant('shape', {
      tensors: (tensors) =>
        tensors.map((tensor) =>
          tensor.name === 'model.layers.1.self_attn.k_proj.weight'
            ? { ...tensor, shape: [...tensor.shape].reverse() }
            : tensor,
        ),
    });
    await expectFailure(dir, WeightError, /shape.*k_proj\.weight.*has shape \[48, 16\], expected \[16, 48\]/);
  });

  it('a tensor of an integer dtype', async () => {
    const dir = await variant('dtype', {
      tensors: (tensors) =>
        tensors.map((tensor) =>
          tensor.name === 'model.norm.weight' ? { ...tensor, dtype: 'I32' as const } : tensor,
        ),
    });
    await expectFailure(dir, WeightError, /model\.norm\.weight.*dtype I32/);
  });

  it('an unknown model_type', async () => {
    const dir = await variant('model-type', { config: (config) => (config.model_type = 'mamba') });
    await expectFailure(dir, ConfigError, /config\.json.*model_type.*mamba/);
  });

  it('a missing or malformed field', async () => {
    const missing = await variant('no-hidden', { config: (config) => delete config.hidden_size });
    await expectFailure(missing, ConfigError, /config\.json.*hidden_size/);
    const heads = await variant('heads', { config: (config) => (config.num_key_value_heads = 4) });
    await expectFailure(heads, ConfigError, /num_key_value_heads.*divisor/);
  });

  it('reports checkpoint tensors the config does not use', async () => {
    const dir = await variant('extra', {
      tensors: (tensors) => [
        ...tensors,
        {
          name: 'model.layers.0.self_attn.rotary_emb.inv_freq',
          dtype: 'F32',
          shape: [1],
          bytes: new Uint8Array(4),
        },
      ],
    });
    const unused: string[] = [];
    const model = await loadModel(dir, backend, { onUnusedTensor: (name) => unused.push(name) });
    model.dispose();
    expect(unused).toEqual(['model.layers.0.self_attn.rotary_emb.inv_freq']);
  });

  it('a KV cache with the wrong number of depths, and a prompt longer than the positions', async () => {
    const baseline = backend.numTensors();
    const model = await loadModel(modelDir, backend);
    const cache = createKVCache(backend, { depths: 2, capacity: 8 });
    const ids = backend.fromArray(Int32Array.from([1, 2]), [1, 2], 'int32');
    expect(() => model.forward(ids, { cache })).toThrow(KVCacheError);
    expect(() => model.forward(ids, { cache })).toThrow(/2 depths, the model 3 effective layers/);
    const tooLong = Array.from({ length: model.config.maxPositionEmbeddings }, () => 1);
    await expect(generateTokens(model, tooLong, { maxTokens: 1 }).next()).rejects.toThrow(
      /at most 64 positions/,
    );
    backend.dispose(ids);
    cache.dispose();
    model.dispose();
    expect(backend.numTensors()).toBe(baseline);
  });

  it('a config.json that is not JSON', async () => {
    const dir = await variant('not-json', {});
    await writeFile(join(dir, 'config.json'), '{"model_type": "llama",');
    await expectFailure(dir, ConfigError, /config\.json.*valid JSON/);
  });
});
