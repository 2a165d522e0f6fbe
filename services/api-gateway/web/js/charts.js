// Small SVG charts for the admin page, drawn in the page (no library, no
// third-party host). Each chart is a <figure>: the SVG (role="img", named by
// its <title>, described by its <desc>) and a table with the same numbers for
// screen readers and for reading exact values. Sizes are in viewBox units;
// CSS scales the SVG to the width available. A chart is drawn for the width
// it will have (chartWidth: at most 640 units, about one unit a CSS pixel),
// so its 12 px text stays 12 px on a 390 px phone instead of being scaled
// down to 7; the page draws it again when that width changes.
import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W_MAX = 640;
const W_MIN = 300;
const H = 280;
const PAD = { top: 16, right: 12, bottom: 44, left: 56 };
// Series colours (a colour-blind-safe set) and the heatmap's ramp.
export const PALETTE = ['#2166ac', '#e08214', '#1b7837', '#762a83', '#b2182b'];

let uid = 0;

// The width to draw a chart at: the page's width less its margins, within
// [W_MIN, W_MAX] viewBox units.
export function chartWidth() {
  const avail = (document.documentElement.clientWidth || W_MAX) - 32;
  return Math.round(Math.min(W_MAX, Math.max(W_MIN, avail)));
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// A "nice" axis maximum and step for values up to max.
function niceScale(max, integer) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const raw = integer ? Math.max(1, max / 4) : max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((v) => v >= raw);
  return { top: Math.ceil(max / step) * step, step };
}

function svgRoot(id, title, desc, width, height) {
  return s('svg', {
    viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart-svg',
    'aria-labelledby': `${id}-t`, 'aria-describedby': `${id}-d`, preserveAspectRatio: 'xMidYMid meet',
  }, s('title', { id: `${id}-t` }, title), s('desc', { id: `${id}-d` }, desc));
}

