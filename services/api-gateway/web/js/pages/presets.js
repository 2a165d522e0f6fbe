// Presets: the system presets, the user's own (create from a workflow JSON
// file or text, edit, delete, publish), the marketplace (search, sort, rate,
// adopt, accept an update) and the default preset. Every preset can show a
// before/after preview rendered by the worker's CPU executor: system presets
// from their public sample preview, the others through POST /api/previews, on
// the sample photo or on a photo of the watched folder.
import { api, ApiError } from '../api.js';
import { h, clear } from '../dom.js';

const CATEGORIES = ['portrait', 'product', 'landscape', 'other'];
const PREVIEW_POLL_MS = 250;
const PREVIEW_WAIT_MS = 45000;
const AUTO_PREVIEWS = 8; // own presets previewed when the page opens
const MARKET_PAGES = 10; // of 100: the marketplace is searched and sorted in the page

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function presets(main, app) {
  let stopped = false;
  const stop = () => { stopped = true; };
  main.append(h('h1', { text: 'Presets' }));

  // ---- the default preset and the photo previews are made on ----
  const current = h('p', { id: 'default-preset' });
  const showDefault = () => {
    clear(current).append('New photos are edited with ', h('strong', { text: app.me.default_preset || 'none' }), '.');
  };
  showDefault();
  const source = h('select', { id: 'preview-source' }, h('option', { value: 'sample', text: 'The sample photo' }));
  const queue = h('p', { class: 'hint', id: 'preview-queue', 'aria-live': 'polite' });
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'p-default' },
    h('h2', { id: 'p-default', text: 'Your default preset' }), current,
    h('div', { class: 'field' }, h('label', { for: 'preview-source', text: 'Previews are made on' }), source),
    queue,
    h('p', { class: 'hint', text: 'Your photos listed are those of your watched folder that have been processed. Choose Preview on a preset to see it on the photo chosen here.' })));
  // No route lists the files of the watched folder: its photos known to the
  // API are those jobs were made for (GET /api/jobs has their Drive ids).
  try {
    const seen = new Set();
    const page = await api('GET', '/api/jobs?status=completed&limit=50');
    for (const j of page.jobs || []) {
      if (!j.drive_file_id || seen.has(j.drive_file_id)) continue;
      seen.add(j.drive_file_id);
      source.append(h('option', { value: j.drive_file_id, text: `My photo: ${j.drive_file_name}` }));
    }
  } catch (e) { if (e instanceof ApiError && e.status === 401) throw e; }
  const chosenSource = () => (source.value === 'sample' ? 'sample' : { drive_file_id: source.value });
  const sourceName = () => source.options[source.selectedIndex].textContent;

  async function makeDefault(name) {
    app.error(null);
    try {
      app.me = await api('PATCH', '/api/me', { default_preset: name });
      showDefault();
      await reload();
      app.flash(`New photos will be edited with ${name}.`);
    } catch (e) { app.error(e); }
  }

  // ---- previews ----
  // A before/after pair: two figures with an img each and a status line.
  function previewBox(name) {
    const before = h('img', { alt: `${name}, before`, hidden: true });
    const after = h('img', { alt: `${name}, after`, hidden: true });
    const status = h('p', { class: 'hint preview-status', 'aria-live': 'polite' });
    const figures = h('div', { class: 'pair', hidden: true },
      h('figure', {}, before, h('figcaption', { text: 'Before' })),
      h('figure', {}, after, h('figcaption', { text: 'After' })));
    const box = h('div', { class: 'preview' }, figures, status);
    const show = (b, a) => {
      before.src = b;
      after.src = a;
      before.hidden = false;
      after.hidden = false;
      figures.hidden = false;
      status.textContent = '';
    };
    const reset = () => { figures.hidden = true; before.hidden = true; after.hidden = true; status.textContent = ''; };
    return { box, before, after, status, show, reset };
  }

  // A system preset's public sample preview: 503 preview_pending while the
  // worker renders it (Retry-After), 404 when the CPU executor cannot run it.
  async function systemPreview(p, box) {
    box.status.textContent = 'Rendering the preview…';
    const base = `/api/presets/${encodeURIComponent(p.id)}/preview`;
    for (let i = 0; i < 40 && !stopped; i++) {
      let res;
      try {
        res = await fetch(`${base}/after.jpg`, { credentials: 'same-origin' });
      } catch (e) { await sleep(2000); continue; }
      if (res.ok) {
        await res.arrayBuffer();
        box.show(`${base}/before.jpg`, `${base}/after.jpg`);
        return;
      }
      if (res.status === 404) { box.status.textContent = 'No preview: this preset needs the GPU image server.'; return; }
      await sleep(Math.min(10, Number(res.headers.get('Retry-After')) || 2) * 1000);
    }
    if (!stopped) box.status.textContent = 'The preview is not ready yet. Reload the page to try again.';
  }

  // POST /api/previews, then poll it until done or failed. Throws ApiError
  // (a 400 carries the validator's details).
  let previewChain = Promise.resolve(); // one at a time: PREVIEW_RATE_PER_MINUTE
  function renderPreview(body, box) {
    const run = async () => {
      if (stopped) return null;
      box.status.textContent = `Rendering on ${sourceName()}…`;
      let pv;
      for (let tries = 0; ; tries++) {
        try {
          pv = await api('POST', '/api/previews', body);
          break;
        } catch (e) {
          if (!(e instanceof ApiError) || (e.status !== 429 && e.status !== 503) || tries > 5 || stopped) throw e;
          box.status.textContent = 'Many previews at once: waiting…';
          await sleep((e.retryAfter || 2) * 1000);
        }
      }
      const end = Date.now() + PREVIEW_WAIT_MS;
      while (pv.status === 'pending' && !stopped && Date.now() < end) {
        await sleep(PREVIEW_POLL_MS);
        pv = await api('GET', `/api/previews/${encodeURIComponent(pv.id)}`);
      }
      if (stopped) return pv;
      if (pv.status === 'done') box.show(pv.before_url, pv.after_url);
      else if (pv.status === 'failed') box.status.textContent = `No preview: ${(pv.error && pv.error.message) || 'it failed'}.`;
      else box.status.textContent = 'The preview took too long. Try again.';
      return pv;
    };
    box.status.textContent = 'Waiting to render…';
    queued(+1);
    const p = previewChain.then(run).finally(() => queued(-1));
    previewChain = p.catch(() => null);
    return p;
  }
  // How many previews are asked for and not yet rendered (also what a test
  // waits on before it ends the session).
  let inQueue = 0;
  function queued(d) {
    inQueue += d;
    queue.textContent = inQueue ? `Rendering ${inQueue} preview${inQueue === 1 ? '' : 's'}…` : '';
  }
  // Done previews of saved presets, by preset, version and photo: a page
  // reload after an action shows them again without asking the worker.
  const done = new Map();
  async function previewOf(p, box) {
    const key = `${p.id}:${p.version}:${source.value}`;
    const had = done.get(key);
    if (had) { box.show(had.before_url, had.after_url); return; }
    try {
      const pv = await renderPreview({ preset_id: p.id, source: chosenSource() }, box);
      if (pv && pv.status === 'done') done.set(key, pv);
    } catch (e) {
      box.status.textContent = '';
      app.error(e);
    }
  }

  // ---- a preset's card ----
  function meta(p) {
    const bits = [];
    if (p.category) bits.push(p.category);
    if (!p.is_system) bits.push(`version ${p.version}`);
    if (!p.is_system && (p.is_public || !p.is_own)) bits.push(`rated ${Number(p.rating_avg).toFixed(1)} (${p.rating_count})`, `${p.downloads} download${p.downloads === 1 ? '' : 's'}`);
    if (p.is_own) bits.push(p.is_public ? 'public' : 'private');
    return bits.join(' · ');
  }
  function card(p, actions, box) {
    const li = h('li', { class: 'card preset', dataset: { id: p.id, name: p.name } },
      h('h3', {}, p.name, p.name === app.me.default_preset ? h('span', { class: 'tag-default', text: ' default' }) : null),
      h('p', { class: 'hint', text: meta(p) }),
      p.description ? h('p', { text: p.description }) : null,
      box ? box.box : null,
      h('div', { class: 'actions' }, actions));
    return li;
  }
  const useButton = (p) => h('button', { type: 'button', 'aria-label': `Use as default: ${p.name}`, text: 'Use as default',
    disabled: p.name === app.me.default_preset, onclick: () => makeDefault(p.name) });

  // ---- system presets ----
  const systemList = h('ul', { class: 'cards presets', id: 'system-presets' });
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'p-system' },
    h('h2', { id: 'p-system', text: 'System presets' }), systemList));

  // ---- own presets ----
  const ownList = h('ul', { class: 'cards presets', id: 'own-presets' });
  const deletedList = h('ul', { class: 'plain', id: 'deleted-presets' });
  const deletedBox = h('details', { hidden: true }, h('summary', { text: 'Deleted presets' }), deletedList);
  const newButton = h('button', { type: 'button', class: 'primary', id: 'new-preset', text: 'New preset' });
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'p-own' },
    h('h2', { id: 'p-own', text: 'Your presets' }), newButton, ownList, deletedBox));

  // ---- the editor ----
  const ed = {
    id: null, // the preset edited, null for a new one
    original: null,
    name: h('input', { type: 'text', id: 'ed-name', maxlength: 50, required: true, autocomplete: 'off' }),
    description: h('textarea', { id: 'ed-description', rows: 2, maxlength: 2000 }),
    category: h('select', { id: 'ed-category' }, CATEGORIES.map((c) => h('option', { value: c, text: c }))),
    file: h('input', { type: 'file', id: 'ed-file', accept: '.json,application/json' }),
    text: h('textarea', { id: 'ed-workflow', rows: 10, spellcheck: 'false', class: 'code' }),
    nodes: h('ol', { class: 'nodes', id: 'graph-nodes', 'aria-label': 'The graph\'s nodes' }),
    summary: h('div', { id: 'graph-errors', role: 'alert' }),
    box: previewBox('The edited graph'),
  };
  const edTitle = h('h2', { id: 'p-editor', text: 'New preset' });
  const edForm = h('form', { id: 'preset-editor', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'ed-name', text: 'Name' }), ed.name,
      h('span', { class: 'hint', text: 'Letters, digits, space, _ - . (at most 50).' })),
    h('div', { class: 'field' }, h('label', { for: 'ed-description', text: 'Description' }), ed.description),
    h('div', { class: 'field' }, h('label', { for: 'ed-category', text: 'Category' }), ed.category),
    h('div', { class: 'field' }, h('label', { for: 'ed-file', text: 'Workflow JSON file (ComfyUI API format)' }), ed.file),
    h('div', { class: 'field' }, h('label', { for: 'ed-workflow', text: 'Workflow JSON' }), ed.text),
    ed.summary,
    h('h3', { text: 'Nodes' }), ed.nodes,
    h('div', { class: 'actions' },
      h('button', { type: 'button', id: 'ed-preview', text: 'Preview before saving', onclick: () => previewEdited() }),
      h('button', { type: 'submit', class: 'primary', id: 'ed-save', text: 'Save preset' }),
      h('button', { type: 'button', id: 'ed-cancel', text: 'Close', onclick: () => closeEditor() })),
    ed.box.box);
  const editor = h('section', { class: 'panel', id: 'editor', 'aria-labelledby': 'p-editor', hidden: true }, edTitle, edForm);
  ownList.parentNode.after(editor);

  // The graph as a readable list of nodes; errors go to their node's entry.
  function parseGraph() {
    const text = ed.text.value.trim();
    if (!text) return { error: 'Paste a workflow or choose a file.' };
    try {
      const g = JSON.parse(text);
      if (!g || typeof g !== 'object' || Array.isArray(g)) return { error: 'The workflow must be a JSON object of nodes.' };
      return { graph: g };
    } catch (e) {
      return { error: `The workflow is not valid JSON: ${e.message}` };
    }
  }
  const inputText = (k, v) => {
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && Number.isInteger(v[1])) return `${k} ← node ${v[0]}`;
    return `${k} = ${JSON.stringify(v)}`;
  };
  function drawNodes(errorsByNode = {}) {
    clear(ed.nodes);
    const { graph } = parseGraph();
    if (!graph) return;
    const ids = Object.keys(graph).sort((a, b) => (Number(a) - Number(b)) || a.localeCompare(b));
    for (const id of ids) {
      const n = graph[id] || {};
      const errs = errorsByNode[id] || [];
      const inputs = n.inputs && typeof n.inputs === 'object' ? Object.entries(n.inputs).map(([k, v]) => inputText(k, v)) : [];
      ed.nodes.append(h('li', { class: errs.length ? 'node has-error' : 'node', dataset: { node: id } },
        h('strong', { text: `Node ${id}` }), ' ', h('code', { text: String(n.class_type ?? '(no class_type)') }),
        inputs.length ? h('span', { class: 'hint inputs', text: ` ${inputs.join(' · ')}` }) : null,
        errs.length ? h('ul', { class: 'node-errors' }, errs.map((m) => h('li', { text: m }))) : null));
    }
  }
  // The 400 of POST /api/presets and POST /api/previews: ComfyUI's error body
  // in error.details, {error:{type,message,details,extra_info}, node_errors:{id:{errors:[...]}}}.
  function showGraphError(e) {
    const byNode = {};
    const add = (id, m) => { (byNode[id] = byNode[id] || []).push(m); };
    const d = e.details || {};
    const top = d.error || {};
    for (const [id, ne] of Object.entries(d.node_errors || {})) {
      for (const er of (ne && ne.errors) || []) add(id, er.details ? `${er.message}: ${er.details}` : er.message);
    }
    const at = top.extra_info && top.extra_info.node_id;
    if (at !== undefined && !byNode[at]) add(String(at), top.details ? `${top.message}: ${top.details}` : top.message);
    drawNodes(byNode);
    const { graph } = parseGraph();
    const ids = Object.keys(byNode);
    const missing = ids.filter((id) => !graph || !(id in graph));
    clear(ed.summary).append(h('p', { class: 'error-text' },
      ids.length ? `The graph has errors at ${ids.map((id) => `node ${id}`).join(', ')} (shown below at each node).` : e.message),
    missing.length ? h('p', { class: 'error-text', text: missing.map((id) => `Node ${id}: ${byNode[id].join('; ')}`).join(' ') } ) : null);
  }
  const isGraphError = (e) => e instanceof ApiError && e.status === 400 && /^(invalid_workflow|workflow_)/.test(e.code);

  ed.text.addEventListener('input', () => { clear(ed.summary); drawNodes(); });
  ed.file.addEventListener('change', async () => {
    const f = ed.file.files && ed.file.files[0];
    if (!f) return;
    if (f.size > 256 * 1024) { clear(ed.summary).append(h('p', { class: 'error-text', text: 'The file is over 256 KiB, the limit of a workflow.' })); return; }
    ed.text.value = await f.text();
    if (!ed.name.value) ed.name.value = f.name.replace(/\.json$/i, '').replace(/[^A-Za-z0-9 _.-]/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 50);
    clear(ed.summary);
    drawNodes();
  });

  function openEditor(p) {
    ed.id = p ? p.id : null;
    ed.original = p;
    edTitle.textContent = p ? `Edit ${p.name}` : 'New preset';
    ed.name.value = p ? p.name : '';
    ed.description.value = p ? p.description || '' : '';
    ed.category.value = p && p.category ? p.category : 'other';
    ed.file.value = '';
    ed.text.value = p ? JSON.stringify(p.workflow_json, null, 2) : '';
    clear(ed.summary);
    drawNodes();
    ed.box.reset();
    editor.hidden = false;
    ed.name.focus();
  }
  function closeEditor() { editor.hidden = true; ed.id = null; }
  newButton.addEventListener('click', () => openEditor(null));

  async function previewEdited() {
    app.error(null);
    const { graph, error } = parseGraph();
    if (error) { clear(ed.summary).append(h('p', { class: 'error-text', text: error })); return; }
    clear(ed.summary);
    drawNodes();
    const body = { graph, source: chosenSource() };
    if (ed.id) body.preset_id = ed.id;
    try {
      await renderPreview(body, ed.box);
    } catch (e) {
      ed.box.status.textContent = '';
      if (isGraphError(e)) showGraphError(e);
      else app.error(e);
    }
  }

  edForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    app.error(null);
    const { graph, error } = parseGraph();
    if (error) { clear(ed.summary).append(h('p', { class: 'error-text', text: error })); return; }
    clear(ed.summary);
    drawNodes();
    const name = ed.name.value.trim();
    try {
      let saved;
      if (ed.id) {
        const o = ed.original;
        const patch = { workflow_json: graph, description: ed.description.value, category: ed.category.value };
        if (name !== o.name) patch.name = name;
        saved = await api('PATCH', `/api/presets/${encodeURIComponent(ed.id)}`, patch);
      } else {
        saved = await api('POST', '/api/presets', { name, description: ed.description.value, category: ed.category.value, workflow_json: graph });
      }
      closeEditor();
      await reload(); // the page as it is now, then the message
      app.flash(`Saved ${saved.name} (version ${saved.version}).`);
    } catch (e) {
      if (isGraphError(e)) showGraphError(e);
      else app.error(e);
    }
  });

  async function patchOwn(p, body, message) {
    app.error(null);
    try {
      await api('PATCH', `/api/presets/${encodeURIComponent(p.id)}`, body);
      await reload(); // the page as it is now, then the message
      app.flash(message);
    } catch (e) { app.error(e); }
  }

  // ---- the marketplace ----
  const q = h('input', { type: 'search', id: 'market-search', autocomplete: 'off', placeholder: 'Name or description' });
  const sort = h('select', { id: 'market-sort' },
    h('option', { value: 'rating', text: 'Best rated' }), h('option', { value: 'downloads', text: 'Most downloaded' }));
  const marketList = h('ul', { class: 'cards presets', id: 'market', 'aria-live': 'polite' });
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'p-market' },
    h('h2', { id: 'p-market', text: 'Marketplace' }),
    h('p', { class: 'hint', text: 'Presets other photographers published. Adopting one makes it your default; you keep the version you adopted until you accept an update.' }),
    h('div', { class: 'toolbar' },
      h('div', { class: 'field' }, h('label', { for: 'market-search', text: 'Search the marketplace' }), q),
      h('div', { class: 'field' }, h('label', { for: 'market-sort', text: 'Sort by' }), sort)),
    marketList));
  let market = [];
  function drawMarket() {
    clear(marketList);
    const words = q.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = market.filter((p) => {
      const hay = `${p.name} ${p.description || ''} ${p.category || ''}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
    const key = sort.value === 'downloads' ? ['downloads', 'rating_avg'] : ['rating_avg', 'downloads'];
    shown.sort((a, b) => (Number(b[key[0]]) - Number(a[key[0]])) || (Number(b[key[1]]) - Number(a[key[1]])) || a.name.localeCompare(b.name));
    if (!shown.length) marketList.append(h('li', { class: 'empty', text: market.length ? 'No published preset matches.' : 'No one has published a preset yet.' }));
    for (const p of shown) marketList.append(marketCard(p));
  }
  q.addEventListener('input', drawMarket);
  sort.addEventListener('change', drawMarket);

  function marketCard(p) {
    const box = previewBox(p.name);
    const actions = [];
    if (p.my_rating) actions.push(h('span', { class: 'hint', text: `You rated it ${p.my_rating} of 5.` }));
    else {
      const sid = `rate-${p.id}`;
      const stars = h('select', { id: sid }, [5, 4, 3, 2, 1].map((n) => h('option', { value: String(n), text: `${n} of 5` })));
      actions.push(h('span', { class: 'rate' }, h('label', { for: sid, text: `Rating for ${p.name}` }), stars,
        h('button', { type: 'button', 'aria-label': `Rate ${p.name}`, text: 'Rate', onclick: async () => {
          app.error(null);
          try {
            await api('POST', `/api/presets/${encodeURIComponent(p.id)}/rating`, { rating: Number(stars.value) });
            await reload(); // the page as it is now, then the message
            app.flash(`You rated ${p.name} ${stars.value} of 5.`);
          } catch (e) { app.error(e); }
        } })));
    }
    if (p.adopted_version) {
      actions.push(h('span', { class: 'hint adopted', text: `You adopted version ${p.adopted_version}.` }));
    }
    if (p.update_available) {
      actions.push(h('span', { class: 'notice update', text: `Version ${p.version} is available.` }),
        h('button', { type: 'button', class: 'primary', 'aria-label': `Accept update of ${p.name}`, text: 'Accept update', onclick: async () => {
          app.error(null);
          try {
            const r = await api('POST', `/api/presets/${encodeURIComponent(p.id)}/accept-update`);
            await reload(); // the page as it is now, then the message
            app.flash(`Your photos now use version ${r.adopted_version} of ${p.name}.`);
          } catch (e) { app.error(e); }
        } }));
    }
    if (p.name !== app.me.default_preset || !p.adopted_version) {
      actions.push(h('button', { type: 'button', 'aria-label': `Adopt ${p.name}`, text: 'Adopt', onclick: async () => {
        app.error(null);
        try {
          await api('POST', `/api/presets/${encodeURIComponent(p.id)}/adopt`);
          await app.refreshMe();
          showDefault();
          await reload(); // the page as it is now, then the message
          app.flash(`Adopted ${p.name}: new photos will be edited with it.`);
        } catch (e) { app.error(e); }
      } }));
    }
    actions.push(h('button', { type: 'button', 'aria-label': `Preview ${p.name}`, text: 'Preview', onclick: () => previewOf(p, box) }));
    return card(p, actions, box);
  }

  // ---- loading ----
  async function listAll(scope, maxPages) {
    const out = [];
    let cursor = null;
    for (let i = 0; i < maxPages; i++) {
      const params = new URLSearchParams({ scope, limit: '100' });
      if (cursor) params.set('cursor', cursor);
      const page = await api('GET', `/api/presets?${params}`);
      out.push(...(page.presets || []));
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return out;
  }

  let firstLoad = true;
  async function reload() {
    const [system, own, pub] = await Promise.all([listAll('system', 1), listAll('own', 2), listAll('public', MARKET_PAGES)]);
    if (stopped) return;
    if (firstLoad) {
      // system previews come from the public route once (they do not change here)
      for (const p of system) {
        const box = previewBox(p.name);
        systemList.append(card(p, [useButton(p), h('button', { type: 'button', 'aria-label': `Preview ${p.name}`, text: 'Preview',
          onclick: () => previewOf(p, box) })], box));
        systemPreview(p, box);
      }
    } else {
      for (const li of systemList.children) {
        const p = system.find((s) => s.id === li.dataset.id);
        const b = p && li.querySelector('button[aria-label^="Use as default"]');
        if (b) b.disabled = p.name === app.me.default_preset;
        const badge = li.querySelector('.tag-default');
        if (p && p.name === app.me.default_preset && !badge) li.querySelector('h3').append(h('span', { class: 'tag-default', text: ' default' }));
        if (p && p.name !== app.me.default_preset && badge) badge.remove();
      }
    }
    clear(ownList);
    clear(deletedList);
    const active = own.filter((p) => p.is_active);
    const deleted = own.filter((p) => !p.is_active);
    if (!active.length) ownList.append(h('li', { class: 'empty', text: 'You have no presets of your own yet. Make one from a ComfyUI workflow (API format).' }));
    active.forEach((p, i) => {
      const box = previewBox(p.name);
      ownList.append(card(p, [
        useButton(p),
        h('button', { type: 'button', 'aria-label': `Edit ${p.name}`, text: 'Edit', onclick: async () => {
          app.error(null);
          try { openEditor(await api('GET', `/api/presets/${encodeURIComponent(p.id)}`)); } catch (e) { app.error(e); }
        } }),
        p.is_public
          ? h('button', { type: 'button', 'aria-label': `Unpublish ${p.name}`, text: 'Unpublish', onclick: () => patchOwn(p, { is_public: false }, `${p.name} is private again.`) })
          : h('button', { type: 'button', 'aria-label': `Publish ${p.name}`, text: 'Publish', onclick: () => patchOwn(p, { is_public: true }, `${p.name} is published in the marketplace.`) }),
        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${p.name}`, text: 'Delete',
          onclick: () => {
            // the worker would find no preset for the next photos
            if (p.name === app.me.default_preset) { app.error(new Error(`${p.name} is your default preset: choose another one first.`)); return; }
            patchOwn(p, { is_active: false, ...(p.is_public ? { is_public: false } : {}) }, `${p.name} is deleted. You can restore it below.`);
          } }),
        h('button', { type: 'button', 'aria-label': `Preview ${p.name}`, text: 'Preview', onclick: () => previewOf(p, box) }),
      ], box));
      // the first ones at once; the others on demand (PREVIEW_RATE_PER_MINUTE)
      if (i < AUTO_PREVIEWS) previewOf(p, box);
      else box.status.textContent = 'Choose Preview to see it.';
    });
    deletedBox.hidden = !deleted.length;
    for (const p of deleted) {
      deletedList.append(h('li', {}, h('span', { text: `${p.name} ` }),
        h('button', { type: 'button', 'aria-label': `Restore ${p.name}`, text: 'Restore', onclick: () => patchOwn(p, { is_active: true }, `${p.name} is restored.`) })));
    }
    market = pub.filter((p) => !p.is_own && !p.is_system);
    drawMarket();
    firstLoad = false;
  }
  await reload();
  return stop;
}
