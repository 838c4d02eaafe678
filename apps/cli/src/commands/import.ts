import { importLlama2c } from '@rrt/core';
import { type Command, progressReporter, UsageError } from '../cli-io.js';
import { outputDirFlag, parseFlags } from '../flags.js';
import { asFlagError, clearStaleOutputs } from '../output.js';

export const importCommand: Command = {
  name: 'import llama2c',
  summary: 'import a llama2.c checkpoint and tokenizer into the Hugging Face layout',
  help: `rrt import llama2c <checkpoint.bin> --tokenizer <tok.bin|tokenizer.model> --out <dir> [--overwrite] [--json]

Reads a llama2.c "legacy" fp32 checkpoint and its tokenizer and writes config.json, model.safetensors,
tokenizer.json and generation_config.json to <dir> (written to a temporary directory, renamed at the end).
The rows of wq and wk are permuted from llama2.c's adjacent-pair RoPE to Hugging Face's rotate-half.

Example:
  rrt import llama2c ../shared/assets/stories260K/stories260K.bin \\
    --tokenizer ../shared/assets/stories260K/tok512.bin --out models/stories260K`,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<format>', '<checkpoint>'],
      required: 0,
      options: {
        tokenizer: { type: 'string' },
        out: { type: 'string' },
        overwrite: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    });
    const [format, checkpointPath] = positionals;
    if (format !== 'llama2c')
      throw new UsageError(`unknown import format "${format ?? ''}" (supported: llama2c)`);
    if (!checkpointPath) throw new UsageError('missing <checkpoint> path');
    if (!values.tokenizer) throw new UsageError('missing --tokenizer <file>');
    const outDir = await outputDirFlag(values.out, values.overwrite);
    await clearStaleOutputs(outDir, io);
    const progress = progressReporter(io, 'import');
    let result: Awaited<ReturnType<typeof importLlama2c>>;
    try {
      result = await importLlama2c({
        checkpointPath,
        tokenizerPath: values.tokenizer,
        outDir,
        overwrite: values.overwrite,
        signal: io.signal,
        onProgress: (event) => {
          if (event.stage === 'tensor') progress(event.index + 1, event.count, event.name);
        },
      });
    } catch (error) {
      throw asFlagError(error, {});
    }
    if (values.json) {
      io.stdout(`${JSON.stringify({ outDir: result.outDir, header: result.header, files: result.files })}\n`);
    } else {
      const { header } = result;
      io.stdout(
        `imported ${checkpointPath} → ${result.outDir}\n` +
          `  dim ${header.dim}, hidden ${header.hiddenDim}, layers ${header.nLayers}, heads ${header.nHeads}/${header.nKvHeads}, ` +
          `vocab ${header.vocabSize}, seq ${header.seqLen}\n  files: ${result.files.join(', ')}\n`,
      );
    }
    return 0;
  },
};
