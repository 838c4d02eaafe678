import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenizerError } from '../errors.js';
import { buildLlamaTokenizerJson } from './llama-tokenizer-json.js';
import {
  randomUnicodeText,
  seededRandom,
  trainTinyBpeVocab,
  writeLlama2cTokenizerBin,
} from './llama2c-reference.test-util.js';
import { loadTokenizer } from './load.js';
import { parseSentencePieceVocab } from './sentencepiece.js';
import { tokenizerFromJson } from './tokenizer.js';

const CORPUS =
  'Once upon a time there was a little dog named Spot. Spot liked to run in the sun with his friend. ' +
  'One day the sun went away and it began to rain. Spot and his friend ran home and were happy.';
const vocab = trainTinyBpeVocab(CORPUS, 60);
const tokenizerJson = buildLlamaTokenizerJson(
  parseSentencePieceVocab(writeLlama2cTokenizerBin(vocab), 'tiny.bin'),
);
const words = [...new Set(CORPUS.split(/\W+/))].filter((w) => w.length > 0);

const tempDirs: string[] = [];
function tempDir(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rrt-tokenizer-'));
  tempDirs.push(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Expects `promise` to reject with a TokenizerError whose file ends with `file` and message has `what`. */
async function expectTokenizerError(promise: Promise<unknown>, file: string, what: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TokenizerError);
  expect((error as TokenizerError).file.endsWith(file)).toBe(true);
  expect((error as TokenizerError).message).toContain(file);
  expect((error as TokenizerError).message).toContain(what);
}

describe('loadTokenizer', () => {
  it('reads tokenizer.json with BOS / EOS from generation_config.json', async () => {
    const dir = tempDir({
      'tokenizer.json': JSON.stringify(tokenizerJson),
      'generation_config.json': JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 1] }),
    });
    const tokenizer = await loadTokenizer(dir);
    expect(tokenizer.bosId).toBe(1);
    expect(tokenizer.eosId).toBe(2);
    expect(tokenizer.eosIds).toEqual([2, 1]);
    expect(tokenizer.vocabSize).toBe(vocab.length);
    expect(tokenizer.encode('Spot ran', { addBos: true })[0]).toBe(1);
    expect(tokenizer.encode('Spot ran', { addBos: false })[0]).not.toBe(1);
  });

  it('takes ids from config.json, then tokenizer_config.json token strings, then well-known specials', async () => {
    const fromConfig = await loadTokenizer(
      tempDir({
        'tokenizer.json': JSON.stringify(tokenizerJson),
        'config.json': '{"bos_token_id":2,"eos_token_id":1}',
      }),
    );
    expect([fromConfig.bosId, fromConfig.eosId]).toEqual([2, 1]);
    const fromStrings = await loadTokenizer(
      tempDir({
        'tokenizer.json': JSON.stringify(tokenizerJson),
        'tokenizer_config.json': JSON.stringify({
          bos_token: { content: '</s>' },
          eos_token: '<unk>',
          add_bos_token: false,
        }),
      }),
    );
    expect([fromStrings.bosId, fromStrings.eosId, fromStrings.addsBosByDefault]).toEqual([2, 0, false]);
    expect(fromStrings.encode('Spot')[0]).not.toBe(2);
    const bare = await loadTokenizer(tempDir({ 'tokenizer.json': JSON.stringify(tokenizerJson) }));
    expect([bare.bosId, bare.eosId, bare.addsBosByDefault]).toEqual([1, 2, true]);
  });

  it('throws a TokenizerError naming tokenizer.json when it is missing', async () => {
    await expectTokenizerError(loadTokenizer(tempDir({})), 'tokenizer.json', 'not found');
  });

  it('throws a TokenizerError naming the file when it is not JSON or not a tokenizer', async () => {
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': '{"model": ' })),
      'tokenizer.json',
      'not valid JSON',
    );
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': '[1, 2]' })),
      'tokenizer.json',
      'JSON object',
    );
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': '{"added_tokens": []}' })),
      'tokenizer.json',
      '"model"',
    );
    const noMerges = { ...tokenizerJson, model: { ...tokenizerJson.model, merges: undefined } };
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': JSON.stringify(noMerges) })),
      'tokenizer.json',
      'merges',
    );
    const badAdded = { ...tokenizerJson, added_tokens: [{ content: '<s>' }] };
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': JSON.stringify(badAdded) })),
      'tokenizer.json',
      'added_tokens[0]',
    );
  });

  it('throws a TokenizerError naming a sidecar file that is malformed or names an id outside the vocabulary', async () => {
    const json = JSON.stringify(tokenizerJson);
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': json, 'generation_config.json': '{"eos_token_id": 9999}' })),
      'generation_config.json',
      'eos_token_id 9999',
    );
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': json, 'config.json': '{oops' })),
      'config.json',
      'not valid JSON',
    );
    await expectTokenizerError(
      loadTokenizer(tempDir({ 'tokenizer.json': json, 'tokenizer_config.json': '{"bos_token": "<nope>"}' })),
      'tokenizer_config.json',
      '"<nope>" is not in the vocabulary',
    );
  });
});

