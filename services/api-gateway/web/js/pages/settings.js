// Settings: output sharing, e-mail notices, export my data, delete my account.
import { api } from '../api.js';
import { h } from '../dom.js';

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
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'prefs' },
    h('h2', { id: 'prefs', text: 'Preferences' }), share,
    h('div', { class: 'choice' }, mail, h('label', { for: 'email-notifications', text: 'E-mail me about my photos' }))));

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
