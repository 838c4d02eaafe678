import { createBackend } from '@rrt/backend-tfjs';
import { type ExportOptions, exportUnrolled } from '@rrt/convert';
import { type CliIO, type Command, progressReporter, UsageError } from '../cli-io.js';
import { backendFlag, backendKinds, dtypeFlag, oneOf, outputDirFlag, parseFlags } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';
import { asFlagError, clearStaleOutputs } from '../output.js';

/** `rrt export --unroll`: a recursive / relaxed model as N plain layers (a vanilla HF checkpoint). */
export const exportCommand: Command = {
  name: 'export',
  summary:
    'export a recursive or relaxed model as a vanilla checkpoint (--unroll: LoRA merged into N layers)',
  help: `rrt export <source> --unroll --out <dir> [--dtype f32|f16|bf16] [--backend <b>] [--overwrite] [--json]

Writes each of the N effective layers as a plain layer: the shared weights of its block layer plus
its loop's LoRA, merged (W_shared + (α/r)·B·A, computed in float64). The config loses its recursion
section, so any engine that reads Hugging Face Llama / Qwen2 / Gemma checkpoints can run the result.
A model may also be a Hub repo id (owner/name[@revision]), pulled into the cache first;
--offline, --hub-url and --cache-dir work as for rrt pull.

Options:
  --unroll          merge LoRA into N plain layers (the only export for now; required)
  --out <dir>       output directory (must not exist unless --overwrite)
  --dtype <d>       output dtype (default: the source's)
  --backend <b>     tensor backend for the B·A products: auto (default) | node-gpu | node | wasm | cpu | none
  --overwrite       replace an existing output directory
  --json            print the result as JSON

Example:
  rrt export models/tinyllama-rrt --unroll --out models/tinyllama-rrt-unrolled`,
  async run(args: string[], io: CliIO): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<source>'],
      options: {
        unroll: { type: 'boolean', default: false },
        out: { type: 'string' },
        dtype: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        overwrite: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    const source = await modelArgument(positionals[0]!, values, io);
    if (!values.unroll) throw new UsageError('say what to export: --unroll (the only export for now)');
    const out = await outputDirFlag(values.out, values.overwrite);
    const options: ExportOptions = { overwrite: values.overwrite, signal: io.signal };
    const outputDtype = dtypeFlag('dtype', values.dtype);
    if (outputDtype) options.outputDtype = outputDtype;
    const backendKind = oneOf('backend', values.backend, [...backendKinds, 'none']);
    if (backendKind !== 'none') {
      const created = await createBackend(backendFlag(backendKind));
      options.backend = created.backend;
      if (!values.json) io.stderr(`backend: ${created.kind}: ${created.reason}\n`);
    }
    await clearStaleOutputs(out, io);
    const progress = progressReporter(io, 'export');
    options.onProgress = ({ done, total, tensor }) => progress(done, total, tensor);
    let result: Awaited<ReturnType<typeof exportUnrolled>>;
    try {
      result = await exportUnrolled(source, out, options);
    } catch (error) {
      throw asFlagError(error, { outputDtype: '--dtype', overwrite: '--overwrite' });
    }
    if (values.json) {
      io.stdout(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      io.stdout(
        `wrote ${result.outDir}: ${result.numLayers} plain layers, ${new Intl.NumberFormat('en-US').format(result.parameters)} parameters, ${result.outputDtype}, in ${result.seconds.toFixed(1)} s\n`,
      );
    }
    return 0;
  },
};
