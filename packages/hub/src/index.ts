/**
 * `@rrt/hub`: pulls model repositories from the Hugging Face Hub (through its own client,
 * `@huggingface/hub`) into a local cache shared with the Python `huggingface_hub`: resumable downloads,
 * every file checked against the hash the Hub lists, and an offline mode that opens no socket.
 *
 * @packageDocumentation
 */
export {
  findCachedSnapshot,
  type HashAlgorithm,
  type RepoCachePaths,
  repoCachePaths,
  type SnapshotFile,
  type SnapshotManifest,
} from './cache.js';
export {
  HubChecksumError,
  HubOfflineError,
  HubRequestError,
  HubTransferError,
  RepoReferenceError,
} from './errors.js';
export { DEFAULT_HUB_URL, type HubOptions, type ResolvedHubOptions, resolveHubOptions } from './options.js';
export {
  DEFAULT_INCLUDE,
  type PulledFile,
  type PulledModel,
  type PullOptions,
  type PullProgress,
  pullModel,
} from './pull.js';
export {
  DEFAULT_REVISION,
  isCommitHash,
  parseRepoReference,
  type RepoReference,
  repoIdProblem,
} from './reference.js';
export { type ModelSource, type ResolvedModel, resolveModelReference } from './resolve.js';
export { hashFile, type TransferOutcome } from './transfer.js';
