/**
 * Incremental detokenization: turns token ids into text as they are generated, so that text can be printed
 * token by token and the pieces joined equal decoding the whole sequence at once.
 *
 * @module
 */

/** Prints generated tokens as they come. */
export interface DecodeStream {
  /**
   * Adds one token and returns the text it completes: often its own text, `''` while it is part of a
   * character whose UTF-8 bytes are still arriving (byte-fallback pieces `<0xE2>` `<0x84>` ...), or several
   * tokens' text at once when such a character completes.
   */
  push(id: number): string;
  /** Returns whatever text is still held back (an unfinished byte sequence decodes to U+FFFD). */
  flush(): string;
}

/** What a {@link DecodeStream} needs of a tokenizer. */
export interface DecodeStreamSource {
  /** Decodes ids to text (special tokens already left out by the stream). */
  decode(ids: readonly number[]): string;
  /** Whether the stream should leave this id out of the text. */
  skip(id: number): boolean;
}

/**
 * The stream of {@link DecodeStream}: a window `[prefixOffset, ids.length)` of recent ids is decoded
 * whole, and only the part past the text of `[prefixOffset, readOffset)` is emitted. Decoding a window
 * rather than a token alone keeps what a decoder does to its context (the Llama decoder strips the first
 * token's leading space; byte pieces only form a character together). Text ending in U+FFFD is held back
 * until the character completes. This is the scheme of Hugging Face's text-generation-inference.
 */
export class WindowedDecodeStream implements DecodeStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly source: DecodeStreamSource) {}

  push(id: number): string {
    // A skipped (special) token is left out of the window altogether, so the text around it decodes as
    // it does when the whole sequence is decoded with special tokens skipped.
    if (this.source.skip(id)) return '';
    this.ids.push(id);
    const prefixText = this.source.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.source.decode(this.ids.slice(this.prefixOffset));
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return newText.slice(prefixText.length);
    }
    return '';
  }

  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.source.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.source.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return newText.slice(prefixText.length);
  }
}
