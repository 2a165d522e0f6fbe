// The jobs list, live: the first page is fetched again every 2 s (short
// polling, skipped while the tab is hidden) and rows are updated in place, so
// focus and older pages stay. Completed photos show their before/after
// thumbnails; photos over the plan's limit show that they wait for it.
// Filters: status (or waiting for the monthly limit) and a date range.
import { api } from '../api.js';
import { h, clear, fmtDate, fmtDuration } from '../dom.js';

const POLL_MS = 2000;
const EMPTY = 'No jobs yet. Drop a photo into your watched folder; it shows up here within a few seconds.';
const STATUSES = ['queued', 'processing', 'completed', 'failed', 'cancelled'];
const WAITING = 'waiting'; // the status filter's value for ?waiting_for=quota
// The worker keeps a job's thumbnails 7 days (WORKER_THUMBNAIL_TTL_SECONDS):
// older completed jobs are not asked for theirs.
const THUMB_DAYS = 7;
const WAITING_TEXT = 'This photo is over your plan\'s monthly limit. It is kept and processed by itself when your next period starts, or right away if you upgrade.';

// The banner of a disconnected Drive: why, and the way back (signing in with
// Google again gives the gateway a new refresh token).
export function driveBanner(me) {
  if (!me || me.drive_connected !== false) return null;
  const why = /^invalid_grant/.test(me.drive_disconnected_reason || '')
    ? 'Google withdrew our access to your Drive (the permission was revoked or has expired).'
    : 'We can no longer reach your Google Drive.';
  return h('section', { class: 'panel drive-off', id: 'drive-off', 'aria-labelledby': 'drive-off-h' },
    h('h2', { id: 'drive-off-h', text: 'Google Drive is disconnected' }),
    h('p', { text: `${why} New photos are not picked up until you reconnect.` }),
    me.drive_disconnected_at ? h('p', { class: 'hint', text: `Since ${fmtDate(me.drive_disconnected_at)}.` }) : null,
    h('a', { class: 'button primary', id: 'reconnect-drive', href: `/auth/google/login?login_hint=${encodeURIComponent(me.email)}`, text: 'Reconnect Google Drive' }));
}

const day = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;

const REASONS = {
  quota_exceeded: 'Your plan\'s images for this period are used up. Upgrade or wait for the next period, then retry.',
  unsupported_image: 'This file is not a photo we can read (JPEG, PNG, WebP, HEIC or TIFF).',
  image_too_large: 'The photo is too large to process.',
  drive_file_not_found: 'The photo was removed from Drive before it could be processed.',
  drive_forbidden: 'Drive refused access to the photo or the Processed folder.',
  drive_auth_revoked: 'Access to your Drive was withdrawn. Sign in with Google again to reconnect.',
  upload_failed: 'The edited photo could not be saved to Drive.',
  preset_not_found: 'The preset no longer exists. Choose another one and retry.',
  processing_error: 'The photo could not be edited.',
  execution_error: 'The photo could not be edited.',
  node_error: 'The preset could not be applied to this photo.',
  comfyui_unavailable: 'The image service was unavailable.',
};

export function reason(job) {
  if (!job.error_code && !job.error_message) return '';
  const text = REASONS[job.error_code] || 'The photo could not be processed.';
  return job.error_message && !REASONS[job.error_code] ? `${text} (${job.error_message})` : text;
}

