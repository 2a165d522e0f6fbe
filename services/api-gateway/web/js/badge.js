// The unread notices count in the nav: GET /api/notifications?limit=1 gives
// unread_count. Asked every 10 s while the tab is visible and someone is
// signed in, at once when the tab becomes visible again, and after a change
// (refreshBadge()). A hidden tab asks nothing.
import { api } from './api.js';

const EVERY_MS = 10000;
let timer = null;
let signedIn = () => false;

function show(n) {
  const badge = document.getElementById('unread');
  if (!badge) return;
  badge.hidden = !(n > 0);
  badge.textContent = n > 99 ? '99+' : String(n);
  const link = badge.closest('a');
  if (link) link.setAttribute('aria-label', n > 0 ? `Notices, ${n} unread` : 'Notices');
}

export async function refreshBadge() {
  if (timer) { clearTimeout(timer); timer = null; }
  if (!signedIn()) { show(0); return; }
  if (!document.hidden) {
    try {
      const r = await api('GET', '/api/notifications?limit=1');
      show(r.unread_count);
    } catch (e) {
      // a failed count is not worth an error on every page; the next try tells
    }
  }
  if (timer) clearTimeout(timer);
  timer = document.hidden ? null : setTimeout(refreshBadge, EVERY_MS);
}

// isSignedIn: () => bool. Starts the cycle.
export function startBadge(isSignedIn) {
  signedIn = isSignedIn;
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshBadge(); });
  refreshBadge();
}
