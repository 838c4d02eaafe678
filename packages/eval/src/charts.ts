/**
 * Charts of evaluation results: Vega-Lite specs, rendered to SVG by Vega without a browser or canvas.
 *
 * @module
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** A Vega-Lite specification (re-exported so callers can adjust a chart before rendering it). */
export type ChartSpec = TopLevelSpec;

/** One model's point on {@link perplexityVsRankChart}. */
export interface RankPoint {
  /** Which line the point belongs to (an init method, say). */
  series: string;
  /** LoRA rank (0: recursive without LoRA). */
  rank: number;
  perplexity: number;
}

/** One model's point on {@link parametersVsPerplexityChart}. */
export interface ParameterPoint {
  model: string;
  /** Non-embedding parameters. */
  parameters: number;
  perplexity: number;
}

/** One readout on {@link perLoopChart}. */
export interface LoopPoint {
  model: string;
  /** Loops run before the readout, from 1. */
  loops: number;
  perplexity: number;
}

const schema = 'https://vega.github.io/schema/vega-lite/v6.json';

/**
 * Perplexity on a log scale: a converted model before uptraining sits orders of magnitude above the
 * original (1e5 against 4 on stories260K), and a linear axis flattens everything else to a line.
 */
const perplexityAxis = {
  field: 'perplexity',
  type: 'quantitative',
  title: 'perplexity',
  axis: { title: 'perplexity (log scale)' },
  scale: { type: 'log' },
} as const;

/** Legends long enough for model names such as "relaxed (average), uptrained (KD)". */
const legend = { labelLimit: 320 } as const;

/** Perplexity against LoRA rank, one line per series. */
export function perplexityVsRankChart(points: readonly RankPoint[]): ChartSpec {
  return {
    $schema: schema,
    title: 'Perplexity vs LoRA rank',
    width: 360,
    height: 240,
    data: { values: points.map((point) => ({ ...point })) },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'rank', type: 'quantitative', title: 'LoRA rank' },
      y: perplexityAxis,
      color: { field: 'series', type: 'nominal', title: null, legend },
    },
  };
}

/** Perplexity against non-embedding parameters, one labelled point per model. */
export function parametersVsPerplexityChart(points: readonly ParameterPoint[]): ChartSpec {
  const encoding = {
    x: { field: 'parameters', type: 'quantitative', title: 'non-embedding parameters' },
    y: perplexityAxis,
  } as const;
  return {
    $schema: schema,
    title: 'Parameters vs perplexity',
    width: 360,
    height: 240,
    data: { values: points.map((point) => ({ ...point })) },
    layer: [
      { mark: { type: 'point', filled: true }, encoding: { ...encoding, tooltip: { field: 'model' } } },
      {
        mark: { type: 'text', align: 'left', dx: 6, dy: -6 },
        encoding: { ...encoding, text: { field: 'model', type: 'nominal' } },
      },
    ],
  };
}

/** Perplexity after each loop (an early exit there), one line per model. */
export function perLoopChart(points: readonly LoopPoint[]): ChartSpec {
  return {
    $schema: schema,
    title: 'Perplexity per loop',
    width: 360,
    height: 240,
    data: { values: points.map((point) => ({ ...point })) },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'loops', type: 'quantitative', title: 'loops run', axis: { tickMinStep: 1 } },
      y: perplexityAxis,
      color: { field: 'model', type: 'nominal', title: null, legend },
    },
  };
}

/**
 * Renders a Vega-Lite spec to an SVG document, headless (Vega's `renderer: 'none'`).
 *
 * @example
 * ```ts
 * const svg = await renderSvg(perLoopChart([{ model: '1×5 r16', loops: 1, perplexity: 40.2 }]));
 * await writeFile('per-loop.svg', svg);
 * ```
 */
export async function renderSvg(spec: ChartSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
