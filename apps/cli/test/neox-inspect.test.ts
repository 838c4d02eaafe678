/**
 * GPT-NeoX through the built CLI (apps/cli/dist/bin.js, run as a child process): `rrt inspect` names the
 * family and its features, for the plain checkpoint (HF tensor names) and for its relaxed conversion.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors } from '@rrt/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(repoRoot, 'apps/cli/dist/bin.js');

function rrt(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** A 2-layer Pythia-shaped checkpoint: head 16, rotary_pct 0.25, parallel residual, small random values. */
async function writeTinyNeox(dir: string): Promise<void> {
  const hidden = 32;
  const ffn = 64;
  const vocab = 37;
  let state = 7;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state / 2 ** 32 - 0.5) * 0.2;
  };
  const tensors: { name: string; dtype: 'F32'; shape: number[]; bytes: Uint8Array }[] = [];
  const add = (name: string, shape: number[], offset = 0) => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + next());
    tensors.push({ name, dtype: 'F32', shape, bytes: new Uint8Array(values.buffer) });
  };
  add('gpt_neox.embed_in.weight', [vocab, hidden]);
  for (let layer = 0; layer < 2; layer++) {
    const p = `gpt_neox.layers.${layer}`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) {
      add(`${p}.${norm}.weight`, [hidden], 1);
      add(`${p}.${norm}.bias`, [hidden]);
    }
    add(`${p}.attention.query_key_value.weight`, [3 * hidden, hidden]);
    add(`${p}.attention.query_key_value.bias`, [3 * hidden]);
    add(`${p}.attention.dense.weight`, [hidden, hidden]);
    add(`${p}.attention.dense.bias`, [hidden]);
    add(`${p}.mlp.dense_h_to_4h.weight`, [ffn, hidden]);
    add(`${p}.mlp.dense_h_to_4h.bias`, [ffn]);
    add(`${p}.mlp.dense_4h_to_h.weight`, [hidden, ffn]);
    add(`${p}.mlp.dense_4h_to_h.bias`, [hidden]);
  }
  add('gpt_neox.final_layer_norm.weight', [hidden], 1);
  add('gpt_neox.final_layer_norm.bias', [hidden]);
  add('embed_out.weight', [vocab, hidden]);
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['GPTNeoXForCausalLM'],
      model_type: 'gpt_neox',
      vocab_size: vocab,
      hidden_size: hidden,
      intermediate_size: ffn,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      rotary_pct: 0.25,
      rotary_emb_base: 10000,
      layer_norm_eps: 1e-5,
      use_parallel_residual: true,
      hidden_act: 'gelu',
      max_position_embeddings: 64,
      tie_word_embeddings: false,
    }),
  );
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
}

describe('rrt inspect on GPT-NeoX', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rrt-cli-neox-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('names the family and its features, plain and converted; the unrolled export is gpt_neox again', async () => {
    const plain = join(work, 'pythia-tiny');
    await writeTinyNeox(plain);
    const inspect = await rrt(['inspect', plain]);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout).toContain(': gpt_neox\n');
    expect(inspect.stdout).toContain(
      'features: LayerNorm with bias, parallel residual, rotary 4 of 16 head dims (25%), non-gated MLP, ' +
        'biases on q/k/v/o/up/down\n',
    );
    // Every NeoX tensor lands in a named group (none in "other").
    expect(inspect.stdout).toMatch(/^attention +8 /m);
    expect(inspect.stdout).toMatch(/^head +1 /m);
    expect(inspect.stdout).not.toMatch(/^other /m);
    const json = JSON.parse((await rrt(['inspect', plain, '--json'])).stdout);
    expect(json.config).toMatchObject({
      family: 'gpt_neox',
      parallelResidual: true,
      rotaryDim: 4,
      headDim: 16,
    });

    const relaxed = join(work, 'pythia-tiny-rrt');
    const converted = await rrt(['convert', plain, '--out', relaxed, '--loops', '2', '--rank', '8']);
    expect(converted.code, converted.stderr).toBe(0);
    const inspectRelaxed = await rrt(['inspect', relaxed]);
    expect(inspectRelaxed.stdout).toContain(': gpt_neox\n');
    expect(inspectRelaxed.stdout).toContain('recursion: 1 block layer × 2 loops');
    expect(inspectRelaxed.stdout).toMatch(/recursion: 1 block layer × 2 loops .*, per-loop LoRA bias\n/);

    const unrolled = join(work, 'pythia-tiny-unrolled');
    const exported = await rrt(['export', relaxed, '--unroll', '--out', unrolled, '--backend', 'none']);
    expect(exported.code, exported.stderr).toBe(0);
    expect(JSON.parse(await readFile(join(unrolled, 'config.json'), 'utf8')).model_type).toBe('gpt_neox');
    expect((await rrt(['inspect', unrolled])).stdout).toContain('parallel residual');
  });
});
