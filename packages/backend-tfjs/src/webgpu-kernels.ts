/**
 * A WGSL kernel registered with tfjs's `webgpu` backend: {@link Backend.pagedAttention}, one thread per
 * (query row, head), reading the paged pools in place through a per-row table of pool rows.
 *
 * NOTE: `@tensorflow/tfjs-backend-webgpu` is not imported here (it is loaded only when a WebGPU backend
 * is created, see create-backend.ts): the program is a plain object of the shape its
 * `runWebGPUProgram` takes, and the kernel is registered by name for the `webgpu` backend.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';

/** Kernel name, distinct from tfjs's own and from the host kernels'. */
export const webgpuPagedAttentionKernel = 'RrtPagedAttentionWebgpu';

/** The part of tfjs-webgpu's `WebGPUBackend` this file uses. */
interface WebgpuRunner {
  runWebGPUProgram(
    program: object,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
    uniforms?: { type: string; data: number[] }[],
  ): tf.TensorInfo;
}

const workgroupSize = 64;

/**
 * The WGSL program: thread `index = m·H + h` attends query row `m`, head `h`. `rowInfo` (int32) holds
 * per row `[visible, start]` and from `2M` on the pool row of each span's key positions; `start` points
 * at the row's span's first. Two passes over the visible keys (the maximum, then the weights and the
 * weighted sum), so no score buffer is needed; float32 throughout.
 */
function pagedAttentionProgram(rows: number, heads: number, kvHeads: number, headDim: number) {
  const threads = rows * heads;
  return {
    variableNames: ['queries', 'keyPool', 'valuePool', 'rowInfo'],
    outputShape: [1, rows, heads, headDim],
    shaderKey: `rrt_paged_attention_${heads}_${kvHeads}_${headDim}`,
    dispatchLayout: { x: [0, 1, 2, 3] },
    dispatch: [Math.ceil(threads / workgroupSize), 1, 1] as [number, number, number],
    workgroupSize: [workgroupSize, 1, 1] as [number, number, number],
    uniforms: 'threads : i32, scale : f32,',
    getUserCode: () => `
      fn main(index : i32) {
        if (index >= uniforms.threads) { return; }
        let m = index / ${heads};
        let h = index - m * ${heads};
        let kvh = (h * ${kvHeads}) / ${heads};
        let visible = rowInfo[2 * m];
        let start = rowInfo[2 * m + 1];
        let qBase = index * ${headDim};
        var top = -3.402823e38;
        for (var j = 0; j < visible; j++) {
          let kBase = (rowInfo[start + j] * ${kvHeads} + kvh) * ${headDim};
          var dot = 0.0;
          for (var i = 0; i < ${headDim}; i++) { dot += queries[qBase + i] * keyPool[kBase + i]; }
          top = max(top, dot * uniforms.scale);
        }
        var sums : array<f32, ${headDim}>;
        for (var i = 0; i < ${headDim}; i++) { sums[i] = 0.0; }
        var total = 0.0;
        for (var j = 0; j < visible; j++) {
          let kBase = (rowInfo[start + j] * ${kvHeads} + kvh) * ${headDim};
          var dot = 0.0;
          for (var i = 0; i < ${headDim}; i++) { dot += queries[qBase + i] * keyPool[kBase + i]; }
          let weight = exp(dot * uniforms.scale - top);
          total += weight;
          for (var i = 0; i < ${headDim}; i++) { sums[i] += weight * valuePool[kBase + i]; }
        }
        for (var i = 0; i < ${headDim}; i++) { result[qBase + i] = sums[i] / total; }
      }
    `,
  };
}

/**
 * The `rowInfo` input of the WGSL kernel for spans given as the host kernels' flat table (`rows,
 * queryOffset, keyLength, page ids…` per span).
 */
export function webgpuRowInfo(spans: number, table: readonly number[], pageSize: number): Int32Array {
  let rows = 0;
  let positions = 0;
  for (let span = 0, at = 0; span < spans; span++) {
    rows += table[at]!;
    positions += table[at + 2]!;
    at += 3 + Math.ceil(table[at + 2]! / pageSize);
  }
  const info = new Int32Array(2 * rows + positions);
  let row = 0;
  let start = 2 * rows;
  for (let span = 0, at = 0; span < spans; span++) {
    const [count, queryOffset, keyLength] = [table[at]!, table[at + 1]!, table[at + 2]!];
    for (let t = 0; t < count; t++, row++) {
      info[2 * row] = Math.min(queryOffset + t, keyLength - 1) + 1;
      info[2 * row + 1] = start;
    }
    for (let j = 0; j < keyLength; j++) {
      info[start + j] = table[at + 3 + Math.floor(j / pageSize)]! * pageSize + (j % pageSize);
    }
    start += keyLength;
    at += 3 + Math.ceil(keyLength / pageSize);
  }
  return info;
}

/** Registers the WGSL kernel for `backendName` when it is `webgpu` (once); returns whether it did. */
export function registerWebgpuKernels(backendName: string): boolean {
  if (backendName !== 'webgpu') return false;
  if (tf.getKernel(webgpuPagedAttentionKernel, backendName) !== undefined) return true;
  tf.registerKernel({
    kernelName: webgpuPagedAttentionKernel,
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { queries, keyPool, valuePool, rowInfo } = inputs as Record<
        'queries' | 'keyPool' | 'valuePool' | 'rowInfo',
        tf.TensorInfo
      >;
      const [, rows, heads, headDim] = queries.shape as [number, number, number, number];
      const program = pagedAttentionProgram(rows, heads, keyPool.shape[2]!, headDim);
      return (backend as unknown as WebgpuRunner).runWebGPUProgram(
        program,
        [queries, keyPool, valuePool, rowInfo],
        'float32',
        [
          { type: 'int32', data: [rows * heads] },
          { type: 'float32', data: [(attrs as { scale: number }).scale] },
        ],
      );
    },
  });
  return true;
}
