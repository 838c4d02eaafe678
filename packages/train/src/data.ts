/**
 * Training text: documents, a seeded train / held-out split by documents, and batches of token windows.
 *
 * @module
 */
import { TrainingDataError } from './errors.js';
import { TrainRandom } from './random.js';

/** Splits raw text into documents at blank lines, trimmed; empty ones are dropped. */
export function splitDocuments(text: string): string[] {
  return text
    .split(/\r?\n[ \t]*\r?\n/)
    .map((document) => document.trim())
    .filter((document) => document.length > 0);
}

/** The record of a train / held-out split, written next to a run so that it can be checked and reused. */
export interface DataSplit {
  /** Seed of the document shuffle. */
  seed: number;
  /** Fraction of documents held out (rounded up to a whole document). */
  heldOutFraction: number;
  /** Number of documents in the corpus. */
  documentCount: number;
  /** Indices (into the corpus's documents) of the held-out documents, ascending. */
  heldOutDocuments: number[];
  /** Tokens of the training stream (BOS included). */
  trainTokens: number;
  /** Tokens of the held-out stream (BOS included). */
  heldOutTokens: number;
}

/** Options of {@link TextDataset.create}. */
export interface TextDatasetOptions {
  /** The corpus, one string per document. */
  documents: readonly string[];
  /** Text → token ids, without BOS (it is added per document). */
  encode: (text: string) => number[];
  /** Put before every document; none when undefined. */
  bosId: number | undefined;
  /** Fraction of documents held out; default 0.1. */
  heldOutFraction?: number;
  /** Seed of the split; default 0. */
  seed?: number;
  /** Names the corpus in error messages (a file path). */
  source?: string;
}

/** A batch of `batch × length` windows: `inputs[b, t]` predicts `targets[b, t] = inputs[b, t + 1]`. */
export interface TokenBatch {
  batch: number;
  length: number;
  /** Row-major `[batch, length]`. */
  inputs: Int32Array;
  /** Row-major `[batch, length]`. */
  targets: Int32Array;
}

/**
 * A tokenized corpus split by documents into a training stream and a held-out stream (each the
 * concatenation of its documents, each document led by BOS).
 */
export class TextDataset {
  private constructor(
    /** The split, as recorded. */
    readonly split: DataSplit,
    /** The training token stream. */
    readonly trainTokens: Int32Array,
    /** The held-out token stream. */
    readonly heldOutTokens: Int32Array,
    private readonly source: string,
  ) {}

  /** Tokenizes and splits a corpus. The same documents, seed and fraction give the same split. */
  static create(options: TextDatasetOptions): TextDataset {
    const source = options.source ?? 'training text';
    const { documents } = options;
    const fraction = options.heldOutFraction ?? 0.1;
    const seed = options.seed ?? 0;
    if (!(fraction > 0 && fraction < 1)) {
      throw new TrainingDataError(source, `the held-out fraction must be in (0, 1) (got ${fraction})`);
    }
    if (documents.length < 2) {
      throw new TrainingDataError(source, `needs at least 2 documents to split (found ${documents.length})`);
    }
    const order = new TrainRandom(seed).shuffle(documents.map((_, index) => index));
    const heldOutCount = Math.min(documents.length - 1, Math.ceil(fraction * documents.length));
    const heldOut = order.slice(0, heldOutCount).sort((a, b) => a - b);
    const heldOutSet = new Set(heldOut);
    const stream = (indices: number[]) => {
      const parts = indices.map((index) => {
        const ids = options.encode(documents[index]!);
        return options.bosId === undefined ? ids : [options.bosId, ...ids];
      });
      const out = new Int32Array(parts.reduce((n, part) => n + part.length, 0));
      let offset = 0;
      for (const part of parts) {
        out.set(part, offset);
        offset += part.length;
      }
      return out;
    };
    const trainIndices = documents.map((_, index) => index).filter((index) => !heldOutSet.has(index));
    const train = stream(trainIndices);
    const held = stream(heldOut);
    const split: DataSplit = {
      seed,
      heldOutFraction: fraction,
      documentCount: documents.length,
      heldOutDocuments: heldOut,
      trainTokens: train.length,
      heldOutTokens: held.length,
    };
    return new TextDataset(split, train, held, source);
  }

  /**
   * `batch` windows of `length + 1` tokens at uniformly random offsets of the training stream, drawn from
   * `random` (whose state is therefore the loader's position).
   */
  sampleBatch(random: TrainRandom, batch: number, length: number): TokenBatch {
    const span = this.trainTokens.length - length - 1;
    if (span < 0) {
      throw new TrainingDataError(
        this.source,
        `the training stream holds ${this.trainTokens.length} tokens, fewer than a window of ${length + 1}`,
      );
    }
    const inputs = new Int32Array(batch * length);
    const targets = new Int32Array(batch * length);
    for (let row = 0; row < batch; row++) {
      const start = random.below(span + 1);
      inputs.set(this.trainTokens.subarray(start, start + length), row * length);
      targets.set(this.trainTokens.subarray(start + 1, start + length + 1), row * length);
    }
    return { batch, length, inputs, targets };
  }

  /**
   * The held-out stream cut into consecutive, non-overlapping windows of `length` predictions (at most
   * `maxWindows`), grouped into batches of up to `batch` windows: a fixed evaluation set.
   */
  heldOutBatches(batch: number, length: number, maxWindows = Number.POSITIVE_INFINITY): TokenBatch[] {
    const tokens = this.heldOutTokens;
    const windows = Math.min(maxWindows, Math.floor((tokens.length - 1) / length));
    if (windows < 1) {
      throw new TrainingDataError(
        this.source,
        `the held-out stream holds ${tokens.length} tokens, fewer than a window of ${length + 1}`,
      );
    }
    const batches: TokenBatch[] = [];
    for (let first = 0; first < windows; first += batch) {
      const rows = Math.min(batch, windows - first);
      const inputs = new Int32Array(rows * length);
      const targets = new Int32Array(rows * length);
      for (let row = 0; row < rows; row++) {
        const start = (first + row) * length;
        inputs.set(tokens.subarray(start, start + length), row * length);
        targets.set(tokens.subarray(start + 1, start + length + 1), row * length);
      }
      batches.push({ batch: rows, length, inputs, targets });
    }
    return batches;
  }
}
