import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildLlamaTokenizerJson } from './llama-tokenizer-json.js';
import {
  llama2cEncode,
  randomUnicodeText,
  seededRandom,
  trainTinyBpeVocab,
  writeLlama2cTokenizerBin,
} from './llama2c-reference.test-util.js';
import { parseSentencePieceVocab } from './sentencepiece.js';
import { type Tokenizer, tokenizerFromJson } from './tokenizer.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const assets = path.resolve(repoRoot, '../shared/assets');
const hasAssets = existsSync(path.join(assets, 'stories260K/tok512.bin'));
const skipReason = hasAssets ? '' : ` (skipped: ${assets} is absent)`;

const CORPUS =
  'Once upon a time there was a little girl named Lily. She loved to play in the park with her mom. ' +
  'One day she saw a big red ball in the tree. The ball was too high, so she asked her mom for help. ' +
  'Her mom smiled and said that they could get it together. They were happy and played all day long.';

/** Converts a llama2.c tokenizer.bin through the code under test and loads it with tokenizers.js. */
function convert(bin: Uint8Array, file: string): Tokenizer {
  return tokenizerFromJson(
    JSON.parse(JSON.stringify(buildLlamaTokenizerJson(parseSentencePieceVocab(bin, file)))),
  );
}

/** Compares our ids with the reference llama2.c encoder's; returns the texts that differ. */
function mismatches(
  tokenizer: Tokenizer,
  bin: Uint8Array,
  texts: string[],
  parseSpecialTokens = true,
): string[] {
  return texts.filter(
    (text) =>
      JSON.stringify(tokenizer.encode(text, { addBos: true, parseSpecialTokens })) !==
      JSON.stringify(llama2cEncode(bin, text, true)),
  );
}

describe('tokenizer.json from a synthetic llama2.c vocabulary', () => {
  const vocab = trainTinyBpeVocab(CORPUS, 80);
  const bin = writeLlama2cTokenizerBin(vocab);
  const tokenizer = convert(bin, 'synthetic.bin');
  const words = [...new Set(CORPUS.split(/\W+/))].filter((w) => w.length > 0);

  it('keeps ids: byte pieces at 3..258, specials at 0..2, every piece at its llama2.c id', () => {
    expect(tokenizer.vocabSize).toBe(vocab.length);
    expect(tokenizer.idToToken(0)).toBe('<unk>');
    expect(tokenizer.idToToken(1)).toBe('<s>');
    expect(tokenizer.idToToken(2)).toBe('</s>');
    expect(tokenizer.idToToken(3)).toBe('<0x00>');
    expect(tokenizer.idToToken(258)).toBe('<0xFF>');
    vocab.forEach((token, id) => {
      if (id >= 259) expect(tokenizer.idToToken(id)).toBe(token.text.replaceAll(' ', '\u2581'));
    });
  });

  it('encodes the corpus sentences and 300 random unicode strings as llama2.c encode() does', () => {
    const random = seededRandom(1234);
    const texts = [
      ...CORPUS.split('. '),
      '',
      ' ',
      '   leading spaces',
      'trailing  ',
      ...Array.from({ length: 300 }, () => randomUnicodeText(random, words, 1 + Math.floor(random() * 60))),
    ];
    expect(mismatches(tokenizer, bin, texts)).toEqual([]);
  });

  it('reads special-token text as those tokens, or as plain text like llama2.c with parseSpecialTokens false', () => {
    const random = seededRandom(31);
    const specials = ['<s>', '</s>', '<unk>'];
    const texts = Array.from({ length: 100 }, () =>
      [0, 1, 2, 3]
        .map(() => randomUnicodeText(random, words, 8) + specials[Math.floor(random() * 3)])
        .join(''),
    );
    expect(mismatches(tokenizer, bin, texts, false)).toEqual([]);
    expect(tokenizer.encode('a<unk>', { addBos: false })).toContain(0);
    expect(tokenizer.encode('a<unk>', { addBos: false, parseSpecialTokens: false })).not.toContain(0);
    expect(tokenizer.encode('', { addBos: false, parseSpecialTokens: false })).toEqual([]);
  });

  it('decodes back to the text, BOS left out', () => {
    const random = seededRandom(99);
    for (let i = 0; i < 100; i++) {
      const text = randomUnicodeText(random, words, 1 + Math.floor(random() * 40));
      expect(tokenizer.decode(tokenizer.encode(text, { addBos: true }))).toBe(text);
    }
  });
});

