// Test support (imported by cpu.test.ts and wasm.test.ts, not by the package): the fused paged attention
// against the fused contiguous attention over each span's gathered pages, which must agree bit for bit
// (the two kernels run the same sums in the same order; only the key rows' addresses differ).
import type { Backend, PagedAttentionSpan, Tensor } from '@rrt/tensor';
import { expectExact, SeededRandom } from '@rrt/tensor/testing';

/** Checks `pagedAttention` = `attention` over gathered pages, exactly, on fresh seeded inputs. */
export async function expectPagedAttentionExact(backend: Backend, headDim: number): Promise<void> {
  const seed = Date.now() % 1_000_000;
  const random = new SeededRandom(seed);
  const [heads, kvHeads, pageSize, pages] = [4, 2, 5, 12];
  // Out-of-order tables, partial last pages, a prompt chunk, decode rows, a chunk after a prefix.
  const spans: PagedAttentionSpan[] = [
    { rows: 1, queryOffset: 13, keyLength: 14, pages: [7, 2, 11] },
    { rows: 6, queryOffset: 0, keyLength: 6, pages: [0, 9] },
    { rows: 3, queryOffset: 9, keyLength: 12, pages: [4, 10, 1] },
    { rows: 1, queryOffset: 20, keyLength: 21, pages: [3, 5, 6, 8, 9] },
  ];
  const rows = spans.reduce((n, span) => n + span.rows, 0);
  const owned: Tensor[] = [];
  const own = <T extends Tensor>(x: T) => {
    owned.push(x);
    return x;
  };
  const poolShape = [pages, pageSize, kvHeads, headDim];
  const poolSize = pages * pageSize * kvHeads * headDim;
  const q = own(backend.fromArray(random.floats(rows * heads * headDim, -2, 2), [1, rows, heads, headDim]));
  const k = own(backend.fromArray(random.floats(poolSize, -2, 2), poolShape));
  const v = own(backend.fromArray(random.floats(poolSize), poolShape));
  const scale = 1 / Math.sqrt(headDim);
  // Plain causal attention, and a window shorter than most histories with a soft-cap the scores reach.
  for (const scored of [{}, { window: 4, softCap: 1.5 }]) {
    const options = { scale, ...scored };
    const label = `headDim ${headDim}${'window' in scored ? ', window 4, softCap 1.5' : ''}`;
    const paged = await backend.read(own(backend.pagedAttention(q, k, v, spans, options)));
    let start = 0;
    for (const [index, span] of spans.entries()) {
      const used = Math.ceil(span.keyLength / pageSize);
      const table = own(backend.fromArray(Int32Array.from(span.pages.slice(0, used)), [used], 'int32'));
      const history = (pool: Tensor) =>
        own(backend.reshape(own(backend.gather(pool, table)), [1, used * pageSize, kvHeads, headDim]));
      const spanQueries = own(backend.slice(q, [0, start, 0, 0], [1, span.rows, heads, headDim]));
      const want = await backend.read(
        own(
          backend.attention(spanQueries, history(k), history(v), {
            ...options,
            queryOffset: span.queryOffset,
            keyLength: span.keyLength,
          }),
        ),
      );
      const width = heads * headDim;
      expectExact(
        `span ${index} (seed ${seed}, ${label})`,
        paged.subarray(start * width, (start + span.rows) * width),
        want,
      );
      start += span.rows;
    }
  }
  backend.dispose(owned);
}
