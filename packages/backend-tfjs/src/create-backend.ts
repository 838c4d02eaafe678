/**
 * {@link createBackend}: picks a tfjs backend, initialises it and says what it got and why.
 *
 * NOTE: tfjs packages are imported dynamically, inside the loader of the kind asked for, so that
 * importing this package mutates no library state (each tfjs backend package registers itself on
 * import, and the WebGPU one needs `navigator.gpu` to exist before it is imported). Optional packages
 * (the native bindings, `webgpu`) are imported through a variable so that bundlers do not try to resolve
 * them.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { BackendUnavailableError } from './errors.js';
import { type ResolvedKind, TfjsBackend } from './tfjs-backend.js';

/** What a caller may ask {@link createBackend} for. */
export type BackendKind = 'auto' | ResolvedKind;

/** Options of {@link createBackend}. */
export interface CreateBackendOptions {
  /**
   * Where the wasm backend's `.wasm` binaries are: a folder prefix (ending in `/`) or a map from binary
   * name to path or URL, as tfjs's `setWasmPaths` takes. Default in Node: the `dist` folder of
   * `@tensorflow/tfjs-backend-wasm`; in browsers: tfjs's default (next to the script), which bundlers
   * usually need set.
   */
  wasmPaths?: string | Record<string, string>;
}

/** Result of {@link createBackend}. */
export interface CreatedBackend {
  /** The backend, ready to use. */
  backend: TfjsBackend;
  /** What it runs on. */
  kind: ResolvedKind;
  /** One line: what was chosen and why, e.g. why `"auto"` fell back to wasm. */
  reason: string;
}

const NATIVE_PACKAGES = { 'node-gpu': '@tensorflow/tfjs-node-gpu', node: '@tensorflow/tfjs-node' } as const;
const WASM_PACKAGE = '@tensorflow/tfjs-backend-wasm';
const WASM_BINARIES = [
  'tfjs-backend-wasm.wasm',
  'tfjs-backend-wasm-simd.wasm',
  'tfjs-backend-wasm-threaded-simd.wasm',
] as const;

const isNode = (): boolean =>
  typeof process !== 'undefined' && typeof process.versions === 'object' && !!process.versions.node;

/** Imports a module whose name bundlers must not try to resolve. */
const importOptional = (specifier: string): Promise<unknown> => import(/* @vite-ignore */ specifier);

/**
 * Whether Node can resolve a package from here. Asked before importing, to tell "not installed" from
 * "fails to load" (import errors carry no reliable code across Node, bundlers and test runners).
 */
async function isResolvable(packageName: string): Promise<boolean> {
  const { createRequire } = await import('node:module');
  try {
    createRequire(import.meta.url).resolve(packageName);
    return true;
  } catch {
    return false;
  }
}

/** First line of an error's message. */
function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.trim();
}

/** Activates tfjs backend `name`; throws {@link BackendUnavailableError} when tfjs cannot initialise it. */
async function activate(kind: ResolvedKind, packageName: string, name: string): Promise<TfjsBackend> {
  let ok: boolean;
  try {
    ok = await tf.setBackend(name);
  } catch (error) {
    throw new BackendUnavailableError(
      kind,
      packageName,
      `tfjs backend "${name}" failed: ${firstLine(error)}`,
    );
  }
  if (!ok)
    throw new BackendUnavailableError(kind, packageName, `tfjs backend "${name}" failed to initialise`);
  return new TfjsBackend(kind, name);
}

async function loadNative(kind: 'node-gpu' | 'node'): Promise<TfjsBackend> {
  const packageName = NATIVE_PACKAGES[kind];
  if (!isNode()) throw new BackendUnavailableError(kind, packageName, 'native bindings need Node.js');
  if (!(await isResolvable(packageName)))
    throw new BackendUnavailableError(kind, packageName, 'not installed');
  try {
    await importOptional(packageName);
  } catch (error) {
    throw new BackendUnavailableError(kind, packageName, `installed but fails to load: ${firstLine(error)}`);
  }
  // Both packages register their backend under the name "tensorflow".
  return activate(kind, packageName, 'tensorflow');
}

