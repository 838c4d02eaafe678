import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../cli-io.js';
import { trainCommand } from './train.js';
import { capture } from '../../test/capture.js';

let workDir: string;
let text: string;
let config: string;
beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'rrt-cli-train-'));
  text = join(workDir, 'corpus.txt');
  // 60 short "documents" of a small repetitive language, separated by blank lines.
  const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'to', 'it'];
  const documents = Array.from({ length: 60 }, (_, d) =>
    Array.from({ length: 40 }, (_, i) => words[(d * 3 + i * i + i) % words.length]).join(' '),
  );
  await writeFile(text, documents.join('\n\n'));
  config = join(workDir, 'config.json');
  await writeFile(
    config,
    JSON.stringify({
      model_type: 'llama',
      vocab_size: 300,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      max_position_embeddings: 32,
      tie_word_embeddings: true,
      bos_token_id: 1,
      eos_token_id: 2,
    }),
  );
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('rrt train', () => {
  it('pretrains from a config with a tokenizer learned from the text, then uptrains and resumes the result', async () => {
    const pretrained = join(workDir, 'pretrained');
    const io = capture();
    const flags = [
      '--text',
      text,
      '--steps',
      '6',
      '--batch',
      '2',
      '--seq',
      '16',
      '--lr',
      '1e-2',
      '--backend',
      'cpu',
    ];
    expect(await trainCommand.run(['--init-config', config, '--out', pretrained, ...flags], io)).toBe(0);
    expect(io.err).toContain('train [########################] 6/6');
    expect(io.out).toMatch(/held-out perplexity/);
    const tokenizer = JSON.parse(await readFile(join(pretrained, 'tokenizer.json'), 'utf8'));
    expect(Object.keys(tokenizer.model.vocab).length).toBeLessThanOrEqual(300);

    const uptrained = join(workDir, 'uptrained');
    const json = capture();
    const args = [
      pretrained,
      '--out',
      uptrained,
      '--teacher',
      pretrained,
      '--checkpoint-every',
      '3',
      '--json',
      ...flags,
    ];
    expect(await trainCommand.run(args, json)).toBe(0);
    const first = JSON.parse(json.out);
    expect(first.stepsDone).toBe(6);
    expect(first.heldOutLosses[1][1]).toBeLessThan(first.heldOutLosses[0][1]);
    // Resuming a finished run does nothing more and reports the same curve.
    const again = capture();
    expect(await trainCommand.run([...args, '--resume'], again)).toBe(0);
    expect(JSON.parse(again.out).losses).toEqual(first.losses);
  });

  it('rejects a missing text file flag, or a model directory together with --init-config', async () => {
    await expect(trainCommand.run(['model', '--out', 'x'], capture())).rejects.toThrow(UsageError);
    await expect(
      trainCommand.run(['model', '--init-config', config, '--text', text, '--out', 'x'], capture()),
    ).rejects.toThrow(UsageError);
    await expect(
      trainCommand.run(['model', '--text', text, '--out', 'x', '--steps', '0'], capture()),
    ).rejects.toThrow(UsageError);
  });
});
