// The jobs list, live: the first page is fetched again every 2 s (short
// polling) and rows are updated in place, so focus and older pages stay.
import { api } from '../api.js';
import { h, clear, fmtDate, fmtDuration } from '../dom.js';

const POLL_MS = 2000;
const EMPTY = 'No jobs yet. Drop a photo into your watched folder; it shows up here within a few seconds.';
const STATUSES = ['queued', 'processing', 'completed', 'failed', 'cancelled'];
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
  const filter = h('select', { id: 'status-filter' },
    h('option', { value: '', text: 'All' }), STATUSES.map((s) => h('option', { value: s, text: s })));
  const list = h('ul', { class: 'jobs', id: 'jobs', 'aria-label': 'Jobs, newest first' });
  const empty = h('p', { class: 'empty', id: 'jobs-empty', hidden: true, text: EMPTY });
  const more = h('button', { type: 'button', id: 'jobs-more', hidden: true, text: 'Older jobs' });
  main.append(h('div', { class: 'toolbar' },
    h('div', { class: 'field' }, h('label', { for: 'status-filter', text: 'Status' }), filter),
    h('p', { class: 'hint', text: 'Updates live.' })), list, empty, more);

  const rows = new Map(); // job id -> {li, parts}
  let cursor = null; // of the oldest page loaded
  let loadedOlder = false;
  let timer = null;
  let stopped = false;

  function makeRow(job) {
    const parts = {
      name: h('span', { class: 'name' }),
      status: h('span', { class: 'status' }),
      meta: h('span', { class: 'meta' }),
      reason: h('p', { class: 'reason' }),
      output: h('a', { class: 'output', target: '_blank', rel: 'noopener' }),
      retry: h('button', { type: 'button', text: 'Retry' }),
      cancel: h('button', { type: 'button', text: 'Cancel' }),
    };
    parts.retry.addEventListener('click', () => act(job.id, 'retry'));
    parts.cancel.addEventListener('click', () => act(job.id, 'cancel'));
    const li = h('li', { class: 'job', dataset: { id: job.id } },
      h('div', { class: 'line' }, parts.name, parts.status),
      parts.meta, parts.reason,
      h('div', { class: 'actions' }, parts.output, parts.retry, parts.cancel));
    return { li, parts };
  }

  function update(row, job) {
    const p = row.parts;
    row.li.dataset.status = job.status;
    p.name.textContent = job.drive_file_name;
    p.status.textContent = job.status;
    p.status.className = `status s-${job.status}`;
    const bits = [job.preset_name, fmtDate(job.created_at)];
    if (job.processing_time_ms !== null && job.processing_time_ms !== undefined) bits.push(`processed in ${fmtDuration(job.processing_time_ms)}`);
    p.meta.textContent = bits.filter(Boolean).join(' · ');
    const why = job.status === 'failed' ? reason(job) : '';
    p.reason.textContent = why;
    p.reason.hidden = !why;
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

  const query = (cur) => {
    const q = new URLSearchParams({ limit: '20' });
    if (filter.value) q.set('status', filter.value);
    if (cur) q.set('cursor', cur);
    return `/api/jobs?${q}`;
  };

  async function poll() {
    timer = null;
    try {
      const page = await api('GET', query(null));
      if (stopped) return;
      if (filter.value) {
        // a job of the first page that left the status asked for leaves the list
        const ids = new Set(page.jobs.map((j) => j.id));
        for (const [id, row] of rows) {
          if (!ids.has(id) && !row.older) { row.li.remove(); rows.delete(id); }
        }
      }
      merge(page.jobs, false);
      empty.textContent = filter.value ? `No ${filter.value} jobs.` : EMPTY;
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

  filter.addEventListener('change', () => {
    clear(list); rows.clear(); cursor = null; loadedOlder = false;
    if (timer) clearTimeout(timer);
    poll();
  });
  more.addEventListener('click', async () => {
    if (!cursor) return;
    try {
      const page = await api('GET', query(cursor));
      loadedOlder = true;
      merge(page.jobs, true);
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (e) { app.error(e); }
  });

  await poll();
  return () => { stopped = true; if (timer) clearTimeout(timer); };
}
