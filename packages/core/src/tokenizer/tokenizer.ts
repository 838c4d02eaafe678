/**
 * rrt's tokenizer: a Hugging Face `tokenizer.json` run by `@huggingface/tokenizers` (pure JS, so the same
 * code runs in Node and the browser), with the BOS / EOS ids the model's other JSON files declare and a
 * streaming detokenizer for generation.
 *
 * @module
 */

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { type DecodeStream, WindowedDecodeStream } from './decode-stream.js';
import { TokenizerError } from '../errors.js';

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Put the BOS id first. Default: what the tokenizer itself does (`add_bos_token` of
   * `tokenizer_config.json`, else whether `tokenizer.json`'s post-processor adds BOS). `true` on a
   * tokenizer without a BOS token is a {@link TokenizerError}.
   */
  addBos?: boolean;
  /**
   * Read special-token text in the input (`"<s>"`, `"<|im_start|>"`) as those tokens, as Hugging Face
   * does. Default `true`. `false` encodes it as plain text, as SentencePiece and llama2.c do: use it for
   * raw corpora (WikiText's literal `"<unk>"`) and to reproduce llama2.c's ids exactly.
   */
  parseSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode} and {@link Tokenizer.createDecodeStream}. */
export interface DecodeOptions {
  /** Leave special tokens (BOS, EOS, `<unk>`, ...) out of the text. Default `true`. */
  skipSpecialTokens?: boolean;
}

/** Turns text into token ids and back. */
export interface Tokenizer {
  /** Where it was loaded from (a directory or file), for messages. */
  readonly source: string;
  /** Number of ids, added tokens included: every id is in `[0, vocabSize)`. */
  readonly vocabSize: number;
  /** The beginning-of-sequence id, when the model has one. */
  readonly bosId: number | undefined;
  /** The end-of-sequence id (the first, when several stop generation), when the model has one. */
  readonly eosId: number | undefined;
  /** Every id that ends generation (Llama 3 has two, for instance); empty when none is known. */
  readonly eosIds: readonly number[];
  /** Whether {@link Tokenizer.encode} puts BOS first when not told. */
  readonly addsBosByDefault: boolean;
  /** Encodes text to ids. The empty string encodes to no ids (plus BOS when asked). */
  encode(text: string, options?: EncodeOptions): number[];
  /** Decodes ids to text. @throws {@link TokenizerError} on an id outside the vocabulary. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** Starts an incremental detokenizer, for printing generated tokens as they come. */
  createDecodeStream(options?: DecodeOptions): DecodeStream;
  /** The token string of an id (`'▁the'`, `'<0x0A>'`, `'<s>'`), or `undefined` outside the vocabulary. */
  idToToken(id: number): string | undefined;
  /** The id of a token string, or `undefined`. */
  tokenToId(token: string): number | undefined;
  /** Whether an id is a special token (left out by `skipSpecialTokens`). */
  isSpecial(id: number): boolean;
}

/** The JSON files beside `tokenizer.json` that say which ids are BOS and EOS (each optional). */
export interface TokenizerSidecars {
  /** `tokenizer_config.json`: `bos_token`, `eos_token`, `add_bos_token`, `clean_up_tokenization_spaces`. */
  tokenizerConfig?: unknown;
  /** `generation_config.json`: `bos_token_id`, `eos_token_id` (a number or a list). */
  generationConfig?: unknown;
  /** The model's `config.json`: `bos_token_id`, `eos_token_id`. */
  modelConfig?: unknown;
}

/** Options of {@link tokenizerFromJson}. */
export interface TokenizerFromJsonOptions extends TokenizerSidecars {
  /** The directory (or URL) the files came from; error messages name `<source>/tokenizer.json` etc. */
  source?: string;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Builds a tokenizer from the parsed content of `tokenizer.json` (and, optionally, its sidecar files).
 * Works anywhere, the browser included; {@link loadTokenizer} is the Node front end that reads a directory.
 *
 * BOS / EOS ids are taken from `generation_config.json`, then `config.json`, then the token strings of
 * `tokenizer_config.json`; failing all three, from well-known special tokens (`<s>`/`</s>`, `<bos>`/`<eos>`,
 * `<|endoftext|>`) when `tokenizer.json` has them as special added tokens.
 *
 * @throws {@link TokenizerError} naming the file when one is malformed or names an id outside the vocabulary.
 *
 * @example
 * ```ts
 * const json = await (await fetch('/model/tokenizer.json')).json();
 * const tokenizer = tokenizerFromJson(json, { source: '/model' });
 * tokenizer.encode('Once upon a time', { addBos: true }); // [1, 403, 407, 261, 378]
 * ```
 */
export function tokenizerFromJson(tokenizerJson: unknown, options: TokenizerFromJsonOptions = {}): Tokenizer {
  return new HfBackedTokenizer(tokenizerJson, options);
}

/** A {@link Tokenizer} over `@huggingface/tokenizers`. */
class HfBackedTokenizer implements Tokenizer {
  readonly source: string;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly eosIds: readonly number[];
  readonly addsBosByDefault: boolean;
  private readonly hf: HfTokenizer;
  private readonly specialIds: ReadonlySet<number>;
  private readonly vocab: ReadonlyMap<string, number>;
  private readonly tokenizerFile: string;

