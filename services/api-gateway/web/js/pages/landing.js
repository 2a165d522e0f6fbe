// Signed out: what the product does, and the way in.
import { h } from '../dom.js';

const PRESETS = [
  ['Portrait Pro', 'Skin-friendly tones, a gentle lift of the shadows, crisp eyes.'],
  ['Product Clean', 'Neutral whites, even light and sharp edges for a shop listing.'],
  ['Landscape Vivid', 'Deeper skies, richer greens and a clear horizon.'],
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
    h('p', { class: 'note', text: 'Free: 10 images a month. Creator and Studio plans for more.' }));
}
