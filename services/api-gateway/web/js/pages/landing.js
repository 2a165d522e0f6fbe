// Signed out: what the product does, and the way in.
import { h } from '../dom.js';

// The system presets with their before/after previews, from the public
// GET /api/system-presets. A preview still rendering is 503 preview_pending
// (Retry-After: 2): the image is asked for again every 2 s, up to a minute.
const RETRY_MS = 2000;
const RETRIES = 30;

const title = (name) => name.replace(/[_-]+/g, ' ').replace(/\b\w/g, (c) => c.toUpperCase());

export function previewImage(url, alt) {
  const img = h('img', { alt, width: 320, height: 240, decoding: 'async', class: 'preview-img' });
  let tries = 0;
  img.addEventListener('error', () => {
    if (++tries > RETRIES || !img.isConnected) return;
    setTimeout(() => { img.src = `${url}?try=${tries}`; }, RETRY_MS);
  });
  img.src = url;
  return img;
}

function presetCard(p) {
  const name = title(p.name);
  return h('li', { class: 'card preset-card', dataset: { preset: p.name } },
    h('h3', { text: name }),
    p.description ? h('p', { text: p.description }) : null,
    h('div', { class: 'before-after' },
      h('figure', {}, previewImage(p.before_url, `${name}: a sample photo before`), h('figcaption', { text: 'Before' })),
      h('figure', {}, previewImage(p.after_url, `${name}: the same photo after`), h('figcaption', { text: 'After' }))));
}

async function loadPresets(list) {
  try {
    const res = await fetch('/api/system-presets', { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    list.append(...data.presets.map(presetCard));
  } catch (e) {
    list.append(h('li', { class: 'card' }, h('p', { text: 'Portrait Pro, Product Clean and Landscape Vivid: sign in to see them at work.' })));
  }
}

export function landing(main) {
  const presetList = h('ul', { class: 'cards', id: 'preset-examples' });
  main.append(
    h('section', { class: 'hero' },
      h('h1', { text: 'Your photos, edited while you sleep' }),
      h('p', { class: 'lead', text: 'Drop photos into a Google Drive folder. Creator Automation edits each one with the preset you choose and puts the result in a Processed folder next to it.' }),
      h('a', { class: 'button primary', href: '/auth/google/login', id: 'signin', text: 'Sign in with Google' })),
    h('section', { 'aria-labelledby': 'how' },
      h('h2', { id: 'how', text: 'How it works' }),
      h('ol', { class: 'steps' },
        h('li', { text: 'Sign in with Google and choose the Drive folder to watch.' }),
        h('li', { text: 'Pick a preset for your photos.' }),
        h('li', { text: 'Drop photos in. Edited copies appear in Processed within a minute.' }))),
    h('section', { 'aria-labelledby': 'presets' },
      h('h2', { id: 'presets', text: 'Presets' }),
      presetList),
    h('p', { class: 'note', text: 'Free: 10 images a month. Creator: 100 a month for $29. Studio: 500 a month for $99.' }));
  loadPresets(presetList);
  return null;
}