function table(caption, head, rows) {
  return h('details', { class: 'chart-table' },
    h('summary', { text: `${caption}: the numbers` }),
    h('div', { class: 'table-wrap' },
      h('table', {},
        h('caption', { text: caption }),
        h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row', text: c }) : h('td', { text: c })))))))));
}

function legend(series) {
  if (series.length < 2) return null;
  return h('ul', { class: 'chart-legend' }, series.map((sr, i) =>
    h('li', {}, h('span', { class: `swatch swatch-${i}`, 'aria-hidden': 'true' }), sr.name)));
}

// Vertical bars: labels along x, one or more series (stacked when stacked).
// fmt formats a value for labels, the description and the table.
// integer: counts (no fractional axis steps).
export function barChart({ id, title, labels, series, stacked = false, fmt = String, integer = false, empty = 'No data in this range.', width = chartWidth() }) {
  id = id || `chart${++uid}`;
  const W = width;
  const totals = labels.map((_, i) => series.reduce((a, sr) => a + (Number(sr.values[i]) || 0), 0));
  const max = stacked ? Math.max(0, ...totals) : Math.max(0, ...series.flatMap((sr) => sr.values.map((v) => Number(v) || 0)));
  const desc = labels.length === 0 ? empty : labels.map((l, i) => `${l}: ${series.map((sr) => (series.length > 1 ? `${sr.name} ${fmt(sr.values[i])}` : fmt(sr.values[i]))).join(', ')}`).join('; ');
  const svg = svgRoot(id, title, desc, W, H);
  const { top, step } = niceScale(max, integer);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const axis = s('g', { class: 'axis', 'aria-hidden': 'true' });
  for (let v = 0; v <= top + step / 2; v += step) {
    axis.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  svg.append(axis);
  const n = Math.max(labels.length, 1);
  const band = plotW / n;
  const groups = stacked ? 1 : series.length;
  const barW = Math.max(2, Math.min(48, (band * 0.7) / groups));
  const bars = s('g', { class: 'bars' });
  // as many x labels as fit side by side (about 7 units a character, 12 apart)
  const longest = Math.max(1, ...labels.map((l) => String(l).length));
  const fit = Math.max(1, Math.floor(plotW / (longest * 7 + 12)));
  const every = Math.ceil(labels.length / fit);
  labels.forEach((label, i) => {
    const x0 = PAD.left + band * i + (band - barW * groups) / 2;
    let base = 0;
    series.forEach((sr, k) => {
      const v = Number(sr.values[i]) || 0;
      const x = stacked ? x0 : x0 + k * barW;
      const y0 = stacked ? base : 0;
      const rect = s('rect', {
        x, y: y(y0 + v), width: barW, height: Math.max(0, y(y0) - y(y0 + v)),
        class: `bar series-${k}`, fill: PALETTE[k % PALETTE.length], 'data-value': v, 'data-label': label,
      }, s('title', {}, `${label}${series.length > 1 ? ` ${sr.name}` : ''}: ${fmt(v)}`));
      bars.append(rect);
      if (stacked) base += v;
    });
    if (i % every === 0) {
      bars.append(s('text', { x: PAD.left + band * i + band / 2, y: H - PAD.bottom + 16, 'text-anchor': 'middle', class: 'xlabel', 'aria-hidden': 'true' }, label));
    }
  });
  svg.append(bars);
  if (labels.length === 0) svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, empty));
  const head = [''].concat(series.length > 1 ? series.map((sr) => sr.name) : [title]);
  if (stacked && series.length > 1) head.push('Total');
  const rows = labels.map((l, i) => [l, ...series.map((sr) => fmt(sr.values[i])), ...(stacked && series.length > 1 ? [fmt(totals[i])] : [])]);
  return h('figure', { class: 'chart', id },
    h('figcaption', { text: title }), svg, legend(series), table(title, head, rows));
}

// A heatmap: rows × columns of values in 0..1 (null: no data), shaded from
// light to dark; each cell shows its value (fmt) and says it in its <title>.
// When the columns do not fit the width (a phone), it is drawn transposed:
// columns down the side, rows across (the description and table unchanged).
export function heatmap({ id, title, rows, columns, values, fmt = (v) => `${Math.round(v * 100)}%`, note = '', width = chartWidth() }) {
  id = id || `chart${++uid}`;
  const cellW = 44;
  const cellH = 30;
  const left = 56;
  const topPad = 24;
  const cells = [];
  rows.forEach((r, i) => columns.forEach((c, j) => {
    const v = values[i][j];
    if (v !== null && v !== undefined) cells.push(`${c} ${r}: ${fmt(v)}`);
  }));
  const desc = (cells.length ? cells.join('; ') : 'No data in this range.') + (note ? ` ${note}` : '');
  const transposed = left + columns.length * cellW + 8 > width && rows.length < columns.length;
  // what is drawn across (dc) and down (dr); at(i, j) is the value drawn in
  // row i, column j; name(i, j) the cell's "column row" name.
  const dc = transposed ? rows : columns;
  const dr = transposed ? columns : rows;
  const at = (i, j) => (transposed ? values[j][i] : values[i][j]);
  const name = (i, j) => (transposed ? `${dr[i]} ${dc[j]}` : `${dc[j]} ${dr[i]}`);
  const svgW = left + dc.length * cellW + 8;
  const height = topPad + Math.max(dr.length, 1) * cellH + 8;
  const svg = svgRoot(id, title, desc, svgW, height);
  if (transposed) svg.classList.add('transposed');
  const g = s('g', { class: 'heat' });
  dc.forEach((c, j) => g.append(s('text', { x: left + j * cellW + cellW / 2, y: 16, 'text-anchor': 'middle', 'aria-hidden': 'true' }, c)));
  dr.forEach((r, i) => {
    const yy = topPad + i * cellH;
    g.append(s('text', { x: left - 6, y: yy + cellH / 2 + 4, 'text-anchor': 'end', 'aria-hidden': 'true' }, r));
    dc.forEach((c, j) => {
      const v = at(i, j);
      const has = v !== null && v !== undefined;
      // light (#f0f4fa) to dark (#08306b) blue by value
      const t = has ? Math.max(0, Math.min(1, v)) : 0;
      const mix = (a, b) => Math.round(a + (b - a) * t);
      const fill = has ? `rgb(${mix(240, 8)},${mix(244, 48)},${mix(250, 107)})` : '#e6e6e6';
      g.append(s('rect', {
        x: left + j * cellW + 1, y: yy + 1, width: cellW - 2, height: cellH - 2, fill,
        class: has ? 'cell' : 'cell none', 'data-value': has ? v : '',
      }, s('title', {}, `${name(i, j)}: ${has ? fmt(v) : 'no sign-ups'}`)));
      g.append(s('text', {
        x: left + j * cellW + cellW / 2, y: yy + cellH / 2 + 4, 'text-anchor': 'middle',
        fill: has && t > 0.5 ? '#ffffff' : '#1a1a1a', class: 'cell-text', 'aria-hidden': 'true',
      }, has ? fmt(v) : '–'));
    });
  });
  svg.append(g);
  const tableRows = [];
  rows.forEach((r, i) => columns.forEach((c, j) => {
    const v = values[i][j];
    if (v !== null && v !== undefined) tableRows.push([`${r}-${c}`, fmt(v)]);
  }));
  return h('figure', { class: 'chart', id },
    h('figcaption', { text: title }), svg, note ? h('p', { class: 'note', text: note }) : null,
    table(title, ['Cohort', 'Retention'], tableRows));
}
