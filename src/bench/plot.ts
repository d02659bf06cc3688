// Line charts for benchmark and experiment results: a small spec → vega-lite → SVG → PNG (resvg).
// Vega renders headless (renderer 'none' + toSVG), resvg rasterises with the system fonts, so a
// figure needs no browser and comes out identical on every machine with the same fonts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';

export interface Series {
  /** legend entry (also the colour key: series with the same name share a colour) */
  name: string;
  points: { x: number; y: number }[];
  /** dashed line (e.g. prefill engines, as in the seed's Grafana panels); default solid */
  dashed?: boolean;
}

export interface Axis {
  title: string;
  log?: boolean;
  /** force the axis to start at zero (linear axes only; default: vega-lite's choice) */
  zero?: boolean;
}

export interface LineChart {
  /** 'bar': one bar per series (its first point's y), x = the series names; default 'line' */
  kind?: 'line' | 'bar';
  title: string;
  x: Axis;
  y: Axis;
  series: Series[];
  /** draw a dot on every point (default true: sweeps have few points) */
  points?: boolean;
  width?: number;
  height?: number;
}

export interface RenderOptions {
  /** charts per row when several are rendered together (default 1) */
  columns?: number;
  /** PNG scale relative to the SVG's size (default 2, for sharp figures in READMEs) */
  scale?: number;
}

function layer(c: LineChart): Record<string, unknown> {
  const rows = c.series.flatMap((s) =>
    s.points
      // a log axis cannot show 0 or negatives; non-finite values are missing measurements
      .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!c.x.log || p.x > 0) && (!c.y.log || p.y > 0))
      .map((p) => ({ series: s.name, x: p.x, y: p.y, stroke: s.dashed ? 'dashed' : 'solid' })),
  );
  const scale = (a: Axis) => (a.log ? { type: 'log' } : a.zero === undefined ? {} : { zero: a.zero });
  const order = [...new Set(c.series.map((s) => s.name))];
  if (c.kind === 'bar') {
    return {
      title: c.title,
      width: c.width ?? 420,
      height: c.height ?? 260,
      data: { values: rows },
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'series', type: 'nominal', title: c.x.title || null, sort: order, axis: { labelAngle: -25, labelLimit: 400 } },
        y: { field: 'y', type: 'quantitative', title: c.y.title, scale: scale(c.y) },
        color: { field: 'series', type: 'nominal', sort: order, legend: null },
      },
    };
  }
  return {
    title: c.title,
    width: c.width ?? 420,
    height: c.height ?? 260,
    data: { values: rows },
    mark: { type: 'line', point: c.points ?? true, strokeWidth: 2 },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: c.x.title, scale: scale(c.x) },
      y: { field: 'y', type: 'quantitative', title: c.y.title, scale: scale(c.y) },
      color: { field: 'series', type: 'nominal', title: null, sort: order, legend: { orient: 'bottom', columns: 2, labelLimit: 320 } },
      strokeDash: { field: 'stroke', type: 'nominal', scale: { domain: ['solid', 'dashed'], range: [[1, 0], [6, 4]] }, legend: null },
      detail: { field: 'series', type: 'nominal' },
    },
  };
}

/** Render one chart or several (a grid, `columns` per row) to SVG text and PNG bytes. */
export async function renderCharts(charts: LineChart | LineChart[], opts: RenderOptions = {}): Promise<{ svg: string; png: Buffer }> {
  const list = Array.isArray(charts) ? charts : [charts];
  if (!list.length) throw new Error('renderCharts: no chart to render');
  const spec =
    list.length === 1
      ? { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', background: 'white', ...layer(list[0]!) }
      : {
          $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
          background: 'white',
          columns: opts.columns ?? 1,
          concat: list.map(layer),
          resolve: { scale: { color: 'independent', strokeDash: 'independent' } },
        };
  const compiled = vl.compile(spec as unknown as vl.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = new Resvg(svg, { fitTo: { mode: 'zoom', value: opts.scale ?? 2 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } })
    .render()
    .asPng();
  return { svg, png: Buffer.from(png) };
}

/** Write `<base>.svg` and `<base>.png`; returns the two paths. */
export async function writeCharts(base: string, charts: LineChart | LineChart[], opts: RenderOptions = {}): Promise<{ svg: string; png: string }> {
  const { svg, png } = await renderCharts(charts, opts);
  mkdirSync(dirname(base), { recursive: true });
  writeFileSync(`${base}.svg`, svg);
  writeFileSync(`${base}.png`, png);
  return { svg: `${base}.svg`, png: `${base}.png` };
}
