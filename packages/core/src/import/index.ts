/**
 * Importers of foreign checkpoint formats into rrt's canonical Hugging Face layout.
 *
 * @module
 */

export { ImportError, type ImportErrorReason } from '../errors.js';
export {
  type ImportLlama2cOptions,
  type ImportLlama2cResult,
  type ImportProgress,
  importLlama2c,
  type Llama2cHeader,
  parseLlama2cHeader,
  permuteRopeRows,
} from './llama2c.js';
