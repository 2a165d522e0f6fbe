// The dashboard: hash routes over the gateway's API.
//   #/          landing (signed out) or where the user is (setup or jobs)
//   #/setup     onboarding: the Drive folder to watch, then the preset
//   #/jobs      the live jobs list
//   #/usage     usage of the period, history, the plan (Checkout, Portal)
//   #/settings  sharing, e-mail, export, delete the account
//   #/presets   system, own and marketplace presets with previews
//   #/notices   the notices, unread first (the nav's badge counts them)
//   #/admin     analytics charts (administrators; others are told no)
import { api, ApiError, setCsrf } from './api.js';
import { h, clear } from './dom.js';
import { landing } from './pages/landing.js';
import { setup } from './pages/setup.js';
import { jobs } from './pages/jobs.js';
import { usage } from './pages/usage.js';
import { settings } from './pages/settings.js';
import { presets } from './pages/presets.js';
import { notices } from './pages/notices.js';
import { startBadge, refreshBadge } from './badge.js';
import { admin } from './pages/admin.js';

const PAGES = { setup, jobs, usage, settings, presets, notices, admin };
const TITLES = { setup: 'Folder and preset', jobs: 'Jobs', usage: 'Usage and plan', settings: 'Settings', presets: 'Presets', notices: 'Notices', admin: 'Admin' };

const app = {
  me: null,
  main: null,
  stopPage: null, // the current page's cleanup (timers)
  async refreshMe() {
    try {
      app.me = await api('GET', '/api/me');
      setCsrf(app.me.csrf_token);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      app.me = null;
      setCsrf('');
    }
    return app.me;
  },
  // A message for this page; keep: it is for the page the caller goes to next
  // (any other change of page clears it).
  flash(text, keep = false) {
    const el = document.getElementById('flash');
    clear(el).append(h('p', { text }));
    app.flashKeep = keep;
  },
  flashKeep: false,
  error(e) {
    const el = document.getElementById('error');
    clear(el);
    if (e) el.append(h('p', { text: e.message || String(e) }));
  },
  go(route) {
    if (location.hash === `#/${route}`) render();
    else location.hash = `#/${route}`;
  },
  signedOut(message) {
    app.me = null;
    setCsrf('');
    if (message) app.flash(message, true);
    app.go('');
  },
};

function showNav(route) {
  const nav = document.getElementById('nav');
  nav.hidden = !app.me;
  if (!app.me) return;
  document.getElementById('who').textContent = app.me.email;
  document.getElementById('nav-admin').hidden = !app.me.is_admin;
  for (const a of nav.querySelectorAll('a[data-route]')) {
    if (a.dataset.route === route) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

let rendering = 0;
async function render() {
  const ticket = ++rendering;
  if (app.stopPage) { app.stopPage(); app.stopPage = null; }
  app.error(null);
  if (app.flashKeep) app.flashKeep = false;
  else clear(document.getElementById('flash'));
  let route = (location.hash.replace(/^#\/?/, '').split(/[/?]/)[0]) || '';
  try {
    if (app.me === null) await app.refreshMe();
  } catch (e) {
    app.error(e);
  }
  if (ticket !== rendering) return;
  if (!app.me && route !== '') { history.replaceState(null, '', '#/'); route = ''; }
  if (app.me && !PAGES[route]) {
    route = app.me.watched_folder_id ? 'jobs' : 'setup';
    history.replaceState(null, '', `#/${route}`);
  }
  showNav(route);
  refreshBadge();
  const main = clear(app.main);
  document.title = route ? `${TITLES[route]} · Creator Automation` : 'Creator Automation';
  try {
    const page = route === '' ? landing : PAGES[route];
    const stop = await page(main, app);
    if (ticket === rendering) app.stopPage = stop || null;
    else if (stop) stop();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { app.signedOut('Your session ended. Sign in again.'); return; }
    app.error(e);
  }
}

function init() {
  app.main = document.getElementById('main');
  const params = new URLSearchParams(location.search);
  if (params.has('checkout')) {
    // Back from Stripe Checkout: the plan changes once Stripe's webhook lands.
    app.checkout = params.get('checkout');
    history.replaceState(null, '', `/${location.hash || '#/usage'}`);
    if (!location.hash || location.hash === '#/') location.hash = '#/usage';
  }
  // The skip link moves the focus; as a hash it would be taken for a route.
  document.querySelector('.skip').addEventListener('click', (ev) => {
    ev.preventDefault();
    app.main.focus();
  });
  document.getElementById('signout').addEventListener('click', async () => {
    try {
      await api('POST', '/auth/logout');
      app.signedOut('You are signed out.');
    } catch (e) { app.error(e); }
  });
  startBadge(() => !!app.me);
  window.addEventListener('hashchange', () => { render(); app.main.focus({ preventScroll: true }); });
  render();
}

init();
