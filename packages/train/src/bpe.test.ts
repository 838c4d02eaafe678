import { buildLlamaTokenizerJson, tokenizerFromJson } from '@rrt/core';
import { describe, expect, it } from 'vitest';
import { learnBpeVocab } from './bpe.js';

const corpus = [
  'the cat sat on the mat. the cat ran.',
  'a dog sat on the log; the dog and the cat sat together.',
  'then the cat and the dog ran to the mat',
];

describe('learnBpeVocab', () => {
  it('learns a vocabulary of exactly the asked size that round-trips any text through tokenizer.json', () => {
    const vocab = learnBpeVocab(corpus, { vocabSize: 290, minCharacterCount: 1 });
    expect(vocab.pieces).toHaveLength(290);
    expect(learnBpeVocab(corpus, { vocabSize: 290, minCharacterCount: 1 })).toEqual(vocab);
    const tokenizer = tokenizerFromJson(buildLlamaTokenizerJson(vocab));
    const encode = (text: string) => tokenizer.encode(text, { addBos: false, parseSpecialTokens: false });
    // Frequent words become single pieces; unseen characters fall back to bytes.
    expect(encode('the cat').map((id) => tokenizer.idToToken(id))).toEqual(['▁the', '▁cat']);
    for (const text of ['the cat sat', 'Zebra ✓ ünïcode\nnew line', corpus[1]!]) {
      expect(tokenizer.decode(encode(text))).toBe(text);
    }
    expect(encode('the').every((id) => id < 290)).toBe(true);
  });

  it('stops early when no pair repeats', () => {
    const vocab = learnBpeVocab(['ab'], { vocabSize: 400, minCharacterCount: 1 });
    // 3 specials + 256 bytes + ▁, a, b: nothing occurs twice, so nothing merges.
    expect(vocab.pieces).toHaveLength(262);
  });
});
