import { describe, expect, it } from 'vitest';
import {
  type EvalReport,
  type ModelCost,
  type PerplexityResult,
  perLoopChart,
  renderSvg,
  reportCharts,
  reportJson,
  reportMarkdown,
} from '../src/index.js';

const cost = (nonEmbedding: number): ModelCost => ({
  storedLayers: 1,
  effectiveLayers: 5,
  parameters: {
    embedding: 100,
    sharedBlock: nonEmbedding,
    uniqueLayers: 0,
    lora: 0,
    norms: 0,
    head: 0,
    total: 100 + nonEmbedding,
    nonEmbedding,
  },
  flopsPerToken: { layers: 1, lora: 0, head: 1, attentionPerKey: 1, context: 8, total: 10 },
  kvBytesPerToken: 64,
});

const result = (perplexity: number, loops?: number[]): PerplexityResult => ({
  protocol: 'documents',
  perplexity,
  negativeLogLikelihood: Math.log(perplexity) * 100,
  tokens: 100,
  spans: 3,
  truncatedTokens: 0,
  context: 512,
  ...(loops
    ? {
        loops: loops.map((value, index) => ({
          loopIndex: index,
          depth: index,
          final: index === loops.length - 1,
          negativeLogLikelihood: Math.log(value) * 100,
          perplexity: value,
        })),
      }
    : {}),
});

const report: EvalReport = {
  title: 'stories',
  text: 'held-out.txt',
  backend: 'wasm',
  entries: [
    { model: 'original', perplexity: result(7.25), cost: cost(1000) },
    { model: 'recursive', rank: 0, perplexity: result(31.5, [90.5, 61.25, 31.5]), cost: cost(200) },
    { model: 'relaxed r8', rank: 8, perplexity: result(12.75, [40.5, 20.25, 12.75]), cost: cost(400) },
  ],
};

/** The `aria-label`s of the SVG's point marks: Vega writes each point's data there. */
function pointLabels(svg: string): string[] {
  return [...svg.matchAll(/aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="point"/g)].map(
    (match) => match[1]!,
  );
}

describe('reports', () => {
  it('JSON round-trips', () => {
    expect(JSON.parse(reportJson(report))).toEqual(report);
  });

  it('Markdown holds every model with its perplexity and a per-loop table', () => {
    const markdown = reportMarkdown(report);
    expect(markdown).toContain('| original | — | 7.250 | 100 | 1,100 | 1,000 | 10 | 64 |');
    expect(markdown).toContain('| relaxed r8 | 8 | 12.750 |');
    expect(markdown).toContain('| model | after 1 | after 2 | after 3 |');
    expect(markdown).toContain('| recursive | 90.500 | 61.250 | 31.500 |');
  });

  it('renders the three charts to SVG with every data point in them', async () => {
    const charts = await reportCharts(report);
    expect(Object.keys(charts).sort()).toEqual([
      'parameters-vs-perplexity',
      'per-loop-perplexity',
      'perplexity-vs-rank',
    ]);
    for (const svg of Object.values(charts))
      expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);

    const rank = pointLabels(charts['perplexity-vs-rank']!);
    expect(rank).toHaveLength(2);
    expect(rank.join('\n')).toMatch(/LoRA rank: 0; perplexity: 31\.5/);
    expect(rank.join('\n')).toMatch(/LoRA rank: 8; perplexity: 12\.75/);

    const parameters = charts['parameters-vs-perplexity']!;
    expect(pointLabels(parameters)).toHaveLength(3);
    for (const name of ['original', 'recursive', 'relaxed r8'])
      expect(parameters).toContain(`>${name}</text>`);
    expect(pointLabels(parameters).join('\n')).toMatch(/non-embedding parameters: 1000; perplexity: 7\.25/);

    const loops = pointLabels(charts['per-loop-perplexity']!);
    expect(loops).toHaveLength(6);
    expect(loops.join('\n')).toMatch(/loops run: 1; perplexity: 90\.5/);
    expect(loops.join('\n')).toMatch(/loops run: 3; perplexity: 12\.75/);
  });

  it('renders a chart given directly as a spec', async () => {
    const svg = await renderSvg(perLoopChart([{ model: 'm', loops: 2, perplexity: 3.5 }]));
    expect(pointLabels(svg)).toEqual([expect.stringMatching(/loops run: 2; perplexity: 3\.5/)]);
  });
});
