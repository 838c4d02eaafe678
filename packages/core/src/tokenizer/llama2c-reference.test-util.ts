/**
 * Test-only helpers: an independent transcription of llama2.c's tokenizer (`run.c`: file layout and
 * `encode()`), a tiny BPE trainer to make synthetic vocabularies, and a seeded PRNG. Nothing here uses the
 * code under test.
 *
 * @module
 */

/** One llama2.c vocabulary entry, as run.c holds it: raw token bytes (spaces, not `▁`) and a score. */
export interface Llama2cToken {
  text: string;
  score: number;
}

const utf8 = new TextEncoder();

/** Serializes a vocabulary in llama2.c's `tokenizer.bin` layout. */
export function writeLlama2cTokenizerBin(tokens: Llama2cToken[]): Uint8Array {
  const encoded = tokens.map((t) => utf8.encode(t.text));
  const maxLength = Math.max(...encoded.map((b) => b.length));
  const out = new Uint8Array(4 + encoded.reduce((n, b) => n + 8 + b.length, 0));
  const view = new DataView(out.buffer);
  view.setInt32(0, maxLength, true);
  let offset = 4;
  tokens.forEach((token, i) => {
    const bytes = encoded[i]!;
    view.setFloat32(offset, token.score, true);
    view.setInt32(offset + 4, bytes.length, true);
    out.set(bytes, offset + 8);
    offset += 8 + bytes.length;
  });
  return out;
}

/** A byte string (one char per byte, Latin-1) so that lookups compare bytes exactly as run.c's strcmp. */
const byteString = (bytes: Uint8Array): string => String.fromCharCode(...bytes);

/**
 * llama2.c's `encode()` from run.c, transcribed: read the vocabulary from the `tokenizer.bin` bytes; add
 * the dummy-prefix `" "` token when the text is non-empty; look each UTF-8 code point up, or emit its
 * bytes as ids `byte + 3`; then repeatedly merge the adjacent pair whose concatenation is in the vocabulary
 * with the best score (the first such pair on ties).
 */
export function llama2cEncode(tokenizerBin: Uint8Array, text: string, bos: boolean): number[] {
  const view = new DataView(tokenizerBin.buffer, tokenizerBin.byteOffset, tokenizerBin.byteLength);
  const vocab: string[] = [];
  const scores: number[] = [];
  for (let offset = 4; offset < tokenizerBin.length; ) {
    scores.push(view.getFloat32(offset, true));
    const length = view.getInt32(offset + 4, true);
    vocab.push(byteString(tokenizerBin.subarray(offset + 8, offset + 8 + length)));
    offset += 8 + length;
  }
  const lookup = new Map<string, number>();
  vocab.forEach((piece, id) => {
    if (!lookup.has(piece)) lookup.set(piece, id);
  });

  const tokens: number[] = [];
  if (bos) tokens.push(1);
  const bytes = utf8.encode(text);
  if (bytes.length > 0) tokens.push(lookup.get(' ')!);
  let buffer: number[] = [];
  for (let c = 0; c < bytes.length; c++) {
    const byte = bytes[c]!;
    if ((byte & 0xc0) !== 0x80) buffer = [];
    buffer.push(byte);
    const next = bytes[c + 1];
    if (next !== undefined && (next & 0xc0) === 0x80 && buffer.length < 4) continue;
    const id = lookup.get(String.fromCharCode(...buffer));
    if (id !== undefined) tokens.push(id);
    else for (const b of buffer) tokens.push(b + 3);
    buffer = [];
  }

  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIndex = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = lookup.get(vocab[tokens[i]!]! + vocab[tokens[i + 1]!]!);
      if (id !== undefined && scores[id]! > bestScore) {
        bestScore = scores[id]!;
        bestId = id;
        bestIndex = i;
      }
    }
    if (bestIndex === -1) break;
    tokens.splice(bestIndex, 2, bestId);
  }
  return tokens;
}

/**
 * Trains a small SentencePiece-style BPE vocabulary on `corpus` and lays it out as llama2.c does:
 * `<unk>`, BOS, EOS, 256 byte pieces, then the merges (score `-k` for the k-th), then the single characters
 * not yet in it (scores below every merge).
 */
export function trainTinyBpeVocab(corpus: string, mergeCount: number): Llama2cToken[] {
  // Words as SentencePiece sees them: each starts with its space.
  const words = new Map<string, number>();
  for (const word of (' ' + corpus.replaceAll(/\s+/g, ' ').trim()).match(/ [^ ]*/g) ?? []) {
    words.set(word, (words.get(word) ?? 0) + 1);
  }
  let split = [...words].map(([word, count]) => ({ symbols: Array.from(word), count }));
  const merges: string[] = [];
  for (let k = 0; k < mergeCount; k++) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of split) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = JSON.stringify([symbols[i], symbols[i + 1]]);
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, count] of pairs) {
      const merged = (JSON.parse(key) as string[]).join('');
      if (merges.includes(merged)) continue;
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break;
    const [left, right] = JSON.parse(best) as [string, string];
    merges.push(left + right);
    split = split.map(({ symbols, count }) => {
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) {
          out.push(left + right);
          i++;
        } else out.push(symbols[i]!);
      }
      return { symbols: out, count };
    });
  }
  const chars = [...new Set(Array.from(corpus.replaceAll(/\s+/g, ' ')))].sort();
  const tokens: Llama2cToken[] = [
    { text: '<unk>', score: 0 },
    { text: '\n<s>\n', score: 0 },
    { text: '\n</s>\n', score: 0 },
  ];
  for (let b = 0; b < 256; b++) {
    tokens.push({ text: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0 });
  }
  for (const [k, text] of merges.entries()) tokens.push({ text, score: -k });
  for (const [i, text] of chars.filter((c) => !merges.includes(c)).entries()) {
    tokens.push({ text, score: -(merges.length + i) });
  }
  return tokens;
}

// The seeded stream of core's samplers (mulberry32), so failures reproduce from their seed.
export { seededRandom } from '../generate/sampling.js';

/**
 * A random string mixing words of `words`, runs of spaces, punctuation, accented Latin, CJK, emoji (astral
 * code points, 4 UTF-8 bytes), newlines and tabs: the characters outside a small vocabulary exercise byte
 * fallback. Never contains NUL (run.c's strings end there) nor `<s>`-like special-token text.
 */
export function randomUnicodeText(random: () => number, words: string[], length: number): string {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const ranges: [number, number][] = [
    [0x21, 0x7e], // ASCII printable
    [0xc0, 0x17f], // Latin-1 supplement and Latin extended-A
    [0x391, 0x3c9], // Greek
    [0x4e00, 0x4fff], // CJK
    [0x1f600, 0x1f64f], // emoji
    [0x1f300, 0x1f5ff], // pictographs
  ];
  let text = '';
  while (Array.from(text).length < length) {
    const r = random();
    if (r < 0.35) text += pick(words);
    else if (r < 0.55) text += ' '.repeat(1 + Math.floor(random() * 3));
    else if (r < 0.6) text += pick(['\n', '\t', '.', ',', '!', '"', "'"]);
    else {
      const [lo, hi] = pick(ranges);
      text += String.fromCodePoint(lo + Math.floor(random() * (hi - lo + 1)));
    }
  }
  return text.replaceAll('<', '(');
}