describe('Tokenizer', () => {
  const tokenizer = tokenizerFromJson(tokenizerJson);

  it('encodes the empty string to nothing (plus BOS when asked)', () => {
    expect(tokenizer.encode('', { addBos: false })).toEqual([]);
    expect(tokenizer.encode('', { addBos: true })).toEqual([1]);
    expect(tokenizer.decode([])).toBe('');
  });

  it('keeps special tokens in the text only when asked', () => {
    const ids = tokenizer.encode('Spot', { addBos: true });
    expect(tokenizer.decode(ids)).toBe('Spot');
    expect(tokenizer.decode(ids, { skipSpecialTokens: false })).toBe('<s> Spot');
    expect(tokenizer.isSpecial(1)).toBe(true);
    expect(tokenizer.isSpecial(ids[1]!)).toBe(false);
  });

  it('refuses ids outside the vocabulary with a TokenizerError', () => {
    expect(() => tokenizer.decode([5, tokenizer.vocabSize])).toThrow(TokenizerError);
    expect(() => tokenizer.decode([-1])).toThrow(/outside the vocabulary/);
    expect(() => tokenizer.createDecodeStream().push(1.5)).toThrow(TokenizerError);
    expect(tokenizer.idToToken(tokenizer.vocabSize)).toBeUndefined();
  });

  it('refuses addBos on a tokenizer without BOS', () => {
    const noBos = tokenizerFromJson(
      {
        ...tokenizerJson,
        added_tokens: tokenizerJson.added_tokens.filter((t) => t.content !== '<s>'),
        post_processor: null,
      },
      { source: 'no-bos' },
    );
    expect(noBos.bosId).toBeUndefined();
    expect(noBos.addsBosByDefault).toBe(false);
    expect(() => noBos.encode('Spot', { addBos: true })).toThrow(/no-bos\/tokenizer.json: has no BOS token/);
  });
});

describe('DecodeStream', () => {
  const tokenizer = tokenizerFromJson(tokenizerJson);

  it('streams text whose concatenation is the full decode, on 200 random unicode strings', () => {
    const random = seededRandom(7);
    for (let i = 0; i < 200; i++) {
      const text = randomUnicodeText(random, words, 1 + Math.floor(random() * 50));
      const ids = tokenizer.encode(text, { addBos: true });
      const stream = tokenizer.createDecodeStream();
      const pieces = ids.map((id) => stream.push(id));
      pieces.push(stream.flush());
      expect(pieces.join('')).toBe(tokenizer.decode(ids));
      expect(pieces.join('')).toBe(text);
      // A valid text never streams a replacement character: unfinished characters are held back.
      for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
    }
  });

  it('holds back the bytes of a character until it is complete, then emits it', () => {
    // 😀 is F0 9F 98 80: four byte-fallback pieces, ids byte + 3.
    const emoji = [0xf0, 0x9f, 0x98, 0x80].map((b) => b + 3);
    const stream = tokenizer.createDecodeStream();
    const spot = tokenizer.encode('Spot', { addBos: false });
    const out = [...spot.map((id) => stream.push(id)), ...emoji.map((id) => stream.push(id))];
    expect(out.slice(spot.length)).toEqual(['', '', '', '😀']);
    expect(out.join('')).toBe('Spot😀');
  });

  it('keeps the space before a word after the first token, and drops special tokens', () => {
    const ids = tokenizer.encode('Spot ran home', { addBos: true });
    const stream = tokenizer.createDecodeStream();
    const pieces = [...ids, 2].map((id) => stream.push(id));
    expect(pieces[0]).toBe('');
    expect(pieces.join('')).toBe('Spot ran home');
    expect(pieces.at(-1)).toBe('');
    const keep = tokenizer.createDecodeStream({ skipSpecialTokens: false });
    expect([...ids, 2].map((id) => keep.push(id)).join('')).toBe('<s> Spot ran home</s>');
  });

  it('flushes an unfinished byte sequence as U+FFFD', () => {
    const stream = tokenizer.createDecodeStream();
    expect(stream.push(0xe2 + 3)).toBe('');
    expect(stream.flush()).toBe('\uFFFD');
    expect(stream.flush()).toBe('');
  });
});
