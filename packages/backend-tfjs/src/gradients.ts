/**
 * Gradient functions for the tfjs kernels that {@link TfjsBackend}'s ops emit.
 *
 * NOTE: why this file exists. The Node bundle of `@tensorflow/tfjs-core` (`dist/tf-core.node.js`) and
 * its ESM bundles register no gradient functions at all; tfjs registers them from
 * `@tensorflow/tfjs-core/dist/register_all_gradients`, a tree of ESM files with extensionless relative
 * imports that plain Node ESM cannot load (only a bundler can), or from the 30 MB union package
 * `@tensorflow/tfjs`. Registering the ~30 gradients our ops need through tfjs's public `registerGradient`
 * works in Node ESM, CJS and bundlers alike, and lets us choose implementations that exist on every
 * backend: the gradient of `GatherV2` (an embedding lookup) scatters with `ScatterNd`, because the wasm
 * backend lacks the `UnsortedSegmentSum` kernel that tfjs's own gradient uses. `BatchMatMul`'s gradient
 * also reduces over broadcast batch dimensions, which tfjs's own does not.
 *
 * A gradient is registered only where none is (so an app that loads `@tensorflow/tfjs` keeps tfjs's own);
 * the conformance suite checks every one of these against float64 references.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';

type Attrs = Record<string, unknown>;

/** Axes of `outShape` along which a tensor of `inShape` was broadcast (including new leading axes). */
function broadcastAxes(inShape: readonly number[], outShape: readonly number[]): number[] {
  const axes: number[] = [];
  const lead = outShape.length - inShape.length;
  for (let axis = 0; axis < outShape.length; axis++) {
    const inDim = axis < lead ? 1 : inShape[axis - lead]!;
    if (axis < lead || (inDim === 1 && outShape[axis] !== 1)) axes.push(axis);
  }
  return axes;
}

/** Sums `grad` over the axes along which `shape` was broadcast, and gives it `shape`. */
export function unbroadcast(grad: tf.Tensor, shape: readonly number[]): tf.Tensor {
  const axes = broadcastAxes(shape, grad.shape);
  const summed = axes.length > 0 ? tf.sum(grad, axes) : grad;
  return tf.reshape(summed, shape as number[]);
}

/** Non-negative reduction axes from a tfjs `axis` attribute (null or undefined: all axes). */
function reductionAxes(axis: unknown, rank: number): number[] {
  if (axis === null || axis === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = Array.isArray(axis) ? (axis as number[]) : [axis as number];
  return list.map((a) => (a < 0 ? a + rank : a));
}

/** The shape of a reduction's output with the reduced axes kept as 1, for broadcasting `dy` back. */
function keptShape(shape: readonly number[], axes: readonly number[]): number[] {
  return shape.map((dim, axis) => (axes.includes(axis) ? 1 : dim));
}

/**
 * A binary elementwise kernel's gradient. NOTE: tfjs runs each input's gradient function in its own
 * `tidy`, so the two must not share intermediate tensors (the first scope would dispose them).
 */
function binary(
  kernelName: string,
  gradA: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
  gradB: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved) => {
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      return {
        a: () => unbroadcast(gradA(dy as tf.Tensor, a, b), a.shape),
        b: () => unbroadcast(gradB(dy as tf.Tensor, a, b), b.shape),
      };
    },
  };
}

function unaryOfInput(kernelName: string, grad: (dy: tf.Tensor, x: tf.Tensor) => tf.Tensor): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => grad(dy as tf.Tensor, saved[0]!) }),
  };
}

function unaryOfOutput(kernelName: string, grad: (dy: tf.Tensor, y: tf.Tensor) => tf.Tensor): tf.GradConfig {
  return {
    kernelName,
    outputsToSave: [true],
    gradFunc: (dy, saved) => ({ x: () => grad(dy as tf.Tensor, saved[0]!) }),
  };
}

/**
 * `x·y` with optional transposes, where a 2-D operand's transpose is materialised first.
 *
 * NOTE: tfjs-wasm runs XNNPACK only for an untransposed 2-D product; with a transpose flag it falls back
 * to a loop ≈ 10–40× slower (bench/gemm.ts). Every weight gradient `xᵀ·dy` and input gradient `dy·Wᵀ`
 * of a linear layer has one, and they were 82 % of a stories260K training step's kernel time
 * (bench/profile.ts). Copying the transpose costs one pass over the operand.
 */