  constructor(tokenizerJson: unknown, options: TokenizerFromJsonOptions) {
    this.source = options.source ?? '.';
    const fileOf = (name: string) => (options.source === undefined ? name : `${options.source}/${name}`);
    this.tokenizerFile = fileOf('tokenizer.json');
    const json = validateTokenizerJson(tokenizerJson, this.tokenizerFile);
    const tokenizerConfig = sidecar(options.tokenizerConfig, fileOf('tokenizer_config.json'));
    const generationConfig = sidecar(options.generationConfig, fileOf('generation_config.json'));
    const modelConfig = sidecar(options.modelConfig, fileOf('config.json'));

    try {
      this.hf = new HfTokenizer(json, {
        ...tokenizerConfig,
        // Decoding must reproduce the text: the HF default of cleaning up " ." and " 's" must be asked for.
        clean_up_tokenization_spaces: tokenizerConfig['clean_up_tokenization_spaces'] === true,
      });
    } catch (error) {
      throw new TokenizerError(this.tokenizerFile, `could not be loaded: ${(error as Error).message}`);
    }
    this.vocab = this.hf.get_vocab(true);
    this.vocabSize = Math.max(-1, ...this.vocab.values()) + 1;
    this.specialIds = new Set(
      [...this.hf.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id),
    );

    const ids = new IdResolver(this);
    this.bosId =
      ids.fromNumber(generationConfig, 'bos_token_id', fileOf('generation_config.json'))[0] ??
      ids.fromNumber(modelConfig, 'bos_token_id', fileOf('config.json'))[0] ??
      ids.fromTokenString(tokenizerConfig, 'bos_token', fileOf('tokenizer_config.json')) ??
      ids.wellKnown(['<s>', '<bos>', '<|begin_of_text|>']);
    const eosIds = [
      ids.fromNumber(generationConfig, 'eos_token_id', fileOf('generation_config.json')),
      ids.fromNumber(modelConfig, 'eos_token_id', fileOf('config.json')),
    ].find((list) => list.length > 0);
    const eosFallback =
      ids.fromTokenString(tokenizerConfig, 'eos_token', fileOf('tokenizer_config.json')) ??
      ids.wellKnown(['</s>', '<eos>', '<|endoftext|>', '<|end_of_text|>']);
    this.eosIds = eosIds ?? (eosFallback === undefined ? [] : [eosFallback]);
    this.eosId = this.eosIds[0];

    const addBosToken = tokenizerConfig['add_bos_token'];
    this.addsBosByDefault =
      typeof addBosToken === 'boolean'
        ? addBosToken
        : this.bosId !== undefined && templateAddsToken(json['post_processor'], this.idToToken(this.bosId));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addBos = options.addBos ?? this.addsBosByDefault;
    if (addBos && this.bosId === undefined) {
      throw new TokenizerError(this.tokenizerFile, 'has no BOS token, but encode() was asked to add one');
    }
    // NOTE: an empty text encodes to nothing, as in SentencePiece and llama2.c; tokenizers.js would
    // otherwise apply the Prepend normalizer to it and return a lone '▁'.
    let ids: number[] = [];
    if (text.length > 0) {
      ids =
        options.parseSpecialTokens === false
          ? this.encodeLiterally(text)
          : this.hf.encode(text, { add_special_tokens: false }).ids;
    }
    return addBos ? [this.bosId!, ...ids] : ids;
  }

