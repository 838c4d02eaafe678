/**
 * Learning a small SentencePiece-style BPE vocabulary from a corpus, for a model pretrained from
 * scratch. The result is a core `SentencePieceVocab`, which core's `buildLlamaTokenizerJson` writes as a
 * Hugging Face `tokenizer.json` (byte fallback, `▁` for spaces, merges ranked by score).
 *
 * @module
 */
import { SPACE_MARKER, type SentencePieceVocab, type VocabPiece } from '@rrt/core';
import { TrainOptionError } from './errors.js';

/** Options of {@link learnBpeVocab}. */
export interface BpeOptions {
  /** Total ids: 3 specials (`<unk>`, `<s>`, `</s>`) + 256 byte pieces + characters + merges. */
  vocabSize: number;
  /** Characters seen fewer times than this are left to byte fallback; default 10. */
  minCharacterCount?: number;
}

/**
 * Learns BPE merges over the "words" that SentencePiece's normalisation gives (`▁` + text with spaces as
 * `▁`, cut before every `▁` and at newlines, which byte fallback encodes), most frequent pair first,
 * ties broken by the pair's text so that the result depends on the corpus alone. Merged pieces score
 * `−(merge index)`, characters below every merge.
 */
export function learnBpeVocab(texts: readonly string[], options: BpeOptions): SentencePieceVocab {
  const specials: VocabPiece[] = [
    { piece: '<unk>', score: 0, type: 'unknown' },
    { piece: '<s>', score: 0, type: 'control' },
    { piece: '</s>', score: 0, type: 'control' },
  ];
  const bytes: VocabPiece[] = Array.from({ length: 256 }, (_, b) => ({
    piece: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`,
    score: 0,
    type: 'byte' as const,
  }));
  const budget = options.vocabSize - specials.length - bytes.length;
  if (!Number.isInteger(options.vocabSize) || budget < 1) {
    throw new TrainOptionError(
      'vocabSize',
      `an integer > ${specials.length + bytes.length}`,
      options.vocabSize,
    );
  }
  // Word counts.
  const wordCounts = new Map<string, number>();
  for (const text of texts) {
    const normalized = SPACE_MARKER + text.replaceAll(' ', SPACE_MARKER);
    for (const line of normalized.split('\n')) {
      for (const word of line.split(new RegExp(`(?=${SPACE_MARKER})`, 'u'))) {
        if (word.length > 0) wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
      }
    }
  }
  // The character alphabet, most frequent first, within the budget.
  const charCounts = new Map<string, number>();
  for (const [word, count] of wordCounts)
    for (const char of word) charCounts.set(char, (charCounts.get(char) ?? 0) + count);
  const minCount = options.minCharacterCount ?? 10;
  const alphabet = [...charCounts]
    .filter(([, count]) => count >= minCount)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, budget)
    .map(([char]) => char);
  const symbols: string[] = [...alphabet];
  const symbolId = new Map(alphabet.map((char, id) => [char, id]));
  // Each word as symbol ids; -1 marks a character left to byte fallback (it never merges).
  const words = [...wordCounts].map(([word, count]) => ({
    ids: Array.from(word, (char) => symbolId.get(char) ?? -1),
    count,
  }));
  const merged: string[] = [];
  while (symbols.length < budget) {
    const pairCounts = new Map<number, number>();
    const width = 1 << 16;
    for (const { ids, count } of words) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const left = ids[i]!;
        const right = ids[i + 1]!;
        if (left < 0 || right < 0) continue;
        const key = left * width + right;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best = -1;
    let bestCount = 0;
    let bestText = '';
    for (const [key, count] of pairCounts) {
      if (count < bestCount) continue;
      const text = symbols[Math.floor(key / width)]! + symbols[key % width]!;
      if (count > bestCount || text < bestText) {
        best = key;
        bestCount = count;
        bestText = text;
      }
    }
    if (best < 0 || bestCount < 2) break;
    const left = Math.floor(best / width);
    const right = best % width;
    const id = symbols.length;
    symbols.push(bestText);
    merged.push(bestText);
    for (const word of words) {
      const { ids } = word;
      let changed = false;
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === left && ids[i + 1] === right) {
          next.push(id);
          i++;
          changed = true;
        } else next.push(ids[i]!);
      }
      if (changed) word.ids = next;
    }
  }
  const pieces: VocabPiece[] = [
    ...specials,
    ...bytes,
    ...merged.map((piece, index) => ({ piece, score: -index, type: 'normal' as const })),
    ...alphabet.map((piece, index) => ({ piece, score: -(merged.length + index), type: 'normal' as const })),
  ];
  return {
    format: 'sentencepiece',
    pieces,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    addDummyPrefix: true,
    byteFallback: true,
  };
}
