/**
 * Tokenizers: Hugging Face `tokenizer.json` through `@huggingface/tokenizers`, a streaming detokenizer,
 * and the conversion of llama2.c / SentencePiece vocabularies into `tokenizer.json`.
 *
 * @module
 */

export { type DecodeStream, type DecodeStreamSource, WindowedDecodeStream } from './decode-stream.js';
export { TokenizerError } from '../errors.js';
export {
  type AddedTokenJson,
  buildLlamaTokenizerConfig,
  buildLlamaTokenizerJson,
  type LlamaTokenizerJson,
  sentencePieceMerges,
} from './llama-tokenizer-json.js';
export { loadTokenizer } from './load.js';
export {
  detectTokenizerFormat,
  type PieceType,
  parseLlama2cTokenizer,
  parseSentencePieceModel,
  parseSentencePieceVocab,
  SPACE_MARKER,
  type SentencePieceVocab,
  type TokenizerFileFormat,
  type VocabPiece,
} from './sentencepiece.js';
export {
  type DecodeOptions,
  type EncodeOptions,
  type Tokenizer,
  type TokenizerFromJsonOptions,
  type TokenizerSidecars,
  tokenizerFromJson,
} from './tokenizer.js';
