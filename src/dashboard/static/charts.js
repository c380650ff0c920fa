// Charts: uPlot time series for a subscription's stats, and tiny SVG sparklines for the home view.
// uPlot draws on a canvas and sizes its own elements through the CSSOM (no style attributes), so the
// strict CSP holds; its stylesheet is served as a file.
import uPlot from 'uplot';
import { useEffect, useRef } from 'preact/hooks';
import { html } from './lib.js';

const COLORS = {
  attempts: '#3b5bdb',
  successes: '#2b8a3e',
  failures: '#c92a2a',
  p50: '#1098ad',
  p99: '#e67700',
  backlog: '#7048e8',
};

/**
 * A time-series chart of `buckets` (the stats endpoint's), one line per `series` entry
 * (`{ key, label, color }`), as wide as its box.
 */
export function TimeChart({ title, buckets, series, testid, unit = '', integer = !unit }) {
  const box = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const width = () => Math.max(200, el.clientWidth || 300);
    const data = [
      buckets.map((b) => Date.parse(b.at) / 1000),
      ...series.map((s) => buckets.map((b) => (typeof b[s.key] === 'number' ? b[s.key] : null))),
    ];
    const chart = new uPlot(
      {
        width: width(),
        height: 150,
        cursor: { drag: { x: false, y: false } },
        scales: { y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, (max ?? 1) * 1.15)] } },
        axes: [
          {},
          {
            size: unit ? 64 : 48,
            values: (_u, ticks) => ticks.map((t) => `${t}${unit}`),
            // Counts (attempts, backlog) tick on whole numbers.
            ...(integer ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6] } : {}),
          },
        ],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color ?? COLORS[s.key] ?? '#3b5bdb',
            width: 1.5,
            // Sparse series (latency, sampled backlog) have gaps: their points are drawn.
            points: s.points ? { show: true, size: 5 } : { show: false },
          })),
        ],
      },
      data,
      el,
    );
    const resize = () => chart.setSize({ width: width(), height: 150 });
    addEventListener('resize', resize);
    return () => {
      removeEventListener('resize', resize);
      chart.destroy();
    };
  }, [buckets]);
  return html`<figure class="chart" data-testid=${testid}>
    <figcaption>${title}</figcaption>
    <div class="chart-box" ref=${box}></div>
  </figure>`;
}

/**
 * A sparkline of `values` (nulls are gaps drawn at zero): attempts in the window, failures on top.
 * SVG attributes only, no inline style.
 */
export function Sparkline({ values, bad, testid = 'sparkline', label }) {
  const W = 120;
  const H = 24;
  const max = Math.max(1, ...values.map((v) => v ?? 0), ...(bad ?? []).map((v) => v ?? 0));
  const pts = (vs) =>
    vs
      .map(
        (v, i) =>
          `${((i / Math.max(1, vs.length - 1)) * W).toFixed(1)},${(H - 1 - ((v ?? 0) / max) * (H - 2)).toFixed(1)}`,
      )
      .join(' ');
  return html`<svg
    class="spark"
    viewBox=${`0 0 ${W} ${H}`}
    width=${W}
    height=${H}
    role="img"
    aria-label=${label ?? 'trend'}
    data-testid=${testid}
  >
    <polyline class="spark-all" fill="none" points=${pts(values)} />
    ${bad && bad.some((v) => v) ? html`<polyline class="spark-bad" fill="none" points=${pts(bad)} />` : ''}
  </svg>`;
}
