// Admin (users in ADMIN_EMAILS; GET /api/me says is_admin, and the routes
// answer 403 to anyone else): the analytics routes as SVG charts for a date
// range — monthly active users, retention of each sign-up cohort as a
// heatmap, revenue by tier per month, p95 processing time per preset.
import { api } from '../api.js';
import { h, clear, fmtDuration } from '../dom.js';
import { barChart, heatmap, chartWidth } from '../charts.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const TIERS = [['free', 'Free'], ['creator', 'Creator'], ['studio', 'Studio']];
// Revenue is asked month by month (the route gives one figure per range):
// at most this many months, the last ones of the range.
export const REVENUE_MONTHS_MAX = 24;

const iso = (d) => d.toISOString().slice(0, 10);
const money = (v) => `$${Number(v).toLocaleString('en-US', { maximumFractionDigits: 2 })}`;

// The default range: the first day of the month eleven months back to today
// (the routes' own default for all but performance).
function defaultRange() {
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 11, 1));
  return { from: iso(from), to: iso(now) };
}

// The months of [from, to] as {label YYYY-MM, from, to} (clipped to the range).
function monthsOf(from, to) {
  const out = [];
  const end = new Date(`${to}T00:00:00Z`);
  let d = new Date(`${from.slice(0, 7)}-01T00:00:00Z`);
  while (d <= end) {
    const next = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
    const last = new Date(next.getTime() - 86400000);
    out.push({ label: iso(d).slice(0, 7), from: iso(d) < from ? from : iso(d), to: iso(last) > to ? to : iso(last) });
    d = next;
  }
  return out;
}

function mauChart(data) {
  const months = [...data.months].reverse(); // oldest first
  return barChart({
    id: 'chart-mau', title: 'Monthly active users', integer: true,
    labels: months.map((m) => m.month),
    series: [{ name: 'Active users', values: months.map((m) => m.active_users) }],
  });
}

function retentionChart(data) {
  const cohorts = [...data.cohorts].reverse();
  const years = [...new Set(cohorts.map((c) => c.cohort_month.slice(0, 4)))];
  const values = years.map(() => MONTHS.map(() => null));
  for (const c of cohorts) {
    const yi = years.indexOf(c.cohort_month.slice(0, 4));
    const mi = Number(c.cohort_month.slice(5, 7)) - 1;
    if (c.cohort_size > 0 && c.retention_rate !== null) values[yi][mi] = Number(c.retention_rate);
  }
  const sizes = cohorts.filter((c) => c.cohort_size > 0)
    .map((c) => `${c.cohort_month}: ${c.retained_month_1} of ${c.cohort_size}`).join('; ');
  return heatmap({
    id: 'chart-retention', title: 'Retention by sign-up month',
    rows: years, columns: MONTHS, values,
    note: `Share of each month's sign-ups with a job a month or more later.${sizes ? ` Retained of signed up: ${sizes}.` : ''}`,
  });
}

function revenueChart(perMonth) {
  return barChart({
    id: 'chart-revenue', title: 'Monthly revenue by tier (active subscriptions)', stacked: true, fmt: money,
    labels: perMonth.map((m) => m.label),
    series: TIERS.map(([tier, name]) => ({
      name, values: perMonth.map((m) => (m.data.tiers.find((t) => t.tier === tier) || {}).monthly_revenue || 0),
    })),
  });
}

function performanceChart(data) {
  return barChart({
    id: 'chart-performance', title: 'p95 processing time per preset', fmt: (v) => fmtDuration(Math.round(Number(v))) || '0 ms',
    labels: data.presets.map((p) => p.preset_name),
    series: [{ name: 'p95', values: data.presets.map((p) => Number(p.p95_time_ms)) }],
  });
}

export async function admin(main, app) {
  main.append(h('h1', { text: 'Admin' }));
  if (!app.me.is_admin) {
    main.append(h('p', { id: 'not-allowed', class: 'notice', text: 'Not allowed: this page is for administrators only.' }));
    return null;
  }
  const range = defaultRange();
  const from = h('input', { type: 'date', id: 'admin-from', name: 'from', value: range.from, required: true });
  const to = h('input', { type: 'date', id: 'admin-to', name: 'to', value: range.to, required: true });
  const status = h('p', { id: 'admin-status', role: 'status', 'aria-live': 'polite' });
  const charts = h('div', { id: 'admin-charts', class: 'charts' });
  let ticket = 0;
  let drawn = null; // { width, data }: what the charts show, to draw again at another width

  function draw(data) {
    const { mau, retention, performance, months, revenue } = data;
    clear(charts).append(
      mauChart(mau), retentionChart(retention),
      revenueChart(months.map((m, i) => ({ label: m.label, data: revenue[i] }))),
      performanceChart(performance));
    drawn = { width: chartWidth(), data };
  }

  // A phone turned sideways, a window resized: the charts are drawn for
  // their width (charts.js), so draw them again when it changes.
  let resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (drawn && chartWidth() !== drawn.width) draw(drawn.data);
    }, 150);
  }
  window.addEventListener('resize', onResize);

  async function load() {
    const mine = ++ticket;
    const f = from.value;
    const t = to.value;
    if (!f || !t || f > t) { status.textContent = 'Choose a start date on or before the end date.'; return; }
    status.textContent = 'Loading…';
    const q = `from=${encodeURIComponent(f)}&to=${encodeURIComponent(t)}`;
    try {
      const months = monthsOf(f, t).slice(-REVENUE_MONTHS_MAX);
      const [mau, retention, performance, ...revenue] = await Promise.all([
        api('GET', `/api/admin/analytics/mau?${q}`),
        api('GET', `/api/admin/analytics/retention?${q}`),
        api('GET', `/api/admin/analytics/performance?${q}`),
        ...months.map((m) => api('GET', `/api/admin/analytics/revenue?from=${m.from}&to=${m.to}`)),
      ]);
      if (mine !== ticket) return;
      draw({ mau, retention, performance, months, revenue });
      status.textContent = `From ${mau.from} to ${mau.to}.`;
    } catch (e) {
      if (mine !== ticket) return;
      status.textContent = '';
      app.error(e);
    }
  }

  main.append(
    h('form', {
      class: 'range', id: 'admin-range',
      onsubmit: (ev) => { ev.preventDefault(); app.error(null); load(); },
    },
    h('label', { for: 'admin-from', text: 'From' }), from,
    h('label', { for: 'admin-to', text: 'To' }), to,
    h('button', { type: 'submit', class: 'button', text: 'Show' })),
    status, charts);
  await load();
  return () => {
    ticket++;
    clearTimeout(resizeTimer);
    window.removeEventListener('resize', onResize);
  };
}
