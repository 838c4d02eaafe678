import type { Backend, Tensor } from '@rrt/tensor';
import { KVCacheError, KVCapacityError } from './errors.js';
import type { KeyValues } from './layer-cache.js';

/**
 * How loops share KV entries: `per-loop` keeps every effective depth's own keys and values (exact);
 * `recursive` is Mixture-of-Recursions' recursive KV sharing: loop 0's entries serve every loop of the same
 * block layer, later loops write nothing (a 1/L of the memory; the model's outputs change).
 */
export type KVSharing = 'per-loop' | 'recursive';

/**
 * How a decoder's attention reads a paged sequence's history: `paged` straight from the pool by block
 * table ({@link PagedLayer.appendSlots}, `Backend.pagedAttention`, one call for all spans of a layer);
 * `gather` through {@link PagedLayer.updateAndFetch}'s gathered copy (the earlier path, kept to measure
 * against).
 */
export type PagedAttentionPath = 'paged' | 'gather';

/**
 * What {@link PagedLayer.appendSlots} returns: where a sequence's new keys and values at one depth go and
 * where its history lives, for `Backend.pagedAttention` (nothing copied; the pools belong to the cache).
 */
export interface PagedKeyValues {
  /**
   * Rows of the pools (seen as `[depths·pages·pageSize, kvHeads, headDim]`) that the new positions'
   * keys and values must be written to with `Backend.writeRows`, in position order; empty when this depth
   * writes nothing (a loop > 0 under `recursive` sharing).
   */
  writeRows: Int32Array;
  /** The keys of every stored depth, `[depths·pages, pageSize, kvHeads, headDim]` (one tensor for all). */
  keyPool: Tensor;
  /** The values, laid out as {@link keyPool}. */
  valuePool: Tensor;
  /** Block table at this depth: pool pages of positions `0…`, `⌈length / pageSize⌉` of them. */
  pages: readonly number[];
  /** Positions filled at this depth. */
  length: number;
}

/** Options of {@link createPagedKVCache}. */
export interface PagedKVCacheOptions {
  /** Effective depths of the model (`loops × blockSize` for `cycle`). */
  depths: number;
  /** K, the stored layers looped (1 for a vanilla model); depth `d` belongs to loop `⌊d / K⌋`. */
  blockSize: number;
  /** Key/value heads of one position. */
  kvHeads: number;
  /** Size of one head. */
  headDim: number;
  /** Positions per page. */
  pageSize: number;
  /** Byte budget of the pools (float32 keys and values at every stored depth); whole pages only. */
  bytes: number;
  /** Default `per-loop`. */
  sharing?: KVSharing;
  /** How attention reads the history (default `paged`); see {@link PagedAttentionPath}. */
  attention?: PagedAttentionPath;
}

/**
 * A paged KV cache for many sequences: `pages` pages per stored depth, allocated once, all depths in one
 * key pool `[depths·pages, pageSize, kvHeads, headDim]` and one value pool (depth `d`'s page `p` is pool
 * page `d·pages + p`); each sequence holds a block table of page ids, the same ids at every depth, and
 * its own filled length per depth (tokens that exit early fill fewer). Appends write into the pools in
 * place ({@link Backend.writeRows}).
 *
 * NOTE: one pool for every depth lets a serving step's spans, which run at different loops and so at
 * different depths, attend in one `Backend.pagedAttention` call per layer. With `attention: 'gather'`
 * a sequence's history is instead gathered into `[1, pages·pageSize, kvHeads, headDim]` at every call: a
 * copy of that sequence's history at that depth per step.
 */
export class PagedKVCache {
  /** Pages in the pool. */
  readonly pages: number;
  /** Bytes of one page across all stored depths, keys and values. */
  readonly pageBytes: number;
  /** Whether loops keep their own entries. */
  readonly sharing: KVSharing;
  private keys: Tensor | undefined;
  private values: Tensor | undefined;
  private readonly freePages: number[];
  private readonly sequences = new Set<PagedSequence>();

  constructor(
    /** The backend the pools live on. */
    readonly backend: Backend,
    /** What it was created with. */
    readonly options: PagedKVCacheOptions,
  ) {
    const { depths, blockSize, kvHeads, headDim, pageSize, bytes } = options;
    this.sharing = options.sharing ?? 'per-loop';
    if (depths % blockSize !== 0) {
      throw new KVCacheError(`depths ${depths} is not a multiple of blockSize ${blockSize}`);
    }
    const stored = this.sharing === 'recursive' ? blockSize : depths;
    this.pageBytes = 2 * 4 * stored * pageSize * kvHeads * headDim;
    this.pages = Math.floor(bytes / this.pageBytes);
    if (this.pages < 1) {
      throw new KVCapacityError(`a KV budget of ${bytes} bytes holds no page of ${this.pageBytes} bytes`);
    }
    const shape = [stored * this.pages, pageSize, kvHeads, headDim];
    this.keys = backend.keep(backend.fill(shape, 0));
    this.values = backend.keep(backend.fill(shape, 0));
    this.freePages = Array.from({ length: this.pages }, (_, page) => this.pages - 1 - page);
  }