async function loadWasm(options: CreateBackendOptions): Promise<TfjsBackend> {
  let wasm: typeof import('@tensorflow/tfjs-backend-wasm');
  try {
    wasm = await import('@tensorflow/tfjs-backend-wasm');
  } catch (error) {
    throw new BackendUnavailableError('wasm', WASM_PACKAGE, firstLine(error));
  }
  // The paths can be set only before the wasm module is first initialised.
  if (tf.findBackend('wasm') == null) {
    const paths = options.wasmPaths ?? (isNode() ? await nodeWasmPaths() : undefined);
    if (paths !== undefined) wasm.setWasmPaths(paths);
  }
  return activate('wasm', WASM_PACKAGE, 'wasm');
}

/** Absolute paths of the wasm binaries in Node (tfjs's default, relative to the script, fails there). */
async function nodeWasmPaths(): Promise<Record<string, string>> {
  const { createRequire } = await import('node:module');
  const path = await import('node:path');
  const entry = createRequire(import.meta.url).resolve(WASM_PACKAGE); // …/dist/tf-backend-wasm.node.js
  const dist = path.dirname(entry);
  return Object.fromEntries(WASM_BINARIES.map((name) => [name, path.join(dist, name)]));
}

/** One line describing the wasm build tfjs chose. */
async function describeWasm(): Promise<string> {
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const wasm = (await import(
    '@tensorflow/tfjs-backend-wasm'
  )) as typeof import('@tensorflow/tfjs-backend-wasm');
  const threads = wasm.getThreadsCount();
  return `wasm (${simd ? 'SIMD' : 'no SIMD'}, ${threads} thread${threads === 1 ? '' : 's'})`;
}

interface GpuAdapterInfo {
  vendor?: string;
  architecture?: string;
  description?: string;
}
interface GpuNavigator {
  gpu?: { requestAdapter(): Promise<{ info?: GpuAdapterInfo } | null> };
}

/** The WebGPU adapter's description, for the reason line (e.g. "SwiftShader Device (Subzero)"). */
let webgpuAdapterName = '';

async function loadWebgpu(): Promise<TfjsBackend> {
  const packageName = '@tensorflow/tfjs-backend-webgpu';
  const scope = globalThis as { navigator?: GpuNavigator };
  if (!scope.navigator?.gpu) {
    if (!isNode())
      throw new BackendUnavailableError('webgpu', packageName, 'this browser has no navigator.gpu');
    await installNodeWebgpu();
  }
  const adapter = await scope.navigator!.gpu!.requestAdapter();
  if (adapter == null) {
    const hint = isNode()
      ? ' (Node: Dawn needs a Vulkan driver, e.g. VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json)'
      : '';
    throw new BackendUnavailableError('webgpu', packageName, `no WebGPU adapter found${hint}`);
  }
  const info = adapter.info;
  webgpuAdapterName = [info?.description, info?.vendor, info?.architecture].filter(Boolean).join(', ');
  try {
    await import('@tensorflow/tfjs-backend-webgpu');
  } catch (error) {
    throw new BackendUnavailableError('webgpu', packageName, firstLine(error));
  }
  return activate('webgpu', packageName, 'webgpu');
}

/**
 * Gives Node a `navigator.gpu` from the `webgpu` package (Dawn), and the WebGPU globals
 * (`GPUBufferUsage`, …) that tfjs's WebGPU backend reads.
 */
async function installNodeWebgpu(): Promise<void> {
  let dawn: { create(options: string[]): unknown; globals: Record<string, unknown> };
  if (!(await isResolvable('webgpu'))) {
    const why = 'WebGPU in Node needs the optional package "webgpu", which is not installed';
    throw new BackendUnavailableError('webgpu', 'webgpu', why);
  }
  try {
    dawn = (await importOptional('webgpu')) as typeof dawn;
  } catch (error) {
    throw new BackendUnavailableError(
      'webgpu',
      'webgpu',
      `the "webgpu" package fails to load: ${firstLine(error)}`,
    );
  }
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  const scope = globalThis as { navigator?: object };
  if (scope.navigator === undefined) scope.navigator = { gpu };
  else Object.defineProperty(scope.navigator, 'gpu', { value: gpu, configurable: true });
}