function product(x: tf.Tensor, y: tf.Tensor, transposeX: boolean, transposeY: boolean): tf.Tensor {
  if (x.rank === 2 && y.rank === 2) {
    return tf.matMul(transposeX ? tf.transpose(x) : x, transposeY ? tf.transpose(y) : y);
  }
  return tf.matMul(x, y, transposeX, transposeY);
}

const batchMatMul: tf.GradConfig = {
  kernelName: 'BatchMatMul',
  inputsToSave: ['a', 'b'],
  gradFunc: (dyIn, saved, attrs) => {
    const dy = dyIn as tf.Tensor;
    const [a, b] = saved as [tf.Tensor, tf.Tensor];
    const { transposeA, transposeB } = attrs as Attrs as { transposeA: boolean; transposeB: boolean };
    // Each product has the broadcast batch shape of dy; unbroadcast sums it back to the input's.
    let gradA: () => tf.Tensor;
    let gradB: () => tf.Tensor;
    if (!transposeA && !transposeB) {
      gradA = () => product(dy, b, false, true);
      gradB = () => product(a, dy, true, false);
    } else if (!transposeA && transposeB) {
      gradA = () => product(dy, b, false, false);
      gradB = () => product(dy, a, true, false);
    } else if (transposeA && !transposeB) {
      gradA = () => product(b, dy, false, true);
      gradB = () => product(a, dy, false, false);
    } else {
      gradA = () => product(b, dy, true, true);
      gradB = () => product(dy, a, true, true);
    }
    return { a: () => unbroadcast(gradA(), a.shape), b: () => unbroadcast(gradB(), b.shape) };
  },
};

const reduceSumOrMean = (kernelName: 'Sum' | 'Mean'): tf.GradConfig => ({
  kernelName,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const x = saved[0]!;
    const axes = reductionAxes((attrs as Attrs)['axis'], x.rank);
    return {
      x: () => {
        const spread = tf.mul(tf.reshape(dy as tf.Tensor, keptShape(x.shape, axes)), tf.onesLike(x));
        if (kernelName === 'Sum') return spread;
        const count = axes.reduce((n, axis) => n * x.shape[axis]!, 1);
        return tf.div(spread, count);
      },
    };
  },
});

const reduceMax: tf.GradConfig = {
  kernelName: 'Max',
  inputsToSave: ['x'],
  outputsToSave: [true],
  gradFunc: (dy, saved, attrs) => {
    const [x, y] = saved as [tf.Tensor, tf.Tensor];
    const axes = reductionAxes((attrs as Attrs)['reductionIndices'], x.rank);
    const kept = keptShape(x.shape, axes);
    // Every position equal to the maximum receives the gradient (tfjs's convention too).
    return {
      x: () =>
        tf.mul(tf.reshape(dy as tf.Tensor, kept), tf.cast(tf.equal(x, tf.reshape(y, kept)), 'float32')),
    };
  },
};

const softmax: tf.GradConfig = {
  kernelName: 'Softmax',
  outputsToSave: [true],
  gradFunc: (dyIn, saved, attrs) => {
    const dy = dyIn as tf.Tensor;
    const y = saved[0]!;
    const dim = (attrs as Attrs)['dim'] as number;
    return { logits: () => tf.mul(y, tf.sub(dy, tf.sum(tf.mul(dy, y), dim, true))) };
  },
};

const cast: tf.GradConfig = {
  kernelName: 'Cast',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const x = saved[0]!;
    const toFloat = (attrs as Attrs)['dtype'] === 'float32';
    // Through an integer cast nothing flows back.
    return { x: () => (toFloat && x.dtype === 'float32' ? tf.clone(dy as tf.Tensor) : tf.zerosLike(x)) };
  },
};

const reshape: tf.GradConfig = {
  kernelName: 'Reshape',
  inputsToSave: ['x'],
  gradFunc: (dy, saved) => ({ x: () => tf.reshape(dy as tf.Tensor, saved[0]!.shape) }),
};

const identity: tf.GradConfig = {
  kernelName: 'Identity',
  gradFunc: (dy) => ({ x: () => tf.clone(dy as tf.Tensor) }),
};

