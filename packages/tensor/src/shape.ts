/** Shape helpers shared by backends and models. @module */
import type { Shape } from './backend.js';

/** Number of elements of a shape (1 for a scalar). */
export function sizeOf(shape: Shape): number {
  let size = 1;
  for (const dim of shape) size *= dim;
  return size;
}

/** Whether two shapes are equal. */
export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((dim, axis) => dim === b[axis]);
}

/** Formats a shape as `[2, 3]` for messages. */
export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}
