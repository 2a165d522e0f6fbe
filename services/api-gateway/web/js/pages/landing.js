// Signed out: what the product does, and the way in.
import { h } from '../dom.js';

// The system presets (sql/api-gateway/001_users_presets_audit.sql), as they describe themselves.
const PRESETS = [
  ['Portrait Pro', 'Flattering portrait edit: warm skin tones, soft contrast, gentle vignette.'],
  ['Product Clean', 'Clean product shot: neutral white balance, bright and crisp.'],
  ['Landscape Vivid', 'Vivid landscape: richer colour, deeper skies, more depth.'],
];

export function landing(main) {
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
      h('ul', { class: 'cards' }, PRESETS.map(([name, what]) =>
        h('li', { class: 'card' }, h('h3', { text: name }), h('p', { text: what }))))),
    h('p', { class: 'note', text: 'Free: 10 images a month. Creator: 100 a month for $29. Studio: 500 a month for $99.' }));
}