  /** Starts a sequence with no pages. */
  open(): PagedSequence {
    const sequence = new PagedSequence(this);
    this.sequences.add(sequence);
    return sequence;
  }

  /** Pages not held by any sequence. */
  get freePageCount(): number {
    return this.freePages.length;
  }

  /** Bytes of the pages sequences hold. */
  usedBytes(): number {
    return (this.pages - this.freePages.length) * this.pageBytes;
  }

  /** Bytes of the free pages. */
  freeBytes(): number {
    return this.freePages.length * this.pageBytes;
  }

  /** Bytes of the pools, free or not. */
  totalBytes(): number {
    return this.pages * this.pageBytes;
  }

  /** Sequences open (not freed). */
  get openSequences(): number {
    return this.sequences.size;
  }

  /** Frees the pools; every sequence becomes unusable. */
  dispose(): void {
    if (this.keys) this.backend.dispose(this.keys);
    if (this.values) this.backend.dispose(this.values);
    this.keys = undefined;
    this.values = undefined;
    this.sequences.clear();
  }

  /** @internal the pool index that serves `depth`. */
  storedDepth(depth: number): number {
    return this.sharing === 'recursive' ? depth % this.options.blockSize : depth;
  }

  /** @internal */
  take(count: number): number[] {
    if (count > this.freePages.length) {
      throw new KVCapacityError(
        `KV cache full: ${count} more pages asked for, ${this.freePages.length} of ${this.pages} free ` +
          `(${this.freeBytes()} of ${this.totalBytes()} bytes)`,
      );
    }
    return this.freePages.splice(this.freePages.length - count, count);
  }

  /** @internal */
  release(sequence: PagedSequence, pages: readonly number[]): void {
    this.freePages.push(...pages);
    this.sequences.delete(sequence);
  }

  /** @internal the pools and the first pool page of `depth`. */
  pool(depth: number): { keys: Tensor; values: Tensor; firstPage: number } {
    const { keys, values } = this;
    if (!keys || !values) throw new KVCacheError('this paged KV cache was disposed');
    if (depth < 0 || depth >= this.options.depths) {
      throw new KVCacheError(`depth ${depth} is outside 0…${this.options.depths - 1}`);
    }
    return { keys, values, firstPage: this.storedDepth(depth) * this.pages };
  }
}

/**
 * One sequence of a {@link PagedKVCache}: its block table and its filled length per effective depth.
 * {@link layer} gives the per-depth view a decoder layer appends to and reads.
 */
export class PagedSequence {
  /** Page ids, in position order. */
  readonly blockTable: number[] = [];
  private readonly lengths: number[];
  private freed = false;

  constructor(private readonly cache: PagedKVCache) {
    this.lengths = new Array<number>(cache.options.depths).fill(0);
  }

  /** Positions filled at `depth` (for `recursive` sharing, loop 0's). */
  length(depth: number): number {
    return this.lengths[this.cache.storedDepth(depth)]!;
  }

  /** Positions its pages hold. */
  get capacity(): number {
    return this.blockTable.length * this.cache.options.pageSize;
  }

  /** Bytes of the pages it holds. */
  bytes(): number {
    return this.blockTable.length * this.cache.pageBytes;
  }

  /**
   * Makes room for `positions` positions in all, taking pages now (a typed {@link KVCapacityError}, and
   * nothing taken, when the pool cannot hold them): an engine reserves a request's whole length on
   * admission so that it never runs out mid-way.
   */
  reserve(positions: number): void {
    this.assertOpen();
    const needed = Math.ceil(positions / this.cache.options.pageSize) - this.blockTable.length;
    if (needed > 0) this.blockTable.push(...this.cache.take(needed));
  }

  /** The view of depth `depth`: appends `[1, T, kvHeads, headDim]` and returns the history. */
  layer(depth: number): PagedLayer {
    this.assertOpen();
    if (!Number.isInteger(depth) || depth < 0 || depth >= this.cache.options.depths) {
      throw new KVCacheError(`depth ${depth} is outside 0…${this.cache.options.depths - 1}`);
    }
    return new PagedLayer(this.cache, this, depth);
  }

