import { describe, expect, it } from 'vitest';
import { TokenizerError } from '../errors.js';
import { buildLlamaTokenizerJson } from './llama-tokenizer-json.js';
import { writeLlama2cTokenizerBin } from './llama2c-reference.test-util.js';
import { detectTokenizerFormat, parseLlama2cTokenizer, parseSentencePieceModel } from './sentencepiece.js';
import { tokenizerFromJson } from './tokenizer.js';

// A minimal protobuf writer, independent of the reader under test.
const varint = (value: bigint): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? byte | 0x80 : byte);
  } while (v > 0n);
  return out;
};
const tag = (field: number, wireType: number) => varint(BigInt((field << 3) | wireType));
const bytesField = (field: number, bytes: number[]) => [
  ...tag(field, 2),
  ...varint(BigInt(bytes.length)),
  ...bytes,
];
const intField = (field: number, value: number) => [...tag(field, 0), ...varint(BigInt(value))];
const floatField = (field: number, value: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, value, true);
  return [...tag(field, 5), ...b];
};
const typeCodes = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;
const piece = (text: string, score: number, type: keyof typeof typeCodes) =>
  bytesField(1, [
    ...bytesField(1, [...new TextEncoder().encode(text)]),
    ...floatField(2, score),
    ...intField(3, typeCodes[type]),
  ]);

/**
 * A SentencePiece ModelProto: <unk>, <s>, </s>, 256 bytes, then the merges 259 ▁S, 260 ot, 261 ▁Sp,
 * 262 ▁Spot and the characters 263 ▁, 264 S, 265 p, 266 o, 267 t.
 */
function modelProto(
  options: { modelType?: number; addDummyPrefix?: boolean; extra?: number[] } = {},
): Uint8Array {
  const out: number[] = [
    ...piece('<unk>', 0, 'unknown'),
    ...piece('<s>', 0, 'control'),
    ...piece('</s>', 0, 'control'),
  ];
  for (let b = 0; b < 256; b++)
    out.push(...piece(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0, 'byte'));
  const merges = ['\u2581S', 'ot', '\u2581Sp', '\u2581Spot'];
  merges.forEach((m, k) => {
    out.push(...piece(m, -k, 'normal'));
  });
  ['\u2581', 'S', 'p', 'o', 't'].forEach((c, i) => {
    out.push(...piece(c, -(merges.length + i), 'normal'));
  });
  // TrainerSpec: model_type, byte_fallback, unk/bos/eos, and pad_id = -1 (a 10-byte varint on the wire).
  const trainer = [
    ...intField(3, options.modelType ?? 2),
    ...intField(35, 1),
    ...intField(40, 0),
    ...intField(41, 1),
    ...intField(42, 2),
    ...intField(43, -1),
    ...bytesField(2, [0x61]), // model_prefix, skipped
  ];
  out.push(...bytesField(2, trainer));
  out.push(
    ...bytesField(3, [...bytesField(1, [0x69]), ...intField(3, options.addDummyPrefix === false ? 0 : 1)]),
  );
  out.push(...(options.extra ?? []));
  return Uint8Array.from(out);
}

describe('parseSentencePieceModel', () => {
  it('reads pieces, scores, types, special ids and byte fallback', () => {
    const bytes = modelProto({ extra: [...tag(9, 1), 1, 2, 3, 4, 5, 6, 7, 8] });
    expect(detectTokenizerFormat(bytes)).toBe('sentencepiece');
    const vocab = parseSentencePieceModel(bytes, 'm.model');
    expect(vocab.pieces.length).toBe(259 + 9);
    expect(vocab.pieces[259]).toEqual({ piece: '\u2581S', score: -0, type: 'normal' });
    expect(vocab.pieces[1]).toEqual({ piece: '<s>', score: 0, type: 'control' });
    expect(vocab.pieces[3]!.type).toBe('byte');
    expect([vocab.unkId, vocab.bosId, vocab.eosId, vocab.byteFallback, vocab.addDummyPrefix]).toEqual([
      0,
      1,
      2,
      true,
      true,
    ]);
    const tokenizer = tokenizerFromJson(buildLlamaTokenizerJson(vocab));
    expect(tokenizer.encode('Spot', { addBos: true })).toEqual([1, 262]);
    expect(tokenizer.encode('tops', { addBos: false })).toEqual([263, 267, 266, 265, 3 + 0x73]);
  });

  it('honours add_dummy_prefix = false', () => {
    const vocab = parseSentencePieceModel(modelProto({ addDummyPrefix: false }), 'm.model');
    expect(vocab.addDummyPrefix).toBe(false);
    const tokenizer = tokenizerFromJson(buildLlamaTokenizerJson(vocab));
    // S p o t: only 'ot' merges without the leading ▁ (ids: 260 ot, 264 S, 265 p).
    expect(tokenizer.encode('Spot', { addBos: false })).toEqual([264, 265, 260]);
    expect(tokenizer.encode(' Spot', { addBos: false })).toEqual([262]);
    expect(tokenizer.decode([262])).toBe(' Spot');
  });

  it('refuses a unigram model, and malformed protobuf, with a TokenizerError naming the file', () => {
    expect(() => parseSentencePieceModel(modelProto({ modelType: 1 }), 'uni.model')).toThrow(
      /uni.model: is a UNIGRAM SentencePiece model/,
    );
    const whole = modelProto();
    expect(() => parseSentencePieceModel(whole.subarray(0, whole.length - 3), 'cut.model')).toThrow(
      TokenizerError,
    );
    expect(() => parseSentencePieceModel(Uint8Array.from([0x0a, 0x05, 0x0a]), 'cut.model')).toThrow(
      /cut.model: is not a SentencePiece model/,
    );
    expect(() => parseSentencePieceModel(Uint8Array.from([0x0b]), 'bad.model')).toThrow(/wire type 3/);
  });
});

describe('parseLlama2cTokenizer', () => {
  const bin = writeLlama2cTokenizerBin([
    { text: '<unk>', score: 0 },
    { text: '\n<s>\n', score: 0 },
    { text: '\n</s>\n', score: 0 },
    { text: ' a', score: -1 },
    { text: 'b', score: -2 },
  ]);

  it('undoes the exporter: spaces back to ▁, BOS / EOS back to <s> / </s>', () => {
    expect(detectTokenizerFormat(bin)).toBe('llama2c');
    const vocab = parseLlama2cTokenizer(bin, 't.bin');
    expect(vocab.pieces.map((p) => p.piece)).toEqual(['<unk>', '<s>', '</s>', '\u2581a', 'b']);
    expect(vocab.pieces.map((p) => p.type)).toEqual(['unknown', 'control', 'control', 'normal', 'normal']);
    expect(vocab.byteFallback).toBe(false);
  });

  it('refuses a truncated file with a TokenizerError naming the file and the token', () => {
    expect(() => parseLlama2cTokenizer(bin.subarray(0, bin.length - 1), 't.bin')).toThrow(
      /t.bin: token 4 at byte/,
    );
    expect(() => parseLlama2cTokenizer(bin.subarray(0, 2), 't.bin')).toThrow(TokenizerError);
    expect(detectTokenizerFormat(bin.subarray(0, bin.length - 1))).toBeUndefined();
  });
});
