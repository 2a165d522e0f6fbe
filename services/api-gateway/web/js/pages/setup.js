// Onboarding: browse the user's Drive folders, choose the one to watch
// (PUT /api/watch makes Processed inside it), then the preset
// (PATCH /api/me default_preset).
import { api } from '../api.js';
import { h, clear } from '../dom.js';
import { previewImage } from './landing.js';

export async function setup(main, app) {
  const me = app.me;
  main.append(h('h1', { text: 'Folder and preset' }));
  const step1 = h('section', { class: 'panel', 'aria-labelledby': 'step1' },
    h('h2', { id: 'step1', text: '1. The Drive folder to watch' }));
  const step2 = h('section', { class: 'panel', 'aria-labelledby': 'step2' },
    h('h2', { id: 'step2', text: '2. The preset for your photos' }));
  const done = h('section', { class: 'panel', id: 'done', hidden: true });
  main.append(step1, step2, done);

  // ---- step 1: the folder browser ----
  const watching = h('p', { id: 'watching' });
  const showWatching = (w) => {
    clear(watching);
    if (!w || !w.watched_folder_id) {
      watching.append('No folder is watched yet.');
      return;
    }
    watching.append('Watching ', h('strong', { text: w.folder_name || 'your folder' }),
      '. Edited photos go to its ',
      h('a', { href: `https://drive.google.com/drive/folders/${encodeURIComponent(w.output_folder_id)}`,
        target: '_blank', rel: 'noopener', id: 'processed-link', text: 'Processed folder' }), '.');
  };
  showWatching(me.watched_folder_id ? { watched_folder_id: me.watched_folder_id, output_folder_id: me.output_folder_id } : null);

  const trail = [{ id: 'root', name: 'My Drive' }];
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Folder path' });
  const search = h('input', { type: 'search', id: 'folder-search', placeholder: 'Folder name', autocomplete: 'off' });
  const list = h('ul', { class: 'folders', id: 'folders', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', hidden: true, text: 'More folders' });
  const here = h('button', { type: 'button', id: 'choose-here', text: 'Watch this folder' });
  let folders = [];
  let cursor = null;

  const drawList = () => {
    clear(list);
    const q = search.value.trim().toLowerCase();
    const shown = folders.filter((f) => !q || f.name.toLowerCase().includes(q));
    if (!shown.length) list.append(h('li', { class: 'empty', text: folders.length ? 'No folder of that name here.' : 'No folders here.' }));
    for (const f of shown) {
      list.append(h('li', {},
        h('span', { class: 'name', text: f.name }),
        h('span', { class: 'actions' },
          h('button', { type: 'button', 'aria-label': `Open ${f.name}`, text: 'Open', onclick: () => { trail.push(f); load(true); } }),
          h('button', { type: 'button', class: 'primary', 'aria-label': `Watch ${f.name}`, text: 'Watch', disabled: f.can_add_children === false,
            onclick: () => choose(f) }))));
    }
    more.hidden = !cursor;
  };
  const drawCrumbs = () => {
    clear(crumbs);
    trail.forEach((f, i) => {
      if (i) crumbs.append(' / ');
      if (i === trail.length - 1) crumbs.append(h('span', { 'aria-current': 'location', text: f.name }));
      else crumbs.append(h('button', { type: 'button', class: 'link', text: f.name, onclick: () => { trail.length = i + 1; load(true); } }));
    });
    here.hidden = trail.length === 1;
    here.textContent = `Watch ${trail[trail.length - 1].name}`;
  };
  async function load(fresh) {
    app.error(null);
    const parent = trail[trail.length - 1].id;
    if (fresh) { folders = []; cursor = null; search.value = ''; }
    drawCrumbs();
    const q = new URLSearchParams({ parent });
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await api('GET', `/api/drive/folders?${q}`);
      folders = folders.concat(page.folders || []);
      cursor = page.next_cursor || null;
    } catch (e) { app.error(e); }
    drawList();
  }
  async function choose(f) {
    app.error(null);
    try {
      const w = await api('PUT', '/api/watch', { folder_id: f.id });
      w.folder_name = w.folder_name || f.name;
      showWatching(w);
      await app.refreshMe();
      app.flash(`Watching ${w.folder_name}.`);
      showDone();
    } catch (e) { app.error(e); }
  }
  search.addEventListener('input', drawList);
  more.addEventListener('click', () => load(false));
  here.addEventListener('click', () => choose(trail[trail.length - 1]));
  step1.append(watching,
    h('p', { text: 'Choose the folder you will drop photos into. Open a folder to see its subfolders.' }),
    crumbs,
    h('div', { class: 'field' }, h('label', { for: 'folder-search', text: 'Search this folder by name' }), search),
    list, more, here);

  // ---- step 2: the preset ----
  const form = h('form', { id: 'preset-form' });
  const fieldset = h('fieldset', {}, h('legend', { text: 'Preset' }));
  form.append(fieldset, h('button', { type: 'submit', class: 'primary', text: 'Use this preset' }));
  step2.append(form);
  const presets = await api('GET', '/api/presets?scope=system&limit=100');
  for (const p of presets.presets || []) {
    const id = `preset-${p.name}`;
    fieldset.append(h('div', { class: 'choice' },
      h('input', { type: 'radio', name: 'preset', id, value: p.name, checked: p.name === app.me.default_preset }),
      h('label', { for: id }, h('strong', { text: p.name }), p.description ? h('span', { class: 'hint', text: ` ${p.description}` }) : null),
      // what it does, on the sample photo (rendered by the worker's preview lane)
      h('div', { class: 'before-after' },
        h('figure', {}, previewImage(`/api/presets/${p.id}/preview/before.jpg`, `${p.name}: a sample photo before`), h('figcaption', { text: 'Before' })),
        h('figure', {}, previewImage(`/api/presets/${p.id}/preview/after.jpg`, `${p.name}: the same photo after`), h('figcaption', { text: 'After' })))));
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    app.error(null);
    const picked = form.querySelector('input[name=preset]:checked');
    if (!picked) { app.error(new Error('Choose a preset first.')); return; }
    try {
      app.me = await api('PATCH', '/api/me', { default_preset: picked.value });
      app.flash(`New photos will be edited with ${picked.value}.`);
      showDone();
    } catch (e) { app.error(e); }
  });

  function showDone() {
    if (!app.me || !app.me.watched_folder_id) return;
    clear(done).append(h('h2', { text: 'All set' }),
      h('p', {}, 'Drop photos into your watched folder; they are edited with ',
        h('strong', { text: app.me.default_preset }), '.'),
      h('a', { class: 'button primary', href: '#/jobs', text: 'See your jobs' }));
    done.hidden = false;
  }
  showDone();
  await load(true);
}