  /** Returns its pages to the pool (on finish, cancel or refusal); harmless twice. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.cache.release(this, this.blockTable.splice(0));
  }

  /** @internal */
  setLength(depth: number, length: number): void {
    this.lengths[this.cache.storedDepth(depth)] = length;
  }

  private assertOpen(): void {
    if (this.freed) throw new KVCacheError('this sequence was freed');
  }
}

/** One (sequence, effective depth) of a {@link PagedKVCache}, in the shape a decoder layer uses. */
export class PagedLayer {
  /**
   * Takes the next `newLength` positions of this depth (pages as needed) and returns the pool rows the
   * caller must write their keys and values to (`writeRows`, before anything reads them), the pools,
   * this depth's block table and the filled length, the new positions included: for a decoder that
   * writes every sequence's rows in one `Backend.writeRows` and attends with `Backend.pagedAttention`.
   * Absent when the cache was made with `attention: 'gather'`, so that a decoder takes the gathered path.
   */
  readonly appendSlots?: (newLength: number) => PagedKeyValues;

  constructor(
    private readonly cache: PagedKVCache,
    private readonly sequence: PagedSequence,
    /** Effective depth. */
    readonly depth: number,
  ) {
    if ((cache.options.attention ?? 'paged') === 'paged') {
      this.appendSlots = (newLength) => this.slots(newLength);
    }
  }

  /** The positions of {@link appendSlots}. */
  private slots(newLength: number): PagedKeyValues {
    const { cache, sequence, depth } = this;
    const writes = cache.storedDepth(depth) === depth;
    const pool = cache.pool(depth);
    const { pageSize } = cache.options;
    let length = sequence.length(depth);
    let writeRows = new Int32Array(0);
    if (writes) {
      sequence.reserve(length + newLength);
      writeRows = new Int32Array(newLength);
      for (let t = 0; t < newLength; t++) {
        const position = length + t;
        const page = pool.firstPage + sequence.blockTable[Math.floor(position / pageSize)]!;
        writeRows[t] = page * pageSize + (position % pageSize);
      }
      length += newLength;
      sequence.setLength(depth, length);
    }
    const pages = sequence.blockTable
      .slice(0, Math.ceil(length / pageSize))
      .map((page) => pool.firstPage + page);
    return { writeRows, keyPool: pool.keys, valuePool: pool.values, pages, length };
  }

  /**
   * Appends `keys`/`values` `[1, T, kvHeads, headDim]` at the next positions of this depth (taking pages
   * as needed) and returns the sequence's history at this depth, `[1, pages·pageSize, kvHeads, headDim]`
   * (a gathered copy the caller owns), with its filled length. Under `recursive` sharing a loop > 0 writes
   * nothing and reads loop 0's entries.
   */
  updateAndFetch(keys: Tensor, values: Tensor): KeyValues {
    const { backend, options } = this.cache;
    const [batch, newLength, kvHeads, headDim] = keys.shape as [number, number, number, number];
    if (batch !== 1) throw new KVCacheError(`a paged sequence takes keys [1, T, …]; got [${keys.shape}]`);
    const { writeRows, keyPool, valuePool, pages, length } = this.slots(newLength);
    if (writeRows.length > 0) {
      backend.writeRows(keyPool, writeRows, keys);
      backend.writeRows(valuePool, writeRows, values);
    }
    // In a scope: the gather's result under the reshape is freed even when the caller has no tidy.
    const gathered = backend.tidy(() => {
      const table = backend.fromArray(Int32Array.from(pages), [pages.length], 'int32');
      const view = (pooled: Tensor) =>
        backend.reshape(backend.gather(pooled, table), [
          1,
          pages.length * options.pageSize,
          kvHeads,
          headDim,
        ]);
      return { keys: view(keyPool), values: view(valuePool) };
    });
    return { keys: gathered['keys']!, values: gathered['values']!, length };
  }
}

/**
 * Creates a paged KV cache whose pools take at most `bytes`.
 *
 * @example
 * ```ts
 * const cache = createPagedKVCache(backend, { depths: 6, blockSize: 2, kvHeads: 2, headDim: 8, pageSize: 16, bytes: 1 << 20 });
 * const sequence = cache.open();
 * sequence.reserve(promptLength + maxTokens); // KVCapacityError when it cannot fit
 * // ... model.layer(hidden, rows, [{ depth, cache: sequence.layer(depth) }]) ...
 * sequence.free();
 * ```
 */
export function createPagedKVCache(backend: Backend, options: PagedKVCacheOptions): PagedKVCache {
  return new PagedKVCache(backend, options);
}