  /**
   * Encodes without looking for added tokens in the text: tokenizers.js's own pipeline (normalizer,
   * pre-tokenizer, model) minus its added-token splitter, which has no switch to turn it off.
   * NOTE: `remove_space` / `do_lowercase_and_remove_accent` of `tokenizer_config.json` (XLM-era flags)
   * are not applied on this path.
   */
  private encodeLiterally(text: string): number[] {
    const { normalizer, pre_tokenizer: preTokenizer, model } = this.hf;
    if (model === null) throw new TokenizerError(this.tokenizerFile, 'has no model');
    const normalized = normalizer === null ? text : normalizer(text);
    if (normalized.length === 0) return [];
    const words = preTokenizer === null ? [normalized] : preTokenizer(normalized, { section_index: 0 });
    return model(words).map((token) => {
      const id = model.tokens_to_ids.get(token) ?? model.unk_token_id;
      if (id === undefined) {
        throw new TokenizerError(
          this.tokenizerFile,
          `cannot encode ${JSON.stringify(token)}: no such token, no <unk>`,
        );
      }
      return id;
    });
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  createDecodeStream(options: DecodeOptions = {}): DecodeStream {
    const skipSpecial = options.skipSpecialTokens ?? true;
    return new WindowedDecodeStream({
      decode: (ids) => this.decode(ids, { skipSpecialTokens: false }),
      skip: (id) => {
        this.checkId(id);
        return skipSpecial && this.specialIds.has(id);
      },
    });
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.hf.id_to_token(id) : undefined;
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new TokenizerError(
        this.tokenizerFile,
        `token id ${id} is outside the vocabulary [0, ${this.vocabSize})`,
      );
    }
  }
}

/** Finds BOS / EOS ids in the sidecar files, checking each against the vocabulary. */
class IdResolver {
  constructor(private readonly tokenizer: HfBackedTokenizer) {}

  /** `field` as a number or a list of numbers; `[]` when absent or null. */
  fromNumber(json: Json, field: string, file: string): number[] {
    const value = json[field];
    if (value === undefined || value === null) return [];
    const list = Array.isArray(value) ? value : [value];
    for (const id of list) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= this.tokenizer.vocabSize) {
        throw new TokenizerError(
          file,
          `${field} ${JSON.stringify(value)} must be an id (or ids) in [0, ${this.tokenizer.vocabSize})`,
        );
      }
    }
    return list as number[];
  }

  /** `field` as a token string or an `{ content }` object, looked up in the vocabulary. */
  fromTokenString(json: Json, field: string, file: string): number | undefined {
    const value = json[field];
    const token = isObject(value) ? value['content'] : value;
    if (token === undefined || token === null) return undefined;
    if (typeof token !== 'string') throw new TokenizerError(file, `${field} must be a token string`);
    const id = this.tokenizer.tokenToId(token);
    if (id === undefined)
      throw new TokenizerError(file, `${field} ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }

  /** The first of `tokens` that is a special token of the vocabulary. */
  wellKnown(tokens: string[]): number | undefined {
    for (const token of tokens) {
      const id = this.tokenizer.tokenToId(token);
      if (id !== undefined && this.tokenizer.isSpecial(id)) return id;
    }
    return undefined;
  }
}

/** Checks the parts of `tokenizer.json` that tokenizers.js would otherwise fail on obscurely. */
function validateTokenizerJson(value: unknown, file: string): Json {
  if (!isObject(value)) throw new TokenizerError(file, 'must hold a JSON object');
  const model = value['model'];
  if (!isObject(model)) throw new TokenizerError(file, 'has no "model" object');
  const addedTokens = value['added_tokens'] ?? [];
  if (!Array.isArray(addedTokens)) throw new TokenizerError(file, '"added_tokens" must be a list');
  addedTokens.forEach((token, index) => {
    if (!isObject(token) || typeof token['content'] !== 'string' || !Number.isInteger(token['id'])) {
      throw new TokenizerError(
        file,
        `added_tokens[${index}] must have a string "content" and an integer "id"`,
      );
    }
  });
  const vocab = model['vocab'];
  if (vocab === undefined) throw new TokenizerError(file, 'model has no "vocab"');
  if (model['type'] === 'BPE') {
    if (!isObject(vocab)) throw new TokenizerError(file, 'model.vocab of a BPE model must be an object');
    if (!Array.isArray(model['merges']))
      throw new TokenizerError(file, 'model.merges of a BPE model must be a list');
  }
  return { ...value, added_tokens: addedTokens };
}

function sidecar(value: unknown, file: string): Json {
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw new TokenizerError(file, 'must hold a JSON object');
  return value;
}

/** Whether a post-processor's single-sequence template puts `token` first. */
function templateAddsToken(postProcessor: unknown, token: string | undefined): boolean {
  if (token === undefined || !isObject(postProcessor)) return false;
  if (postProcessor['type'] === 'Sequence' && Array.isArray(postProcessor['processors'])) {
    return postProcessor['processors'].some((p) => templateAddsToken(p, token));
  }
  if (postProcessor['type'] !== 'TemplateProcessing' || !Array.isArray(postProcessor['single'])) return false;
  const first = postProcessor['single'][0];
  return isObject(first) && isObject(first['SpecialToken']) && first['SpecialToken']['id'] === token;
}
