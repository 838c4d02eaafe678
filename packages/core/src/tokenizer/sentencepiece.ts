/**
 * Readers of the two vocabulary formats a llama2.c model comes with: llama2.c's own `tokenizer.bin` and a
 * SentencePiece `tokenizer.model` (a protobuf, parsed here field by field; no protobuf dependency).
 * Both are read into one {@link SentencePieceVocab}, from which `buildLlamaTokenizerJson` writes the
 * Hugging Face `tokenizer.json`.
 *
 * @module
 */

import { TokenizerError } from '../errors.js';

/** What a piece is, as SentencePiece's `SentencePiece.Type` says. */
export type PieceType = 'normal' | 'unknown' | 'control' | 'user-defined' | 'unused' | 'byte';

/** One vocabulary entry: its text (SentencePiece form, spaces written `▁`), its score and its type. */
export interface VocabPiece {
  /** The piece text, with `▁` (U+2581) for a space, `<0x41>` for a byte piece. */
  piece: string;
  /** Its score: for a BPE vocabulary, higher merges first. */
  score: number;
  /** Its kind. */
  type: PieceType;
}

/** A SentencePiece-style BPE vocabulary, whichever file it came from. */
export interface SentencePieceVocab {
  /** The file format it was read from. */
  format: 'llama2c' | 'sentencepiece';
  /** The pieces, indexed by token id. */
  pieces: VocabPiece[];
  /** Id of the unknown piece. */
  unkId: number;
  /** Id of the beginning-of-sequence piece, or -1 when there is none. */
  bosId: number;
  /** Id of the end-of-sequence piece, or -1 when there is none. */
  eosId: number;
  /** Whether encoding prepends a space to the text (SentencePiece's `add_dummy_prefix`). */
  addDummyPrefix: boolean;
  /** Whether characters outside the vocabulary become byte pieces `<0x..>` rather than `<unk>`. */
  byteFallback: boolean;
}

/** The space marker SentencePiece writes in pieces. */
export const SPACE_MARKER = '\u2581';

const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;

/** The format of a tokenizer file, told from its content; `undefined` when it is none of these. */
export type TokenizerFileFormat = 'llama2c' | 'sentencepiece' | 'tokenizer-json';

/**
 * Tells a llama2.c `tokenizer.bin`, a SentencePiece `tokenizer.model` and an HF `tokenizer.json` apart by
 * their bytes (not their names: llama2.c ships `tok512.bin` next to `tok512.model`).
 */