async function loadCpu(): Promise<TfjsBackend> {
  const packageName = '@tensorflow/tfjs-backend-cpu';
  try {
    await import('@tensorflow/tfjs-backend-cpu');
  } catch (error) {
    throw new BackendUnavailableError('cpu', packageName, firstLine(error));
  }
  const backend = await activate('cpu', packageName, 'cpu');
  // NOTE: tfjs's cpu backend prints a banner advising tfjs-node on its first tensor in Node; the reason
  // line of createBackend already says why cpu was chosen, so mark its first use as done.
  const cpu = tf.findBackend('cpu') as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
  return backend;
}

async function load(kind: ResolvedKind, options: CreateBackendOptions): Promise<TfjsBackend> {
  switch (kind) {
    case 'node-gpu':
    case 'node':
      return loadNative(kind);
    case 'wasm':
      return loadWasm(options);
    case 'webgpu':
      return loadWebgpu();
    case 'cpu':
      return loadCpu();
  }
}

/** How a kind is described in the reason line. */
async function describe(kind: ResolvedKind): Promise<string> {
  if (kind === 'wasm') return describeWasm();
  if (kind === 'node-gpu' || kind === 'node') return `${kind} (${NATIVE_PACKAGES[kind]})`;
  if (kind === 'webgpu' && webgpuAdapterName !== '') return `webgpu (${webgpuAdapterName})`;
  return kind;
}

/**
 * Creates an rrt {@link Backend} on tfjs.
 *
 * `"auto"` tries, in Node: `@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node` (both optional peer
 * dependencies; any failure to load one is a fallback, never a crash), wasm, cpu; in browsers: WebGPU,
 * wasm, cpu. An explicit kind that cannot run throws {@link BackendUnavailableError}.
 *
 * tfjs has one global engine: creating a backend makes its tfjs backend the active one, and a backend
 * object created earlier on another kind throws `BackendNotActiveError` until its `activate()` is
 * awaited. Creating a backend also registers gradient functions for its ops with tfjs (see
 * `gradients.ts`).
 *
 * @param kind - what to run on; default `"auto"`.
 * @example
 * ```ts
 * const { backend, kind, reason } = await createBackend('auto');
 * console.log(kind, reason); // wasm  wasm (SIMD, 1 thread): no native tfjs binding (…) is installed
 * ```
 */
export async function createBackend(
  kind: BackendKind = 'auto',
  options: CreateBackendOptions = {},
): Promise<CreatedBackend> {
  if (kind !== 'auto') {
    const backend = await load(kind, options);
    return { backend, kind, reason: `${await describe(kind)}: requested explicitly` };
  }
  const order: ResolvedKind[] = isNode() ? ['node-gpu', 'node', 'wasm', 'cpu'] : ['webgpu', 'wasm', 'cpu'];
  const failures: BackendUnavailableError[] = [];
  for (const candidate of order) {
    try {
      const backend = await load(candidate, options);
      const reason = `${await describe(candidate)}: ${explainFallbacks(failures)}`;
      return { backend, kind: candidate, reason };
    } catch (error) {
      if (!(error instanceof BackendUnavailableError)) throw error;
      failures.push(error);
    }
  }
  throw new BackendUnavailableError('auto', 'any tfjs backend', failures.map((f) => f.message).join('; '));
}

/** Says why the candidates before the chosen one were skipped, in one line. */
function explainFallbacks(failures: readonly BackendUnavailableError[]): string {
  if (failures.length === 0) return 'first choice, available';
  const notInstalled = failures.filter((f) => f.reason === 'not installed');
  const others = failures.filter((f) => f.reason !== 'not installed');
  const parts: string[] = [];
  if (notInstalled.length > 0 && notInstalled.every((f) => f.kind === 'node-gpu' || f.kind === 'node')) {
    parts.push(`no native tfjs binding (${notInstalled.map((f) => f.packageName).join(', ')}) is installed`);
  } else if (notInstalled.length > 0) {
    parts.push(`not installed: ${notInstalled.map((f) => f.packageName).join(', ')}`);
  }
  for (const f of others) parts.push(`${f.kind} unavailable (${f.reason})`);
  return parts.join('; ');
}