const transpose: tf.GradConfig = {
  kernelName: 'Transpose',
  gradFunc: (dy, _saved, attrs) => {
    const perm = (attrs as Attrs)['perm'] as number[];
    const inverse: number[] = [];
    perm.forEach((to, from) => {
      inverse[to] = from;
    });
    return { x: () => tf.transpose(dy as tf.Tensor, inverse) };
  },
};

const slice: tf.GradConfig = {
  kernelName: 'Slice',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const x = saved[0]!;
    const rank = x.rank;
    const asList = (v: unknown, fill: number) =>
      Array.isArray(v) ? (v as number[]) : [v as number, ...new Array(rank - 1).fill(fill)];
    const begin = asList((attrs as Attrs)['begin'], 0);
    const size = asList((attrs as Attrs)['size'], -1);
    const paddings = x.shape.map((dim, axis): [number, number] => {
      const start = begin[axis] ?? 0;
      const extent = size[axis] === undefined || size[axis] === -1 ? dim - start : size[axis]!;
      return [start, dim - start - extent];
    });
    return { x: () => tf.pad(dy as tf.Tensor, paddings) };
  },
};

const concat: tf.GradConfig = {
  kernelName: 'Concat',
  saveAllInputs: true,
  gradFunc: (dy, saved, attrs) => {
    const rank = saved[0]!.rank;
    const rawAxis = (attrs as Attrs)['axis'] as number;
    const axis = rawAxis < 0 ? rawAxis + rank : rawAxis;
    const grads: Record<string, () => tf.Tensor> = {};
    let offset = 0;
    saved.forEach((input, i) => {
      // One slice per input: each input's gradient runs in its own tidy, so they cannot share a split.
      const begin = new Array<number>(rank).fill(0);
      begin[axis] = offset;
      offset += input.shape[axis]!;
      grads[i] = () => tf.slice(dy as tf.Tensor, begin, input.shape);
    });
    return grads;
  },
};

const pack: tf.GradConfig = {
  kernelName: 'Pack',
  saveAllInputs: true,
  gradFunc: (dy, saved, attrs) => {
    const rank = saved[0]!.rank + 1;
    const rawAxis = (attrs as Attrs)['axis'] as number;
    const axis = rawAxis < 0 ? rawAxis + rank : rawAxis;
    const grads: Record<string, () => tf.Tensor> = {};
    saved.forEach((input, i) => {
      const begin = new Array<number>(rank).fill(0);
      begin[axis] = i;
      const size = [...input.shape.slice(0, axis), 1, ...input.shape.slice(axis)];
      grads[i] = () => tf.reshape(tf.slice(dy as tf.Tensor, begin, size), input.shape);
    });
    return grads;
  },
};

const select: tf.GradConfig = {
  kernelName: 'Select',
  inputsToSave: ['condition'],
  gradFunc: (dyIn, saved) => {
    const dy = dyIn as tf.Tensor;
    const condition = saved[0]!;
    return {
      condition: () => tf.cast(tf.zerosLike(condition), 'float32'),
      t: () => tf.where(condition, dy, tf.zerosLike(dy)),
      e: () => tf.where(condition, tf.zerosLike(dy), dy),
    };
  },
};

const tile: tf.GradConfig = {
  kernelName: 'Tile',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const x = saved[0]!;
    const reps = (attrs as Attrs)['reps'] as number[];
    return {
      x: () => {
        // Output axis i holds reps[i] copies of x's axis i, copy-major: view it as [copies, dim] and sum
        // the copies, one tiled axis at a time so that no tensor exceeds rank 4.
        let grad = dy as tf.Tensor;
        x.shape.forEach((dim, axis) => {
          if (reps[axis] === 1) return;
          const outer = grad.shape.slice(0, axis).reduce((n, d) => n * d, 1);
          const inner = grad.shape.slice(axis + 1).reduce((n, d) => n * d, 1);
          const summed = tf.sum(tf.reshape(grad, [outer, reps[axis]!, dim, inner]), 1);
          grad = tf.reshape(summed, [...grad.shape.slice(0, axis), dim, ...grad.shape.slice(axis + 1)]);
        });
        return grad;
      },
    };
  },
};

