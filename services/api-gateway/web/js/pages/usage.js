// Usage of the period against the plan, the last periods, and the plan card
// (upgrade through Stripe Checkout, manage through the Stripe Portal).
import { api } from '../api.js';
import { h, fmtMoney } from '../dom.js';

const PLANS = {
  free: { name: 'Free', price: '$0' },
  creator: { name: 'Creator', price: '$29 a month' },
  studio: { name: 'Studio', price: '$99 a month' },
};

// The period ends at period_end (exclusive, UTC): its last day is the one before.
const endDay = (iso) => {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Date(d.getTime() - 1).toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric', timeZone: 'UTC' });
};
// The day the next period starts (period_end itself, in UTC).
const startDay = (iso) => {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric', timeZone: 'UTC' });
};
const monthName = (d) => new Date(`${d}T00:00:00Z`).toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric', timeZone: 'UTC' });

export async function usage(main, app) {
  const [u, hist] = await Promise.all([api('GET', '/api/usage'), api('GET', '/api/usage/history')]);
  const me = await app.refreshMe();
  main.append(h('h1', { text: 'Usage and plan' }));
  // Back from Checkout: the plan changes when Stripe's signed webhook has
  // landed; until then the page asks again every second (for a minute).
  let timer = null;
  let waited = 0;
  if (app.checkout === 'success' && me.tier === 'free') {
    main.append(h('p', { class: 'notice', id: 'checkout-note', text: 'Thank you. Your new plan shows here as soon as Stripe confirms the payment.' }));
    const check = async () => {
      timer = null;
      try {
        const now = await api('GET', '/api/me');
        if (now.tier !== 'free') {
          app.checkout = null;
          app.flash(`Your plan is now ${(PLANS[now.tier] || { name: now.tier }).name}.`, true);
          app.go('usage');
          return;
        }
      } catch (e) { app.error(e); }
      if (++waited < 60) timer = setTimeout(check, 1000);
    };
    timer = setTimeout(check, 1000);
  } else if (app.checkout === 'success') {
    app.flash(`Your plan is now ${(PLANS[me.tier] || { name: me.tier }).name}.`);
  } else if (app.checkout === 'cancel') {
    main.append(h('p', { class: 'notice', text: 'Checkout was cancelled; nothing changed.' }));
  }
  if (app.checkout !== 'success' || me.tier !== 'free') app.checkout = null;

  const used = u.images_processed;
  const limit = u.monthly_limit;
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'this-period' },
    h('h2', { id: 'this-period', text: 'This period' }),
    h('p', { class: 'big', id: 'usage-count' }, h('strong', { text: String(used) }), ` of ${limit} images used`),
    h('progress', { max: String(Math.max(limit, 1)), value: String(Math.min(used, limit)), 'aria-label': 'Images used of the limit' }),
    h('p', { id: 'usage-period' }, `Period started ${monthName(u.month)}. ${u.remaining} left.`,
      u.period_end ? ` It ends on ${endDay(u.period_end)}; the count starts again then.` : ''),
    u.images_failed ? h('p', { text: `${u.images_failed} failed (not charged).` }) : null,
    u.images_overage ? h('p', { id: 'overage', text: `Overage: ${u.images_overage} images, ${fmtMoney(u.overage_charged_cents)} so far.` }) : null,
    u.waiting_for_quota ? h('div', { class: 'notice', id: 'waiting-count' },
      h('p', {}, h('strong', { text: `${u.waiting_for_quota} ${u.waiting_for_quota === 1 ? 'photo is' : 'photos are'} waiting for your monthly limit.` }),
        ` They are kept and processed by themselves${u.period_end ? ` when the next period starts on ${startDay(u.period_end)}` : ' when the next period starts'}, or right away after an upgrade.`),
      h('a', { href: '#/jobs', text: 'See your jobs' })) : null));

  const plan = PLANS[me.tier] || { name: me.tier, price: '' };
  const card = h('section', { class: 'panel plan', 'aria-labelledby': 'plan' },
    h('h2', { id: 'plan', text: 'Your plan' }),
    h('p', { class: 'big', id: 'plan-name' }, h('strong', { text: plan.name }), plan.price ? ` · ${plan.price}` : ''),
    me.subscription_status && me.tier !== 'free' ? h('p', { text: `Subscription: ${me.subscription_status}` }) : null);
  const redirect = async (path, body) => {
    app.error(null);
    try {
      const r = await api('POST', path, body);
      location.assign(r.url);
    } catch (e) { app.error(e); }
  };
  const buttons = h('div', { class: 'actions' });
  for (const tier of ['creator', 'studio']) {
    if (tier === me.tier) continue;
    if (me.tier !== 'free') break; // a paid plan changes in the Portal
    buttons.append(h('button', { type: 'button', class: 'primary', id: `upgrade-${tier}`,
      text: `Upgrade to ${PLANS[tier].name} (${PLANS[tier].price})`, onclick: () => redirect('/api/billing/checkout', { tier }) }));
  }
  if (me.tier !== 'free') {
    buttons.append(h('button', { type: 'button', id: 'manage-billing', text: 'Manage billing', onclick: () => redirect('/api/billing/portal') }));
  }
  card.append(buttons);
  main.append(card);

  const periods = hist.periods || [];
  main.append(h('section', { class: 'panel', 'aria-labelledby': 'history' },
    h('h2', { id: 'history', text: 'Past periods' }),
    periods.length ? h('table', { class: 'history' },
      h('thead', {}, h('tr', {}, ['Period', 'Plan', 'Used', 'Failed', 'Overage'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, periods.map((p) => h('tr', {},
        h('td', { text: p.month }), h('td', { text: p.tier }),
        h('td', { text: `${p.images_processed} / ${p.monthly_limit}` }), h('td', { text: String(p.images_failed) }),
        h('td', { text: p.images_overage ? `${p.images_overage} (${fmtMoney(p.overage_charged_cents)})` : '0' })))))
      : h('p', { text: 'No usage recorded yet.' })));
  return () => { app.checkout = null; if (timer) clearTimeout(timer); };
}
