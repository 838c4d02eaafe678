/**
 * Writes a SentencePiece BPE vocabulary as a Hugging Face `tokenizer.json`, the way transformers'
 * `LlamaConverter` does for Llama 1/2 (the "legacy" layout): a BPE model with byte fallback and merges
 * derived from the piece scores, a normalizer that prepends `▁` and writes spaces as `▁`, and a decoder
 * that undoes both.
 *
 * @module
 */

import { SPACE_MARKER, type SentencePieceVocab } from './sentencepiece.js';

/** One entry of `tokenizer.json`'s `added_tokens`. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The `tokenizer.json` this module writes (a subset of what the format allows). */
export interface LlamaTokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: AddedTokenJson[];
  normalizer: unknown;
  pre_tokenizer: null;
  post_processor: unknown;
  decoder: unknown;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: string | null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: [string, string][];
  };
}

/**
 * The BPE merges that reproduce SentencePiece's (and llama2.c's) encoder: every split of a normal piece
 * into two normal pieces is a merge, ranked by the merged piece's score, best first. This is transformers'
 * `SentencePieceExtractor`: merges sorted by score (stably), ties among splits of one piece by the ids of
 * the left then the right part.
 *
 * NOTE: SentencePiece and llama2.c pick, at each step, the adjacent pair whose concatenation scores best,
 * leftmost on ties. A rank per merge gives the same result whenever scores are distinct per piece (true of
 * every BPE model SentencePiece trains: a piece's score is minus its merge order), except in one corner:
 * two different splits of the same piece overlapping in the text (`ab|a` and `a|ba` in `a b a`), where the
 * rank decides instead of the position. Hugging Face's Llama tokenizer has the same corner.
 */
export function sentencePieceMerges(vocab: SentencePieceVocab): [string, string][] {
  const normalIds = new Map<string, number>();
  vocab.pieces.forEach(({ piece, type }, id) => {
    if (type === 'normal' && !normalIds.has(piece)) normalIds.set(piece, id);
  });
  const merges: {
    left: string;
    right: string;
    score: number;
    mergedId: number;
    leftId: number;
    rightId: number;
  }[] = [];
  for (const [piece, mergedId] of normalIds) {
    // Split on code points: HF's BPE starts from code points, as does SentencePiece.
    const chars = Array.from(piece);
    for (let cut = 1; cut < chars.length; cut++) {
      const left = chars.slice(0, cut).join('');
      const right = chars.slice(cut).join('');
      const leftId = normalIds.get(left);
      const rightId = normalIds.get(right);
      if (leftId === undefined || rightId === undefined) continue;
      merges.push({ left, right, score: vocab.pieces[mergedId]!.score, mergedId, leftId, rightId });
    }
  }
  merges.sort(
    (a, b) => b.score - a.score || a.mergedId - b.mergedId || a.leftId - b.leftId || a.rightId - b.rightId,
  );
  return merges.map(({ left, right }) => [left, right]);
}

/**
 * Builds the Hugging Face `tokenizer.json` of a SentencePiece BPE vocabulary (from llama2.c's
 * `tokenizer.bin` or a SentencePiece `tokenizer.model`). Encoding it with any HF-compatible tokenizer
 * (`@huggingface/tokenizers`, the Rust `tokenizers`) gives the ids llama2.c's `encode()` gives.
 *
 * @example
 * ```ts
 * const vocab = parseSentencePieceVocab(await readFile('tok512.bin'), 'tok512.bin');
 * await writeFile('tokenizer.json', JSON.stringify(buildLlamaTokenizerJson(vocab)));
 * ```
 */
export function buildLlamaTokenizerJson(vocab: SentencePieceVocab): LlamaTokenizerJson {
  const vocabMap: Record<string, number> = {};
  const addedTokens: AddedTokenJson[] = [];
  vocab.pieces.forEach(({ piece, type }, id) => {
    if (!Object.hasOwn(vocabMap, piece)) vocabMap[piece] = id;
    const special = type === 'unknown' || type === 'control';
    if (special || type === 'user-defined') {
      addedTokens.push({
        id,
        content: piece,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special,
      });
    }
  });
  const unk = vocab.pieces[vocab.unkId]?.piece ?? null;
  const bos = vocab.pieces[vocab.bosId]?.piece;
  const replaceSpaces = { type: 'Replace', pattern: { String: ' ' }, content: SPACE_MARKER };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: vocab.addDummyPrefix
      ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SPACE_MARKER }, replaceSpaces] }
      : replaceSpaces,
    pre_tokenizer: null,
    post_processor: bos === undefined ? null : bosTemplate(bos, vocab.bosId),
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE_MARKER }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(vocab.addDummyPrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: vocab.byteFallback,
      ignore_merges: false,
      vocab: vocabMap,
      merges: sentencePieceMerges(vocab),
    },
  };
}

/** The post-processor that puts BOS before a sequence (Llama's `add_bos_token: true`). */
function bosTemplate(bos: string, bosId: number): unknown {
  const special = (typeId: number) => ({ SpecialToken: { id: bos, type_id: typeId } });
  return {
    type: 'TemplateProcessing',
    single: [special(0), { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      special(0),
      { Sequence: { id: 'A', type_id: 0 } },
      special(1),
      { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

/**
 * The `tokenizer_config.json` that goes with {@link buildLlamaTokenizerJson}'s output, so Python
 * transformers loads it as a Llama tokenizer with the same behaviour (BOS added, no space clean-up).
 */
export function buildLlamaTokenizerConfig(
  vocab: SentencePieceVocab,
  modelMaxLength: number,
): Record<string, unknown> {
  const piece = (id: number) => vocab.pieces[id]?.piece ?? null;
  return {
    tokenizer_class: 'LlamaTokenizerFast',
    add_bos_token: vocab.bosId >= 0,
    add_eos_token: false,
    bos_token: piece(vocab.bosId),
    eos_token: piece(vocab.eosId),
    unk_token: piece(vocab.unkId),
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: modelMaxLength,
  };
}
