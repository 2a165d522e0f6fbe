// Settings: output sharing, e-mail notices (the master switch and each kind),
// Google Drive (reconnect), export my data, delete my account.
import { api } from '../api.js';
import { h } from '../dom.js';

const KINDS = [
  ['usage', 'Usage at 80 % and 100 % of my plan'],
  ['quota_waiting', 'Photos waiting for my monthly limit'],
  ['drive', 'Google Drive access lost or the watched folder gone'],
  ['payment', 'A payment that failed'],
  ['jobs', 'A digest of my finished photos'],
];

export async function settings(main, app) {
  const me = await app.refreshMe();
  main.append(h('h1', { text: 'Settings' }));

  const save = async (patch, what) => {
    app.error(null);
    try {
      app.me = await api('PATCH', '/api/me', patch);
      app.flash(`Saved: ${what}.`);
    } catch (e) { app.error(e); }
  };

  const share = h('fieldset', {}, h('legend', { text: 'Sharing of edited photos' }),
    [['link', 'Anyone with the link can view them (e-mails carry the link)'], ['private', 'Private: only you, no link in e-mails']]
      .map(([v, label]) => h('div', { class: 'choice' },
        h('input', { type: 'radio', name: 'share', id: `share-${v}`, value: v, checked: me.share_outputs === v,
          onchange: () => save({ share_outputs: v }, `sharing ${v}`) }),
        h('label', { for: `share-${v}`, text: label }))));
  const mail = h('input', { type: 'checkbox', id: 'email-notifications', checked: !!me.email_notifications,
    onchange: () => save({ email_notifications: mail.checked }, `e-mails ${mail.checked ? 'on' : 'off'}`) });
  // Each kind of e-mail (PATCH /api/me email_opt_out: the kinds turned off).
  // The notices page lists them all whatever is chosen here.
  const optOut = new Set(me.email_opt_out || []);
  const kinds = KINDS.map(([kind, label]) => {
    const box = h('input', { type: 'checkbox', id: `email-kind-${kind}`, value: kind, checked: !optOut.has(kind), disabled: !me.email_notifications });
    box.addEventListener('change', () => {
      const off = kinds.filter((k) => !k.box.checked).map((k) => k.kind);
      save({ email_opt_out: off }, `e-mails about ${label.toLowerCase()} ${box.checked ? 'on' : 'off'}`);
    });
    return { kind, box, el: h('div', { class: 'choice' }, box, h('label', { for: `email-kind-${kind}`, text: label })) };
  });
  mail.addEventListener('change', () => { for (const k of kinds) k.box.disabled = !mail.checked; });
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'prefs' },
    h('h2', { id: 'prefs', text: 'Preferences' }), share,
    h('div', { class: 'choice' }, mail, h('label', { for: 'email-notifications', text: 'E-mail me about my photos' })),
    h('fieldset', { id: 'email-kinds' }, h('legend', { text: 'E-mail me about' }), kinds.map((k) => k.el),
      h('p', { class: 'hint', text: 'Every notice also shows on the Notices page, whatever you choose here.' }))));

  const connected = me.drive_connected !== false;
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'drive' },
    h('h2', { id: 'drive', text: 'Google Drive' }),
    h('p', { id: 'drive-state', text: connected ? 'Connected.' : 'Disconnected: new photos are not picked up until you reconnect.' }),
    h('a', { class: connected ? 'button' : 'button primary', id: 'settings-reconnect', href: `/auth/google/login?login_hint=${encodeURIComponent(me.email)}`,
      text: 'Reconnect Google Drive' }),
    h('p', { class: 'hint', text: 'Signs you in with Google again, which gives us a fresh permission to your Drive.' })));

  main.append(h('section', { class: 'panel', 'aria-labelledby': 'data' },
    h('h2', { id: 'data', text: 'Your data' }),
    h('p', { text: 'Everything we hold about you, as one JSON file.' }),
    h('a', { class: 'button', href: '/api/me/export', download: '', id: 'export', text: 'Export my data' })));

  const confirm = h('input', { type: 'email', id: 'delete-confirm', autocomplete: 'off', required: true });
  const form = h('form', { id: 'delete-form' },
    h('p', { text: 'Deleting your account stops processing, cancels a paid plan at the end of its period and removes your data for good. Your photos in Drive stay.' }),
    h('div', { class: 'field' }, h('label', { for: 'delete-confirm', text: `Type your e-mail (${me.email}) to confirm` }), confirm),
    h('button', { type: 'submit', class: 'danger', text: 'Delete my account' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    app.error(null);
    if (confirm.value.trim().toLowerCase() !== me.email.toLowerCase()) {
      app.error(new Error('Type your e-mail address exactly to confirm.'));
      confirm.focus();
      return;
    }
    try {
      await api('DELETE', '/api/me', { confirm: confirm.value.trim() });
      app.signedOut('Your account is deleted.');
    } catch (e) { app.error(e); }
  });
  main.append(h('section', { class: 'panel danger-zone', 'aria-labelledby': 'delete' },
    h('h2', { id: 'delete', text: 'Delete my account' }), form));
}