export async function jobs(main, app) {
  main.append(h('h1', { text: 'Jobs' }));
  const me = await app.refreshMe();
  const banner = driveBanner(me);
  if (banner) main.append(banner);
  const filter = h('select', { id: 'status-filter' },
    h('option', { value: '', text: 'All' }), STATUSES.map((s) => h('option', { value: s, text: s })),
    h('option', { value: WAITING, text: 'waiting for monthly limit' }));
  // The date range: the browser's local days, sent as the API's UTC days.
  const from = h('input', { type: 'date', id: 'date-from' });
  const to = h('input', { type: 'date', id: 'date-to' });
  const list = h('ul', { class: 'jobs', id: 'jobs', 'aria-label': 'Jobs, newest first' });
  const empty = h('p', { class: 'empty', id: 'jobs-empty', hidden: true, text: EMPTY });
  const more = h('button', { type: 'button', id: 'jobs-more', hidden: true, text: 'Older jobs' });
  main.append(h('div', { class: 'toolbar' },
    h('div', { class: 'field' }, h('label', { for: 'status-filter', text: 'Status' }), filter),
    h('div', { class: 'field' }, h('label', { for: 'date-from', text: 'From' }), from),
    h('div', { class: 'field' }, h('label', { for: 'date-to', text: 'To' }), to),
    h('p', { class: 'hint', text: 'Updates live.' })), list, empty, more);

  const rows = new Map(); // job id -> {li, parts}
  let cursor = null; // of the oldest page loaded
  let loadedOlder = false;
  let timer = null;
  let stopped = false;
  let gen = 0; // a change of filters makes the answers in flight stale

  function makeRow(job) {
    const parts = {
      name: h('span', { class: 'name' }),
      status: h('span', { class: 'status' }),
      meta: h('span', { class: 'meta' }),
      reason: h('p', { class: 'reason' }),
      thumbs: h('div', { class: 'thumbs', hidden: true }),
      output: h('a', { class: 'output', target: '_blank', rel: 'noopener' }),
      retry: h('button', { type: 'button', text: 'Retry' }),
      cancel: h('button', { type: 'button', text: 'Cancel' }),
    };
    parts.retry.addEventListener('click', () => act(job.id, 'retry'));
    parts.cancel.addEventListener('click', () => act(job.id, 'cancel'));
    const li = h('li', { class: 'job', dataset: { id: job.id } },
      h('div', { class: 'line' }, parts.name, parts.status),
      parts.meta, parts.reason, parts.thumbs,
      h('div', { class: 'actions' }, parts.output, parts.retry, parts.cancel));
    return { li, parts };
  }

  function update(row, job) {
    const p = row.parts;
    row.li.dataset.status = job.status;
    p.name.textContent = job.drive_file_name;
    const waiting = job.waiting_for === 'quota';
    row.li.dataset.waiting = waiting ? 'quota' : '';
    p.status.textContent = waiting ? 'Waiting for your monthly limit' : job.status;
    p.status.className = `status s-${waiting ? 'waiting' : job.status}`;
    const bits = [job.preset_name, fmtDate(job.created_at)];
    if (job.processing_time_ms !== null && job.processing_time_ms !== undefined) bits.push(`processed in ${fmtDuration(job.processing_time_ms)}`);
    p.meta.textContent = bits.filter(Boolean).join(' · ');
    const why = job.status === 'failed' ? reason(job) : (waiting ? WAITING_TEXT : '');
    p.reason.textContent = why;
    p.reason.className = waiting ? 'reason waiting' : 'reason';
    p.reason.hidden = !why;
    thumbs(row, job);
    if (job.output_url || job.output_file_name) {
      p.output.hidden = false;
      p.output.textContent = `Open ${job.output_file_name || 'the output'}`;
      if (job.output_url) p.output.href = job.output_url;
      else p.output.removeAttribute('href');
    } else p.output.hidden = true;
    p.retry.hidden = !(job.status === 'failed' || job.status === 'cancelled');
    p.cancel.hidden = !(job.status === 'queued' || job.status === 'processing');
    p.retry.setAttribute('aria-label', `Retry ${job.drive_file_name}`);
    p.cancel.setAttribute('aria-label', `Cancel ${job.drive_file_name}`);
  }

  // A completed photo's before/after pair, asked for once; an image the
  // gateway has not (404: expired, never made) is removed, not shown broken.
  function thumbs(row, job) {
    const box = row.parts.thumbs;
    const fresh = job.completed_at && Date.now() - new Date(job.completed_at).getTime() < THUMB_DAYS * 86400000;
    if (job.status !== 'completed' || !fresh) { box.hidden = true; return; }
    if (row.thumbsFor === job.completed_at) return;
    row.thumbsFor = job.completed_at;
    clear(box);
    for (const which of ['before', 'after']) {
      const img = h('img', { class: `thumb ${which}`, alt: `${which === 'before' ? 'Before' : 'After'}: ${job.drive_file_name}`,
        loading: 'lazy', decoding: 'async', width: '128', height: '128',
        src: `/api/jobs/${encodeURIComponent(job.id)}/thumbnail/${which}.jpg?t=${encodeURIComponent(job.completed_at)}` });
      const fig = h('figure', {}, img, h('figcaption', { text: which === 'before' ? 'Before' : 'After' }));
      img.addEventListener('error', () => { fig.remove(); box.hidden = !box.firstChild; });
      box.append(fig);
    }
    box.hidden = false;
  }

  // Puts jobs (newest first) into the list: known rows are updated, new ones
  // go on top (fresh) or at the bottom (an older page).
  function merge(list_, older) {
    const fresh = [];
    for (const job of list_) {
      let row = rows.get(job.id);
      if (!row) {
        row = makeRow(job);
        row.older = older;
        rows.set(job.id, row);
        if (older) list.append(row.li); else fresh.push(row.li);
      }
      update(row, job);
    }
    if (fresh.length) list.prepend(...fresh);
    empty.hidden = rows.size > 0;
  }

  // The API's days are UTC: a local day's range is widened to the UTC days it
  // touches, and the rows are then kept to the local days asked for.
  const utcDay = (local, end) => {
    const d = new Date(`${local}T${end ? '23:59:59.999' : '00:00:00'}`);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 10);
  };
  const inRange = (job) => {
    const d = day(new Date(job.created_at));
    return (!from.value || d >= from.value) && (!to.value || d <= to.value);
  };
  const filtered = () => !!(filter.value || from.value || to.value);
  const query = (cur) => {
    const q = new URLSearchParams({ limit: '20' });
    if (filter.value === WAITING) q.set('waiting_for', 'quota');
    else if (filter.value) q.set('status', filter.value);
    if (from.value) q.set('from', utcDay(from.value, false));
    if (to.value) q.set('to', utcDay(to.value, true));
    if (cur) q.set('cursor', cur);
    return `/api/jobs?${q}`;
  };
  const emptyText = () => {
    if (from.value || to.value) return 'No jobs in these dates.';
    if (filter.value === WAITING) return 'No photos are waiting for your monthly limit.';
    return filter.value ? `No ${filter.value} jobs.` : EMPTY;
  };

  async function poll() {
    timer = null;
    if (document.hidden) { // no requests from a tab nobody looks at
      if (!stopped) timer = setTimeout(poll, POLL_MS);
      return;
    }
    const asked = gen;
    try {
      const page = await api('GET', query(null));
      if (stopped) return;
      if (asked !== gen) return; // the filters changed meanwhile: refilter polls anew
      page.jobs = page.jobs.filter(inRange);
      if (filtered()) {
        // a job of the first page that left the status asked for leaves the list
        const ids = new Set(page.jobs.map((j) => j.id));
        for (const [id, row] of rows) {
          if (!ids.has(id) && !row.older) { row.li.remove(); rows.delete(id); }
        }
      }
      merge(page.jobs, false);
      empty.textContent = emptyText();
      empty.hidden = rows.size > 0;
      if (!loadedOlder) { cursor = page.next_cursor; more.hidden = !cursor; }
    } catch (e) {
      if (e.status === 401) { app.signedOut('Your session ended. Sign in again.'); return; }
      app.error(e);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  async function act(id, what) {
    app.error(null);
    try {
      const job = await api('POST', `/api/jobs/${encodeURIComponent(id)}/${what}`);
      const row = rows.get(id);
      if (row) update(row, job);
      app.flash(what === 'retry' ? `${job.drive_file_name} is queued again.` : `${job.drive_file_name} is cancelled.`);
    } catch (e) { app.error(e); }
  }

  const refilter = () => {
    if (from.value && to.value && from.value > to.value) {
      app.error(new Error('The "From" date is after the "To" date.'));
      return;
    }
    app.error(null);
    gen++;
    clear(list); rows.clear(); cursor = null; loadedOlder = false;
    if (timer) clearTimeout(timer);
    poll();
  };
  filter.addEventListener('change', refilter);
  from.addEventListener('change', refilter);
  to.addEventListener('change', refilter);
  const onVisible = () => { if (!document.hidden && !stopped && timer) { clearTimeout(timer); poll(); } };
  document.addEventListener('visibilitychange', onVisible);
  more.addEventListener('click', async () => {
    if (!cursor) return;
    const asked = gen;
    try {
      const page = await api('GET', query(cursor));
      if (asked !== gen) return;
      loadedOlder = true;
      merge(page.jobs.filter(inRange), true);
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (e) { app.error(e); }
  });

  await poll();
  return () => { stopped = true; if (timer) clearTimeout(timer); document.removeEventListener('visibilitychange', onVisible); };
}