export function detectTokenizerFormat(bytes: Uint8Array): TokenizerFileFormat | undefined {
  const firstNonSpace = bytes.find((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
  if (firstNonSpace === 0x7b /* { */) return 'tokenizer-json';
  if (looksLikeLlama2c(bytes)) return 'llama2c';
  // A ModelProto starts with field 1 (pieces), wire type 2: tag byte 0x0a.
  if (bytes[0] === 0x0a) return 'sentencepiece';
  return undefined;
}

/** Whether the bytes walk as a llama2.c tokenizer: records that end exactly at the end of the file. */
function looksLikeLlama2c(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) return false;
  let offset = 4;
  while (offset + 8 <= bytes.length) {
    const length = view.getInt32(offset + 4, true);
    if (length < 0 || length > maxTokenLength) return false;
    offset += 8 + length;
  }
  return offset === bytes.length;
}

/**
 * Reads a llama2.c `tokenizer.bin`: int32 `max_token_length`, then per token a float32 score, an int32
 * byte length and the UTF-8 bytes. llama2.c's exporter wrote spaces for SentencePiece's `▁` and
 * `"\n<s>\n"` / `"\n</s>\n"` for BOS / EOS; this undoes both, so the pieces are SentencePiece's again.
 *
 * @param bytes - the file's content.
 * @param file - its name, for error messages.
 * @throws {@link TokenizerError} when the records do not fit the file or a piece is not valid UTF-8.
 *
 * @example
 * ```ts
 * const vocab = parseLlama2cTokenizer(await readFile('tok512.bin'), 'tok512.bin');
 * vocab.pieces[259]; // { piece: '▁t', score: -0, type: 'normal' }
 * ```
 */
export function parseLlama2cTokenizer(bytes: Uint8Array, file: string): SentencePieceVocab {
  if (bytes.length < 4) throw new TokenizerError(file, `is ${bytes.length} bytes, too short for a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
    throw new TokenizerError(file, `max_token_length ${maxTokenLength} is not in [1, 65536]`);
  }
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const pieces: VocabPiece[] = [];
  let offset = 4;
  while (offset < bytes.length) {
    if (offset + 8 > bytes.length) {
      throw new TokenizerError(
        file,
        `token ${pieces.length} is cut off at byte ${offset} of ${bytes.length}`,
      );
    }
    const score = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    if (length < 0 || length > maxTokenLength || offset + 8 + length > bytes.length) {
      throw new TokenizerError(
        file,
        `token ${pieces.length} at byte ${offset} claims ${length} bytes (max_token_length ${maxTokenLength}, ` +
          `${bytes.length - offset - 8} left)`,
      );
    }
    let text: string;
    try {
      text = utf8.decode(bytes.subarray(offset + 8, offset + 8 + length));
    } catch {
      throw new TokenizerError(file, `token ${pieces.length} is not valid UTF-8`);
    }
    pieces.push(llama2cPiece(text, score));
    offset += 8 + length;
  }
  if (pieces.length === 0) throw new TokenizerError(file, 'holds no tokens');
  const ids = specialIds(pieces);
  return {
    format: 'llama2c',
    pieces,
    unkId: ids.unk ?? 0,
    bosId: ids.bos ?? -1,
    eosId: ids.eos ?? -1,
    // llama2.c's encode() always adds the dummy prefix.
    addDummyPrefix: true,
    byteFallback: countBytePieces(pieces) === 256,
  };
}

/** Turns one llama2.c token text back into its SentencePiece piece. */
function llama2cPiece(text: string, score: number): VocabPiece {
  if (text === '\n<s>\n' || text === '<s>') return { piece: '<s>', score, type: 'control' };
  if (text === '\n</s>\n' || text === '</s>') return { piece: '</s>', score, type: 'control' };
  if (text === '<unk>') return { piece: '<unk>', score, type: 'unknown' };
  if (BYTE_PIECE.test(text)) return { piece: text, score, type: 'byte' };
  return { piece: text.replaceAll(' ', SPACE_MARKER), score, type: 'normal' };
}

function specialIds(pieces: VocabPiece[]): { unk?: number; bos?: number; eos?: number } {
  const ids: { unk?: number; bos?: number; eos?: number } = {};
  pieces.forEach(({ piece, type }, id) => {
    if (type === 'unknown' && ids.unk === undefined) ids.unk = id;
    if (piece === '<s>' && ids.bos === undefined) ids.bos = id;
    if (piece === '</s>' && ids.eos === undefined) ids.eos = id;
  });
  return ids;
}

function countBytePieces(pieces: VocabPiece[]): number {
  return pieces.filter((p) => p.type === 'byte' && BYTE_PIECE.test(p.piece)).length;
}

// --- SentencePiece ModelProto -------------------------------------------------------------------------
// The fields read (sentencepiece_model.proto):
//   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//                    NormalizerSpec normalizer_spec = 3; }
//   SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
//   TrainerSpec    { ModelType model_type = 3 [default UNIGRAM]; bool treat_whitespace_as_suffix = 24;
//                    bool byte_fallback = 35; int32 unk_id = 40 [0]; bos_id = 41 [1]; eos_id = 42 [2]; }
//   NormalizerSpec { bool add_dummy_prefix = 3 [default true]; }

const PIECE_TYPES: Record<number, PieceType> = {
  1: 'normal',
  2: 'unknown',
  3: 'control',
  4: 'user-defined',
  5: 'unused',
  6: 'byte',
};

const MODEL_TYPES: Record<number, string> = { 1: 'UNIGRAM', 2: 'BPE', 3: 'WORD', 4: 'CHAR' };

/** A cursor over protobuf wire data. */
class ProtoReader {
  offset = 0;
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    private readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get done(): boolean {
    return this.offset >= this.bytes.length;
  }

  /** A varint, as a BigInt (int32 fields are sign-extended to 64 bits on the wire). */
  varint(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const byte = this.bytes[this.offset++];
      if (byte === undefined) this.fail('a varint runs past the end');
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
    }
    this.fail('a varint is longer than 10 bytes');
  }

  int32(): number {
    return Number(BigInt.asIntN(32, this.varint()));
  }

  float32(): number {
    this.need(4);
    const value = this.view.getFloat32(this.offset, true);
    this.offset += 4;
    return value;
  }

  lengthDelimited(): Uint8Array {
    const length = Number(this.varint());
    this.need(length);
    const slice = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return slice;
  }

  /** Skips a field of the given wire type. */
  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.need(8);
        this.offset += 8;
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.need(4);
        this.offset += 4;
        return;
      default:
        this.fail(`unsupported protobuf wire type ${wireType} at byte ${this.offset}`);
    }
  }

  /** The next field's number and wire type. */
  tag(): { field: number; wireType: number } {
    const key = Number(this.varint());
    return { field: key >>> 3, wireType: key & 7 };
  }

  private need(count: number): void {
    if (this.offset + count > this.bytes.length)
      this.fail(`a field runs past the end at byte ${this.offset}`);
  }

  fail(problem: string): never {
    throw new TokenizerError(this.file, `is not a SentencePiece model: ${problem}`);
  }
}

/**
 * Reads a SentencePiece `tokenizer.model` (a serialized `ModelProto`): its pieces with scores and types,
 * the special ids and byte fallback from its trainer spec, and `add_dummy_prefix` from its normalizer spec.
 * Only BPE models are accepted (the only kind llama2.c trains); a unigram model is a typed error.
 *
 * @param bytes - the file's content.
 * @param file - its name, for error messages.
 * @throws {@link TokenizerError} on malformed protobuf, a non-BPE model or whitespace-as-suffix.
 *
 * @example
 * ```ts
 * const vocab = parseSentencePieceModel(await readFile('tok512.model'), 'tok512.model');
 * vocab.pieces.length; // 512
 * ```
 */
export function parseSentencePieceModel(bytes: Uint8Array, file: string): SentencePieceVocab {
  const reader = new ProtoReader(bytes, file);
  const pieces: VocabPiece[] = [];
  const trainer = { modelType: 1, byteFallback: false, unkId: 0, bosId: 1, eosId: 2, suffix: false };
  let addDummyPrefix = true;
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    if (field === 1 && wireType === 2) {
      pieces.push(readPiece(new ProtoReader(reader.lengthDelimited(), file), utf8, pieces.length));
    } else if (field === 2 && wireType === 2) {
      readTrainerSpec(new ProtoReader(reader.lengthDelimited(), file), trainer);
    } else if (field === 3 && wireType === 2) {
      const spec = new ProtoReader(reader.lengthDelimited(), file);
      while (!spec.done) {
        const inner = spec.tag();
        if (inner.field === 3 && inner.wireType === 0) addDummyPrefix = spec.varint() !== 0n;
        else spec.skip(inner.wireType);
      }
    } else {
      reader.skip(wireType);
    }
  }
  if (pieces.length === 0) throw new TokenizerError(file, 'is not a SentencePiece model: it holds no pieces');
  if (trainer.modelType !== 2) {
    const kind = MODEL_TYPES[trainer.modelType] ?? `type ${trainer.modelType}`;
    throw new TokenizerError(file, `is a ${kind} SentencePiece model; only BPE models can be converted`);
  }
  if (trainer.suffix) {
    throw new TokenizerError(file, 'uses treat_whitespace_as_suffix, which cannot be converted');
  }
  const inRange = (id: number) => (id >= 0 && id < pieces.length ? id : -1);
  return {
    format: 'sentencepiece',
    pieces,
    unkId: inRange(trainer.unkId),
    bosId: inRange(trainer.bosId),
    eosId: inRange(trainer.eosId),
    addDummyPrefix,
    byteFallback: trainer.byteFallback,
  };
}

function readPiece(reader: ProtoReader, utf8: TextDecoder, id: number): VocabPiece {
  let piece: string | undefined;
  let score = 0;
  let type: PieceType = 'normal';
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    if (field === 1 && wireType === 2) {
      try {
        piece = utf8.decode(reader.lengthDelimited());
      } catch {
        reader.fail(`piece ${id} is not valid UTF-8`);
      }
    } else if (field === 2 && wireType === 5) {
      score = reader.float32();
    } else if (field === 3 && wireType === 0) {
      const code = reader.int32();
      const known = PIECE_TYPES[code];
      if (known === undefined) reader.fail(`piece ${id} has unknown type ${code}`);
      type = known;
    } else {
      reader.skip(wireType);
    }
  }
  if (piece === undefined) reader.fail(`piece ${id} has no text`);
  return { piece, score, type };
}

function readTrainerSpec(
  reader: ProtoReader,
  trainer: {
    modelType: number;
    byteFallback: boolean;
    unkId: number;
    bosId: number;
    eosId: number;
    suffix: boolean;
  },
): void {
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    if (wireType !== 0) {
      reader.skip(wireType);
      continue;
    }
    const value = reader.int32();
    if (field === 3) trainer.modelType = value;
    else if (field === 24) trainer.suffix = value !== 0;
    else if (field === 35) trainer.byteFallback = value !== 0;
    else if (field === 40) trainer.unkId = value;
    else if (field === 41) trainer.bosId = value;
    else if (field === 42) trainer.eosId = value;
  }
}

/**
 * Reads a llama2.c `tokenizer.bin` or a SentencePiece `tokenizer.model`, whichever the bytes are.
 *
 * @throws {@link TokenizerError} when the bytes are neither (an HF `tokenizer.json` is refused here:
 *   it needs no conversion).
 */
export function parseSentencePieceVocab(bytes: Uint8Array, file: string): SentencePieceVocab {
  const format = detectTokenizerFormat(bytes);
  if (format === 'llama2c') return parseLlama2cTokenizer(bytes, file);
  if (format === 'sentencepiece') return parseSentencePieceModel(bytes, file);
  if (format === 'tokenizer-json') {
    throw new TokenizerError(file, 'is a tokenizer.json already, not a llama2.c or SentencePiece vocabulary');
  }
  throw new TokenizerError(file, 'is neither a llama2.c tokenizer.bin nor a SentencePiece tokenizer.model');
}
