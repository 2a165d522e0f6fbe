// Notices: GET /api/notifications (unread first, then newest; keyset pages
// with next_cursor), mark one read, mark all read. Each kind offers its way
// out (reconnect Drive, pick a folder, see usage).
import { api } from '../api.js';
import { h, clear, fmtDate } from '../dom.js';
import { refreshBadge } from '../badge.js';

function action(n, app) {
  switch (n.kind) {
    case 'drive_revoked':
      return h('a', { class: 'button primary', href: `/auth/google/login?login_hint=${encodeURIComponent(app.me.email)}`, text: 'Reconnect Google Drive' });
    case 'folder_gone':
      return h('a', { class: 'button', href: '#/setup', text: 'Pick a folder' });
    case 'usage_80': case 'usage_100': case 'quota_waiting': case 'payment_failed':
      return h('a', { class: 'button', href: '#/usage', text: 'Usage and plan' });
    case 'jobs_failed':
      return h('a', { class: 'button', href: '#/jobs', text: 'See the jobs' });
    default:
      return null;
  }
}

export async function notices(main, app) {
  main.append(h('h1', { text: 'Notices' }));
  const count = h('p', { id: 'unread-count', role: 'status' });
  const all = h('button', { type: 'button', id: 'mark-all-read', text: 'Mark all read' });
  const list = h('ul', { class: 'notices', id: 'notices', 'aria-label': 'Notices, unread first' });
  const empty = h('p', { class: 'empty', hidden: true, text: 'No notices. We tell you here when your plan runs low, photos wait, or Drive needs you.' });
  const more = h('button', { type: 'button', id: 'notices-more', hidden: true, text: 'Older notices' });
  main.append(h('div', { class: 'toolbar' }, count, all), list, empty, more);

  let unread = 0;
  let cursor = null;
  const showCount = () => {
    count.textContent = unread ? `${unread} unread` : 'All read.';
    all.hidden = unread === 0;
  };

  function item(n) {
    const mark = h('button', { type: 'button', class: 'link', text: 'Mark read', 'aria-label': `Mark read: ${n.title}` });
    const li = h('li', { class: 'notice-item', dataset: { id: n.id, kind: n.kind } },
      h('div', { class: 'line' }, h('strong', { class: 'title', text: n.title }),
        h('span', { class: 'meta', text: fmtDate(n.created_at) })),
      h('p', { class: 'message', text: n.message }),
      h('div', { class: 'actions' }, action(n, app), mark));
    const setRead = (read) => {
      li.classList.toggle('unread', !read);
      mark.hidden = read;
    };
    setRead(!!n.read_at);
    mark.addEventListener('click', async () => {
      app.error(null);
      try {
        await api('POST', `/api/notifications/${encodeURIComponent(n.id)}/read`);
        setRead(true);
        unread = Math.max(0, unread - 1);
        showCount();
        refreshBadge();
      } catch (e) { app.error(e); }
    });
    li.setRead = setRead;
    return li;
  }

  async function load(cur) {
    const q = new URLSearchParams({ limit: '20' });
    if (cur) q.set('cursor', cur);
    const page = await api('GET', `/api/notifications?${q}`);
    unread = page.unread_count;
    list.append(...page.notifications.map(item));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    empty.hidden = list.children.length > 0;
    showCount();
  }

  all.addEventListener('click', async () => {
    app.error(null);
    try {
      await api('POST', '/api/notifications/read');
      for (const li of list.children) li.setRead(true);
      unread = 0;
      showCount();
      app.flash('All notices are marked read.');
      refreshBadge();
    } catch (e) { app.error(e); }
  });
  more.addEventListener('click', async () => {
    try { await load(cursor); } catch (e) { app.error(e); }
  });
  clear(list);
  await load(null);
}
