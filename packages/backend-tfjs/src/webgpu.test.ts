// The conformance suite on tfjs's WebGPU backend. In Node it runs on Dawn (the `webgpu` package), which
// needs a Vulkan driver: CI installs Debian's chromium for its SwiftShader driver (.ci/webgpu-setup.sh).
// Skips, saying why, when no adapter is found. One backend per file: tfjs's engine is global.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describeBackendConformance } from '@rrt/tensor/testing';
import { BackendUnavailableError, createBackend, type TfjsBackend } from './index.js';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
// Point the Vulkan loader at SwiftShader when nothing else is configured (it reads these when Dawn
// creates its instance); a machine with a real GPU driver can set VK_ICD_FILENAMES itself.
if (process.env['VK_ICD_FILENAMES'] === undefined && existsSync(SWIFTSHADER_ICD)) {
  process.env['VK_ICD_FILENAMES'] = SWIFTSHADER_ICD;
}
process.env['XDG_RUNTIME_DIR'] ??= tmpdir();

let backend: TfjsBackend | undefined;
let skip: string | undefined;
try {
  backend = (await createBackend('webgpu')).backend;
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  skip = error.reason;
}

describeBackendConformance('tfjs-webgpu', async () => backend!, { skip });