describe.skipIf(!hasAssets)(`tokenizer.json from stories260K's tok512${skipReason}`, () => {
  const dir = path.join(assets, 'stories260K');
  const bin = hasAssets ? readFileSync(path.join(dir, 'tok512.bin')) : new Uint8Array();
  const tokenizer = hasAssets ? convert(bin, 'tok512.bin') : (undefined as never);

  it('is the same tokenizer.json whether read from tok512.bin or tok512.model', () => {
    const fromBin = buildLlamaTokenizerJson(parseSentencePieceVocab(bin, 'tok512.bin'));
    const model = readFileSync(path.join(dir, 'tok512.model'));
    const fromModel = buildLlamaTokenizerJson(parseSentencePieceVocab(model, 'tok512.model'));
    expect(fromModel).toEqual(fromBin);
  });

  it('matches tok512.vocab piece by piece (text and score)', () => {
    const lines = readFileSync(path.join(dir, 'tok512.vocab'), 'utf8').split('\n').filter(Boolean);
    const vocab = parseSentencePieceVocab(bin, 'tok512.bin');
    expect(vocab.pieces.length).toBe(lines.length);
    lines.forEach((line, id) => {
      const [piece, score] = line.split('\t');
      expect(vocab.pieces[id]!.piece).toBe(piece);
      expect(vocab.pieces[id]!.score).toBe(Number(score));
    });
  });

  it('gives the token ids of reference_logits.json for the first line of tinystories_val.txt', () => {
    const reference = JSON.parse(readFileSync(path.join(dir, 'reference_logits.json'), 'utf8')) as {
      text: string;
      tokens: number[];
    };
    expect(tokenizer.encode(reference.text, { addBos: true })).toEqual(reference.tokens);
    expect(tokenizer.decode(reference.tokens)).toBe(reference.text);
  });

  it('encodes the first 200 non-empty lines of tinystories_val.txt exactly as llama2.c encode(), and back', () => {
    const text = readFileSync(path.join(assets, 'text/tinystories_val.txt'), 'utf8');
    const lines = text
      .split('\n')
      .filter((line) => line.length > 0)
      .slice(0, 200);
    expect(lines.length).toBe(200);
    expect(mismatches(tokenizer, bin, lines)).toEqual([]);
    for (const line of lines) expect(tokenizer.decode(tokenizer.encode(line))).toBe(line);
  });

  it('encodes WikiText lines (with literal "<unk>") as llama2.c does when not parsing special tokens', () => {
    const text = readFileSync(path.join(assets, 'text/wikitext2_test.tokens.txt'), 'utf8');
    const lines = text
      .split('\n')
      .filter((line) => line.includes('<unk>'))
      .slice(0, 40);
    expect(lines.length).toBe(40);
    expect(mismatches(tokenizer, bin, lines, false)).toEqual([]);
    // Parsed as specials (the Hugging Face default), "<unk>" becomes id 0 and no longer matches.
    expect(mismatches(tokenizer, bin, lines, true).length).toBe(40);
  });

  it('encodes 500 random unicode strings (byte fallback for emoji, CJK, accents) as llama2.c does', () => {
    const random = seededRandom(260);
    const words = [
      'the',
      'Once',
      'upon',
      'a',
      'time',
      'Lily',
      'happy',
      'ball',
      'said',
      'park',
      'Spot',
      "didn't",
    ];
    const texts = Array.from({ length: 500 }, () =>
      randomUnicodeText(random, words, 1 + Math.floor(random() * 80)),
    );
    expect(mismatches(tokenizer, bin, texts)).toEqual([]);
    for (const text of texts) expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });
});
