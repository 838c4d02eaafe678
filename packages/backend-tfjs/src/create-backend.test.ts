// Backend selection: "auto" order and its reason line, typed errors for an explicit kind that cannot run,
// and the one-active-backend rule of tfjs's global engine.
import { describe, expect, it } from 'vitest';
import { BackendNotActiveError, BackendUnavailableError, createBackend } from './index.js';

const NATIVE = [
  { kind: 'node-gpu', packageName: '@tensorflow/tfjs-node-gpu' },
  { kind: 'node', packageName: '@tensorflow/tfjs-node' },
] as const;

/** Which native bindings load here, and why the others do not (probed once, before the tests). */
const nativeProbe = new Map<string, BackendUnavailableError | undefined>();
for (const { kind } of NATIVE) {
  try {
    await createBackend(kind);
    nativeProbe.set(kind, undefined);
  } catch (error) {
    if (!(error instanceof BackendUnavailableError)) throw error;
    nativeProbe.set(kind, error);
  }
}
const firstNative = NATIVE.find(({ kind }) => nativeProbe.get(kind) === undefined);

describe('createBackend', () => {
  it('auto uses a native tfjs binding where one loads', async (ctx) => {
    if (!firstNative)
      ctx.skip('no native tfjs binding (@tensorflow/tfjs-node-gpu, @tensorflow/tfjs-node) loads here');
    const { backend, kind, reason } = await createBackend('auto');
    expect(kind).toBe(firstNative!.kind);
    expect(backend.name).toBe(`tfjs-${firstNative!.kind}`);
    expect(reason).toContain(firstNative!.packageName);
    const y = backend.matmul(backend.fill([2, 3], 1), backend.fill([3, 2], 2));
    expect(Array.from(await backend.read(y))).toEqual([6, 6, 6, 6]);
    backend.dispose(y);
  });

  it('auto falls back to wasm (SIMD, one thread) and says in one line that no native binding is installed', async (ctx) => {
    const notInstalled = NATIVE.every(({ kind }) => nativeProbe.get(kind)?.reason === 'not installed');
    if (!notInstalled) ctx.skip('a native tfjs binding is installed here');
    const { backend, kind, reason } = await createBackend('auto');
    expect(kind).toBe('wasm');
    expect(backend.name).toBe('tfjs-wasm');
    expect(reason).toBe(
      'wasm (SIMD, 1 thread): no native tfjs binding (@tensorflow/tfjs-node-gpu, @tensorflow/tfjs-node) is installed',
    );
    expect(reason).not.toContain('\n');
  });

  it('an explicit native kind that is absent throws BackendUnavailableError naming the package and why', async (ctx) => {
    const absent = NATIVE.filter(({ kind }) => nativeProbe.get(kind) !== undefined);
    if (absent.length === 0) ctx.skip('every native tfjs binding loads here');
    for (const { kind, packageName } of absent) {
      const error = await createBackend(kind).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(BackendUnavailableError);
      const typed = error as BackendUnavailableError;
      expect(typed.kind).toBe(kind);
      expect(typed.packageName).toBe(packageName);
      expect(typed.message).toContain(packageName);
      expect(typed.reason.length).toBeGreaterThan(0);
    }
  });

  it('an explicit kind reports "requested explicitly"', async () => {
    const { kind, reason } = await createBackend('cpu');
    expect(kind).toBe('cpu');
    expect(reason).toBe('cpu: requested explicitly');
  });

  it('one tfjs backend is active at a time: the other object throws BackendNotActiveError until activate()', async () => {
    const { backend: cpu } = await createBackend('cpu');
    const { backend: wasm } = await createBackend('wasm');
    expect(() => cpu.fill([1], 1)).toThrow(BackendNotActiveError);
    const onWasm = wasm.fill([2], 3);
    await cpu.activate();
    expect(() => wasm.fill([1], 1)).toThrow(BackendNotActiveError);
    const onCpu = cpu.fill([2], 4);
    expect(Array.from(await cpu.read(onCpu))).toEqual([4, 4]);
    cpu.dispose(onCpu);
    await wasm.activate();
    expect(Array.from(await wasm.read(onWasm))).toEqual([3, 3]);
    wasm.dispose(onWasm);
  });
});