const gatherV2: tf.GradConfig = {
  kernelName: 'GatherV2',
  inputsToSave: ['x', 'indices'],
  gradFunc: (dy, saved, attrs) => {
    const [table, indices] = saved as [tf.Tensor, tf.Tensor];
    const rawAxis = (attrs as Attrs)['axis'] as number;
    const axis = rawAxis < 0 ? rawAxis + table.rank : rawAxis;
    return {
      x: () => scatterGatherGrad(dy as tf.Tensor, table.shape, indices, axis),
      indices: () => tf.cast(tf.zerosLike(indices), 'float32'),
    };
  },
};

/**
 * The gradient of `gather(table, indices, axis)`: each row of `dy` is added into the row of the table it
 * came from. `ScatterNd` sums duplicate indices and exists on every tfjs backend we use.
 */
function scatterGatherGrad(dy: tf.Tensor, tableShape: number[], indices: tf.Tensor, axis: number): tf.Tensor {
  const count = indices.size;
  const rows = tableShape[axis]!;
  const outer = tableShape.slice(0, axis).reduce((n, d) => n * d, 1);
  const inner = tableShape.slice(axis + 1).reduce((n, d) => n * d, 1);
  const flatIndices = tf.reshape(indices, [count, 1]);
  if (outer === 1) {
    const updates = tf.reshape(dy, [count, inner]);
    return tf.reshape(tf.scatterND(flatIndices, updates, [rows, inner]), tableShape);
  }
  // Bring the gathered axis to the front: [outer, count, inner] → [count, outer, inner].
  const updates = tf.transpose(tf.reshape(dy, [outer, count, inner]), [1, 0, 2]);
  const scattered = tf.scatterND(flatIndices, updates, [rows, outer, inner]); // [rows, outer, inner]
  return tf.reshape(tf.transpose(scattered, [1, 0, 2]), tableShape);
}

const half = 0.5;

/** Every gradient this package provides, one per kernel that the backend's ops emit. */
const gradients: readonly tf.GradConfig[] = [
  binary(
    'Add',
    (dy) => dy,
    (dy) => dy,
  ),
  binary(
    'Sub',
    (dy) => dy,
    (dy) => tf.neg(dy),
  ),
  binary(
    'Multiply',
    (dy, _a, b) => tf.mul(dy, b),
    (dy, a) => tf.mul(dy, a),
  ),
  binary(
    'RealDiv',
    (dy, _a, b) => tf.div(dy, b),
    (dy, a, b) => tf.neg(tf.div(tf.mul(dy, a), tf.square(b))),
  ),
  binary(
    'Maximum',
    (dy, a, b) => tf.mul(dy, tf.cast(tf.greaterEqual(a, b), 'float32')),
    (dy, a, b) => tf.mul(dy, tf.cast(tf.less(a, b), 'float32')),
  ),
  unaryOfInput('Neg', (dy) => tf.neg(dy)),
  unaryOfOutput('Exp', (dy, y) => tf.mul(dy, y)),
  unaryOfInput('Log', (dy, x) => tf.div(dy, x)),
  unaryOfOutput('Sqrt', (dy, y) => tf.div(dy, tf.mul(y, 2))),
  // d/dx x^(-1/2) = -½ x^(-3/2) = -½ y³ with y = rsqrt(x).
  unaryOfOutput('Rsqrt', (dy, y) => tf.mul(dy, tf.mul(tf.mul(y, tf.square(y)), -half))),
  unaryOfInput('Square', (dy, x) => tf.mul(dy, tf.mul(x, 2))),
  unaryOfOutput('Tanh', (dy, y) => tf.mul(dy, tf.sub(1, tf.square(y)))),
  unaryOfOutput('Sigmoid', (dy, y) => tf.mul(dy, tf.mul(y, tf.sub(1, y)))),
  batchMatMul,
  reduceSumOrMean('Sum'),
  reduceSumOrMean('Mean'),
  reduceMax,
  softmax,
  cast,
  reshape,
  identity,
  transpose,
  slice,
  concat,
  pack,
  select,
  tile,
  gatherV2,
];

/** Kernel names this package provides gradients for (for tests and diagnostics). */
export const kernelsWithGradients: readonly string[] = gradients.map((g) => g.kernelName);

/**
 * Registers this package's gradient functions with tfjs's global registry, for every kernel that has
 * none yet. Idempotent; called by `createBackend`.
 */
export function registerMissingGradients(): void {
  for (const config of gradients) {
    if (tf.getGradient(config.kernelName) == null) tf.registerGradient(config);
  }
}
