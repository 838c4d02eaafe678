import { createBackend } from '@rrt/backend-tfjs';
import { calibrateExit, measureStepTimes, readoutCost } from '@rrt/batching';
import { loadModel, loadTokenizer, readConfig } from '@rrt/core';
import { encodeDocuments } from '@rrt/eval';
import { type Command, formatTable, UsageError } from '../cli-io.js';
import { backendFlag, numberFlag, parseFlags, readTextFlag } from '../flags.js';
import { hubFlags, modelArgument } from '../model-argument.js';

const percent = (share: number) => `${(100 * share).toFixed(2)} %`;

/** `rrt calibrate-exit`: the confidence threshold of early exits, chosen on held-out text. */
export const calibrateExitCommand: Command = {
  name: 'calibrate-exit',
  summary: 'choose the early-exit confidence threshold τ on held-out text (changed tokens ≤ a budget)',
  help: `rrt calibrate-exit <model-dir> --text <file> [--max-change 0.01] [--min-loops 1] [--max-tokens 4096]
         [--readout-cost <c>|auto] [--slots 8] [--json] [--backend auto|node-gpu|node|wasm|webgpu|cpu]

Runs the recursive model over the held-out text teacher-forced (the text split into documents at blank
lines, each from BOS, cut at the model's context), reading out every position after every loop. Under a
confidence threshold τ a position exits at the first loop (from --min-loops) whose max softmax probability
is ≥ τ; it is "changed" when that loop's argmax differs from the last loop's. Prints the smallest τ at
which, and at every larger τ, the changed share stays within --max-change; its mean exit loop (0-based);
the perplexity with exits (each target scored at its position's exit loop) against full depth; and the
curve τ → changed share, mean exit loop, perplexity.

Each checked loop costs a readout (final norm, head, softmax, read back), paid by every token that gets
there. With --readout-cost it also chooses the loops worth checking: of every set of loops, the one whose
τ costs least per token (loops run + readout cost × readouts), within --max-change; it prints the spec for
rrt generate --exit (confidence:<τ>@<loops>). "auto" times a depth-wise step of --slots rows with and
without its readout on this backend; a number is the readout's cost in passes of the block.

Options:
  --text <file>      held-out text (required; not the text the model was trained on)
  --max-change <f>   largest share of changed tokens, 0…1 (default 0.01)
  --min-loops <n>    loops every token runs before it may exit (default 1)
  --max-tokens <n>   positions to score (default 4096)
  --readout-cost <c> a readout's cost in passes of the block (≥ 0), or auto: measure it
  --slots <n>        with --readout-cost auto: the rows of the timed step (default 8)
  --json             print the result as JSON (τ is null when no threshold keeps within the budget)
  --offline, --hub-url, --cache-dir   when <model-dir> is a Hub repo id (see rrt pull)

Example:
  rrt calibrate-exit models/stories260K-1x5-ee --text ../shared/assets/text/tinystories_val.txt --max-change 0.01`,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, {
      positionals: ['<model-dir>'],
      options: {
        text: { type: 'string' },
        'max-change': { type: 'string', default: '0.01' },
        'min-loops': { type: 'string', default: '1' },
        'max-tokens': { type: 'string', default: '4096' },
        'readout-cost': { type: 'string' },
        slots: { type: 'string' },
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        ...hubFlags,
      },
    });
    if (!values.text) throw new UsageError('missing --text <file>');
    const maxChange = numberFlag('max-change', values['max-change'], { min: 0, max: 1 })!;
    const minLoops = numberFlag('min-loops', values['min-loops'], { integer: true, min: 1 })!;
    const maxTokens = numberFlag('max-tokens', values['max-tokens'], { integer: true, min: 1 })!;
    const measureCost = values['readout-cost'] === 'auto';
    const givenCost = measureCost
      ? undefined
      : numberFlag('readout-cost', values['readout-cost'], { min: 0 });
    if (values.slots !== undefined && !measureCost)
      throw new UsageError('--slots applies to --readout-cost auto');
    const slots = numberFlag('slots', values.slots ?? '8', { integer: true, min: 1 })!;
    const backendKind = backendFlag(values.backend);
    const text = await readTextFlag(values.text);
    const dir = await modelArgument(positionals[0]!, values, io);
    const config = await readConfig(dir);
    const loops = config.recursion?.loops ?? 1;
    if (loops < 2) {
      throw new UsageError(`${dir} is not a recursive model (one loop): there is no early exit to calibrate`);
    }
    if (minLoops > loops) throw new UsageError(`--min-loops ${minLoops}: the model runs ${loops} loops`);
    const tokenizer = await loadTokenizer(dir);
    const documents = encodeDocuments(tokenizer, text);
    const { backend, kind, reason } = await createBackend(backendKind);
    if (!values.json) io.stderr(`backend: ${kind} — ${reason}\n`);
    const model = await loadModel(dir, backend);
    let calibration: Awaited<ReturnType<typeof calibrateExit>>;
    try {
      let cost = givenCost;
      if (measureCost) {
        if (!values.json)
          io.stderr(`timing a depth-wise step of ${slots} rows with and without its readout\n`);
        cost = readoutCost(await measureStepTimes(model, { batchSizes: [slots] }), slots);
      }
      calibration = await calibrateExit(model, documents, {
        maxChange,
        minLoops,
        maxTokens,
        signal: io.signal,
        ...(cost === undefined ? {} : { readoutCost: cost }),
      });
    } finally {
      model.dispose();
    }
    const costAware = values['readout-cost'] !== undefined;
    const threshold = Number.isFinite(calibration.threshold) ? calibration.threshold : null;
    if (values.json) {
      io.stdout(
        `${JSON.stringify({ model: dir, text: values.text, backend: kind, loops, ...calibration, threshold })}\n`,
      );
      return 0;
    }
    const lines = [
      `${dir} on ${values.text}: ${calibration.positions} positions, ${loops} loops, max change ${percent(maxChange)}`,
      threshold === null
        ? `  no threshold keeps the changed share within ${percent(maxChange)}: run without exits`
        : `  τ ${threshold.toPrecision(6)}: changed ${percent(calibration.changedShare)}, mean exit loop ` +
          `${calibration.meanExitLoop.toFixed(3)} of ${loops - 1}, perplexity with exits ${calibration.perplexity.toFixed(4)} ` +
          `(full depth ${calibration.fullDepthPerplexity.toFixed(4)})`,
      `  exits per loop: ${calibration.exitLoopShares.map(percent).join(', ')}`,
      ...(costAware
        ? [
            `  checked at loops ${calibration.checkLoops.length > 0 ? calibration.checkLoops.join(', ') : 'none'} ` +
              `for a readout of ${calibration.readoutCost.toFixed(3)} passes: ${calibration.readoutsPerToken.toFixed(3)} ` +
              `readouts and ${calibration.costPerToken.toFixed(3)} passes per token (no exits: ${(loops + calibration.readoutCost).toFixed(3)})`,
            ...(threshold === null
              ? []
              : [`  use: --exit confidence:${threshold.toPrecision(6)}@${calibration.checkLoops.join(',')}`]),
          ]
        : []),
      '',
      formatTable(
        ['τ', 'changed', 'mean exit loop', 'perplexity with exits'],
        calibration.curve.map((point) => [
          `${point.threshold.toPrecision(6)}${point.threshold === calibration.threshold ? ' (chosen)' : ''}`,
          percent(point.changedShare),
          point.meanExitLoop.toFixed(3),
          point.perplexity.toFixed(4),
        ]),
      ),
    ];
    io.stdout(`${lines.join('\n')}\n`);
    return 0;
  },
};
