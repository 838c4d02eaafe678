/**
 * Reports over evaluated models: JSON for machines, Markdown tables for people, SVG charts for both.
 *
 * @module
 */
import {
  type ChartSpec,
  type LoopPoint,
  type ParameterPoint,
  parametersVsPerplexityChart,
  perLoopChart,
  perplexityVsRankChart,
  type RankPoint,
  renderSvg,
} from './charts.js';
import type { ModelCost } from './cost.js';
import type { PerplexityResult } from './perplexity.js';

/** One evaluated model. */
export interface EvalEntry {
  /** Name in tables and charts. */
  model: string;
  /** LoRA rank for recursive (0) and relaxed models; absent for an original model. */
  rank?: number;
  /** Line of the perplexity-vs-rank chart it belongs to (an init method, say); default `"relaxed"`. */
  series?: string;
  perplexity: PerplexityResult;
  cost: ModelCost;
}

/** A set of evaluated models on one text. */
export interface EvalReport {
  title: string;
  /** What was scored: the text file, which part of it, the protocol's settings. */
  text: string;
  /** The tensor backend that ran it. */
  backend: string;
  entries: EvalEntry[];
}

/** The report as indented JSON. */
export function reportJson(report: EvalReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/**
 * The report as Markdown: a table of perplexity and cost per model, and one of per-loop perplexity
 * when any entry has it.
 *
 * @example
 * ```ts
 * await writeFile('report.md', reportMarkdown(report));
 * ```
 */
export function reportMarkdown(report: EvalReport): string {
  const lines = [`# ${report.title}`, '', `Text: ${report.text}. Backend: ${report.backend}.`, ''];
  lines.push(
    markdownTable(
      [
        'model',
        'rank',
        'perplexity',
        'tokens',
        'parameters',
        'non-embedding',
        'FLOPs/token',
        'KV bytes/token',
      ],
      report.entries.map(({ model, rank, perplexity, cost }) => [
        model,
        rank === undefined ? '—' : String(rank),
        perplexity.perplexity.toFixed(3),
        count(perplexity.tokens),
        count(cost.parameters.total),
        count(cost.parameters.nonEmbedding),
        count(cost.flopsPerToken.total),
        count(cost.kvBytesPerToken),
      ]),
    ),
  );
  const withLoops = report.entries.filter((entry) => entry.perplexity.loops !== undefined);
  if (withLoops.length > 0) {
    const readouts = Math.max(...withLoops.map((entry) => entry.perplexity.loops!.length));
    lines.push(
      '',
      'Perplexity read out after each loop (what an early exit there gives):',
      '',
      markdownTable(
        ['model', ...Array.from({ length: readouts }, (_, index) => `after ${index + 1}`)],
        withLoops.map((entry) => [
          entry.model,
          ...Array.from({ length: readouts }, (_, index) => {
            const loop = entry.perplexity.loops![index];
            return loop === undefined ? '' : loop.perplexity.toFixed(3);
          }),
        ]),
      ),
    );
  }
  const flops = report.entries[0]?.cost.flopsPerToken.context;
  if (flops !== undefined) lines.push('', `FLOPs/token at a context of ${flops} keys.`);
  return `${lines.join('\n')}\n`;
}

/** The chart specs a report's entries have data for, by file stem. */
export function reportChartSpecs(report: EvalReport): Record<string, ChartSpec> {
  const specs: Record<string, ChartSpec> = {};
  const ranked: RankPoint[] = report.entries
    .filter((entry) => entry.rank !== undefined)
    .map((entry) => ({
      series: entry.series ?? 'relaxed',
      rank: entry.rank!,
      perplexity: entry.perplexity.perplexity,
    }));
  if (ranked.length > 0) specs['perplexity-vs-rank'] = perplexityVsRankChart(ranked);
  const parameters: ParameterPoint[] = report.entries.map((entry) => ({
    model: entry.model,
    parameters: entry.cost.parameters.nonEmbedding,
    perplexity: entry.perplexity.perplexity,
  }));
  if (parameters.length > 0) specs['parameters-vs-perplexity'] = parametersVsPerplexityChart(parameters);
  const loops: LoopPoint[] = report.entries.flatMap((entry) =>
    (entry.perplexity.loops ?? []).map((loop, index) => ({
      model: entry.model,
      loops: index + 1,
      perplexity: loop.perplexity,
    })),
  );
  if (loops.length > 0) specs['per-loop-perplexity'] = perLoopChart(loops);
  return specs;
}

/**
 * The report's charts as SVG documents, by file stem (`perplexity-vs-rank`, `parameters-vs-perplexity`,
 * `per-loop-perplexity`), each present when some entry has its data.
 */
export async function reportCharts(report: EvalReport): Promise<Record<string, string>> {
  const charts: Record<string, string> = {};
  for (const [name, spec] of Object.entries(reportChartSpecs(report))) charts[name] = await renderSvg(spec);
  return charts;
}

function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function count(value: number): string {
  return value.toLocaleString('en-US');
}
