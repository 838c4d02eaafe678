import { parseArgs } from 'node:util';
import { type BackendKind, createBackend } from '@rrt/backend-tfjs';
import { type ExportOptions, exportUnrolled, InvalidOptionError } from '@rrt/convert';
import { type CliIO, type Command, progressReporter, UsageError } from '../cli-io.js';
import { dtypeFlag } from '../flags.js';

/** `rrt export --unroll`: a recursive / relaxed model as N plain layers (a vanilla HF checkpoint). */
export const exportCommand: Command = {
  name: 'export',
  summary:
    'export a recursive or relaxed model as a vanilla checkpoint (--unroll: LoRA merged into N layers)',
  help: `rrt export <source> --unroll --out <dir> [--dtype f32|f16|bf16] [--backend <b>] [--overwrite] [--json]

Writes each of the N effective layers as a plain layer: the shared weights of its block layer plus
its loop's LoRA, merged (W_shared + (α/r)·B·A, computed in float64). The config loses its recursion
section, so any engine that reads Hugging Face Llama / Qwen2 / Gemma checkpoints can run the result.

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
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        unroll: { type: 'boolean', default: false },
        out: { type: 'string' },
        dtype: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        overwrite: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    });
    const [source, ...extra] = positionals;
    if (!source || extra.length > 0) throw new UsageError('expected exactly one source directory');
    if (!values.unroll) throw new UsageError('say what to export: --unroll (the only export for now)');
    if (!values.out) throw new UsageError('--out <dir> is required');
    const options: ExportOptions = { overwrite: values.overwrite };
    const outputDtype = dtypeFlag('dtype', values.dtype);
    if (outputDtype) options.outputDtype = outputDtype;
    if (values.backend !== 'none') {
      const created = await createBackend(values.backend as BackendKind);
      options.backend = created.backend;
      if (!values.json) io.stderr(`backend: ${created.kind}: ${created.reason}\n`);
    }
    const progress = progressReporter(io, 'export');
    options.onProgress = ({ done, total, tensor }) => progress(done, total, tensor);
    let result: Awaited<ReturnType<typeof exportUnrolled>>;
    try {
      result = await exportUnrolled(source, values.out, options);
    } catch (error) {
      if (error instanceof InvalidOptionError) throw new UsageError(error.message);
      throw error;
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
