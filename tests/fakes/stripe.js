#!/usr/bin/env node
'use strict';
/*
 * Fake of the Stripe API (the parts the billing service uses) on one port.
 * See docs/fakes.md (Stripe) for the full description.
 *
 *   node tests/fakes/stripe.js --port P [--api-key sk_test_x] [--api-version V]
 *        [--webhook-url U --webhook-secret whsec_...] [--verbose]
 *
 * API (Authorization: Bearer sk_test_..., form-encoded bodies with brackets):
 *   POST /v1/customers, GET /v1/customers, GET|POST /v1/customers/:id
 *   POST /v1/checkout/sessions, GET /v1/checkout/sessions/:id
 *   POST /v1/billing_portal/sessions
 *   GET /v1/subscriptions, GET|POST|DELETE /v1/subscriptions/:id
 *   GET /v1/invoices/:id, GET /v1/prices, GET /v1/prices/:id
 *   POST /v1/billing/meter_events
 * Browser pages (no auth): GET /checkout/:id (completes the session, sends the
 *   webhooks, 303 to success_url; ?cancel=1 goes to cancel_url instead),
 *   GET /billing_portal/:id.
 * Admin: the shared /__admin routes of lib/common.js plus the ones below
 *   (see adminRoutes).
 */
const crypto = require('node:crypto');
const common = require('./lib/common');
const { HttpError, readBody, sendJson, sendText } = common;
const { sendEvent, randomId } = require('./stripe-send-event');

const DEFAULT_API_VERSION = '2025-03-31.basil';
const BASIL = '2025-03-31';
const BODY_LIMIT = 1024 * 1024;

// ---------------------------------------------------------------- form bodies

/*
 * Parses Stripe's bracket notation: a[b][c]=1 -> {a:{b:{c:'1'}}},
 * items[0][price]=x -> {items:[{price:'x'}]}, expand[]=a&expand[]=b -> {expand:['a','b']}.
 * Values stay strings, as Stripe receives them.
 */
function parseStripeForm(str) {
  const root = {};
  const params = new URLSearchParams(str);
  for (const [rawKey, value] of params) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    if (!m) throw invalidRequest(`Invalid parameter name: ${rawKey}`, rawKey, 'parameter_invalid_empty');
    const segs = [m[1]];
    for (const s of m[2].matchAll(/\[([^[\]]*)\]/g)) segs.push(s[1]);
    if (segs.some((s) => s === '__proto__' || s === 'constructor' || s === 'prototype')) {
      throw invalidRequest(`Invalid parameter name: ${rawKey}`, rawKey);
    }
    let cur = root;
    for (let i = 0; i < segs.length; i++) {
      let k = segs[i];
      if (k === '' && i > 0) k = String(Object.keys(cur).length);
      if (i === segs.length - 1) {
        cur[k] = value;
      } else {
        if (cur[k] === undefined || typeof cur[k] !== 'object') cur[k] = {};
        cur = cur[k];
      }
    }
  }
  return arrayify(root);
}

function arrayify(v) {
  if (v === null || typeof v !== 'object') return v;
  const keys = Object.keys(v);
  for (const k of keys) v[k] = arrayify(v[k]);
  if (keys.length > 0 && keys.every((k) => /^\d+$/.test(k))) {
    return keys.map(Number).sort((a, b) => a - b).map((k) => v[String(k)]);
  }
  return v;
}

// ---------------------------------------------------------------- errors

function stripeErr(status, type, message, extra) {
  const error = { type, message };
  const { _headers, ...rest } = extra || {};
  Object.assign(error, rest);
  if (error.code) error.doc_url = `https://stripe.com/docs/error-codes/${error.code.replace(/_/g, '-')}`;
  return new HttpError(status, { error }, _headers);
}
function invalidRequest(message, param, code) {
  const extra = {};
  if (code) extra.code = code;
  if (param) extra.param = param;
  return stripeErr(400, 'invalid_request_error', message, extra);
}
function missingParam(param) {
  return invalidRequest(`Missing required param: ${param}.`, param, 'parameter_missing');
}
function noSuch(kind, id, param) {
  return stripeErr(404, 'invalid_request_error', `No such ${kind}: '${id}'`, { code: 'resource_missing', param: param || 'id' });
}

// Body for faults injected through POST /__admin/faults {action:'status', status: N}.
function errorBody(status, reason, message) {
  let error;
  if (status === 429) {
    error = { type: 'invalid_request_error', code: 'rate_limit', message: 'Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.' };
  } else if (status >= 500) {
    error = { type: 'api_error', message: 'Sorry, something went wrong. We\'ve already been notified of the problem, but if you need any help, you can reach us at support.stripe.com/contact.' };
  } else if (status === 401) {
    error = { type: 'invalid_request_error', message: 'Invalid API Key provided: sk_test_********' };
  } else if (status === 402) {
    error = { type: 'card_error', code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' };
  } else if (status === 409) {
    error = { type: 'invalid_request_error', code: 'lock_timeout', message: 'This object cannot be accessed right now because another API request or Stripe process is currently accessing it.' };
  } else if (status === 404) {
    error = { type: 'invalid_request_error', code: 'resource_missing', message: 'No such object' };
  } else {
    error = { type: 'invalid_request_error', message: 'Invalid request' };
  }
  if (reason) error.code = reason;
  if (message) error.message = message;
  return { error };
}

// ---------------------------------------------------------------- helpers

function hash(obj) {
  return crypto.createHash('sha256').update(JSON.stringify(obj)).digest('hex');
}
function clone(o) { return o === undefined ? undefined : JSON.parse(JSON.stringify(o)); }
function versionBefore(v, cutoff) { return String(v || '').slice(0, 10) < cutoff; }
function parseBool(v, param) {
  if (v === undefined) return undefined;
  if (v === 'true' || v === true) return true;
  if (v === 'false' || v === false) return false;
  throw invalidRequest(`Invalid boolean: ${v}`, param, 'parameter_invalid_boolean');
}
function parseIntParam(v, param) {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(String(v))) throw invalidRequest(`Invalid integer: ${v}`, param, 'parameter_invalid_integer');
  return Number(v);
}
function checkKnown(params, allowed) {
  for (const k of Object.keys(params)) {
    if (!allowed.includes(k) && k !== 'expand') {
      throw invalidRequest(`Received unknown parameter: ${k}`, k, 'parameter_unknown');
    }
  }
}
function metadataOf(v, param) {
  if (v === undefined || v === '') return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalidRequest('Invalid object', param || 'metadata', 'parameter_invalid_object');
  const out = {};
  for (const [k, val] of Object.entries(v)) out[k] = String(val);
  return out;
}
function addInterval(ts, interval, count) {
  const d = new Date(ts * 1000);
  const n = count || 1;
  switch (interval) {
    case 'day': d.setUTCDate(d.getUTCDate() + n); break;
    case 'week': d.setUTCDate(d.getUTCDate() + 7 * n); break;
    case 'year': d.setUTCFullYear(d.getUTCFullYear() + n); break;
    default: d.setUTCMonth(d.getUTCMonth() + n); break;
  }
  return Math.floor(d.getTime() / 1000);
}
function listObject(url, data) {
  return { object: 'list', data, has_more: false, url };
}

// ---------------------------------------------------------------- object builders (also used for fixtures)

function buildPrice(p, now) {
  const recurring = p.recurring === null ? null : {
    interval: (p.recurring && p.recurring.interval) || 'month',
    interval_count: (p.recurring && p.recurring.interval_count) || 1,
    meter: (p.recurring && p.recurring.meter) || null,
    trial_period_days: null,
    usage_type: (p.recurring && p.recurring.usage_type) || ((p.recurring && p.recurring.meter) ? 'metered' : 'licensed'),
  };
  const unit = p.unit_amount === undefined ? 900 : p.unit_amount;
  return {
    id: p.id, object: 'price', active: p.active !== false, billing_scheme: 'per_unit',
    created: p.created || now, currency: p.currency || 'usd', custom_unit_amount: null,
    livemode: false, lookup_key: p.lookup_key || null, metadata: p.metadata || {},
    nickname: p.nickname || null, product: p.product || 'prod_FakeCreatorPlan',
    recurring, tax_behavior: 'unspecified', tiers_mode: null, transform_quantity: null,
    type: recurring ? 'recurring' : 'one_time', unit_amount: unit, unit_amount_decimal: String(unit),
  };
}

function buildCustomer(c, now) {
  return {
    id: c.id, object: 'customer', address: null, balance: 0, created: c.created || now,
    currency: null, default_source: null, delinquent: false, description: c.description || null,
    discount: null, email: c.email || null,
    invoice_prefix: c.id.replace(/^cus_/, '').slice(0, 8).toUpperCase(),
    invoice_settings: { custom_fields: null, default_payment_method: null, footer: null, rendering_options: null },
    livemode: false, metadata: c.metadata || {}, name: c.name || null, phone: c.phone || null,
    preferred_locales: [], shipping: null, tax_exempt: 'none', test_clock: null,
  };
}

// Subscriptions are stored in basil shape (periods on the items).
function buildSubscription(s, price, now) {
  const start = s.current_period_start || s.start_date || now;
  const end = s.current_period_end || addInterval(start, price.recurring ? price.recurring.interval : 'month', price.recurring ? price.recurring.interval_count : 1);
  const item = {
    id: s.item_id || randomId('si', 14), object: 'subscription_item', created: s.created || now,
    current_period_end: end, current_period_start: start, discounts: [], metadata: {},
    plan: planFromPrice(price), price: clone(price), subscription: s.id, tax_rates: [],
  };
  const metered = price.recurring && price.recurring.usage_type === 'metered';
  if (!metered) item.quantity = s.quantity === undefined ? 1 : Number(s.quantity);
  return {
    id: s.id, object: 'subscription', application: null, application_fee_percent: null,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null },
    billing_cycle_anchor: start, billing_cycle_anchor_config: null, billing_thresholds: null,
    cancel_at: s.cancel_at_period_end ? end : (s.cancel_at || null),
    cancel_at_period_end: !!s.cancel_at_period_end, canceled_at: s.canceled_at || null,
    cancellation_details: { comment: null, feedback: null, reason: null },
    collection_method: 'charge_automatically', created: s.created || now, currency: price.currency,
    customer: s.customer, days_until_due: null, default_payment_method: 'pm_card_visa',
    default_source: null, default_tax_rates: [], description: null, discounts: [],
    ended_at: s.ended_at || null,
    invoice_settings: { account_tax_ids: null, issuer: { type: 'self' } },
    items: { object: 'list', data: [item], has_more: false, total_count: 1, url: `/v1/subscription_items?subscription=${s.id}` },
    latest_invoice: s.latest_invoice || null, livemode: false, metadata: s.metadata || {},
    next_pending_invoice_item_invoice: null, on_behalf_of: null, pause_collection: null,
    payment_settings: { payment_method_options: null, payment_method_types: null, save_default_payment_method: 'off' },
    pending_invoice_item_interval: null, pending_setup_intent: null, pending_update: null,
    schedule: null, start_date: s.start_date || start, status: s.status || 'active',
    test_clock: null, transfer_data: null,
    trial_end: s.trial_end || null, trial_settings: { end_behavior: { missing_payment_method: 'create_invoice' } },
    trial_start: s.trial_start || null,
  };
}

function planFromPrice(price) {
  return {
    id: price.id, object: 'plan', active: price.active, amount: price.unit_amount,
    amount_decimal: price.unit_amount_decimal, billing_scheme: 'per_unit', created: price.created,
    currency: price.currency, interval: price.recurring ? price.recurring.interval : null,
    interval_count: price.recurring ? price.recurring.interval_count : null, livemode: false,
    metadata: {}, meter: price.recurring ? price.recurring.meter : null, nickname: price.nickname,
    product: price.product, tiers_mode: null, transform_usage: null, trial_period_days: null,
    usage_type: price.recurring ? price.recurring.usage_type : 'licensed',
  };
}

// Invoices are stored in basil shape (subscription under parent).
function buildInvoice(inv, sub, now) {
  const item = sub.items.data[0];
  const qty = item.quantity === undefined ? 0 : item.quantity;
  const amount = inv.amount !== undefined ? inv.amount : item.price.unit_amount * qty;
  const paid = inv.status === 'paid';
  return {
    id: inv.id, object: 'invoice', account_country: 'US', account_name: 'Creator Automation (fake)',
    amount_due: amount, amount_paid: paid ? amount : 0, amount_overpaid: 0,
    amount_remaining: paid ? 0 : amount, amount_shipping: 0, attempt_count: inv.attempt_count || (paid ? 1 : 0),
    attempted: true, auto_advance: !paid, automatic_tax: { disabled_reason: null, enabled: false, liability: null, status: null },
    billing_reason: inv.billing_reason || 'subscription_cycle', collection_method: 'charge_automatically',
    created: now, currency: sub.currency, customer: sub.customer, customer_email: inv.customer_email || null,
    description: null, hosted_invoice_url: null, lines: {
      object: 'list', has_more: false, total_count: 1, url: `/v1/invoices/${inv.id}/lines`,
      data: [{
        id: randomId('il', 14), object: 'line_item', amount, currency: sub.currency,
        description: `${qty || 1} × ${item.price.nickname || item.price.id}`, livemode: false,
        metadata: {}, parent: {
          invoice_item_details: null, type: 'subscription_item_details',
          subscription_item_details: { invoice_item: null, proration: false, proration_details: { credited_items: null }, subscription: sub.id, subscription_item: item.id },
        },
        period: { end: inv.period_end, start: inv.period_start },
        pricing: { price_details: { price: item.price.id, product: item.price.product }, type: 'price_details', unit_amount_decimal: item.price.unit_amount_decimal },
        quantity: item.quantity === undefined ? null : item.quantity,
      }],
    },
    livemode: false, metadata: {}, next_payment_attempt: inv.next_payment_attempt || null,
    number: inv.number || null,
    parent: { quote_details: null, subscription_details: { metadata: sub.metadata, subscription: sub.id }, type: 'subscription_details' },
    period_end: inv.period_end, period_start: inv.period_start,
    status: inv.status, status_transitions: { finalized_at: now, marked_uncollectible_at: null, paid_at: paid ? now : null, voided_at: null },
    subtotal: amount, total: amount,
  };
}

// Renders a stored object for an API version (older versions had the billing
// period on the Subscription and the subscription id on the Invoice).
function render(obj, apiVersion) {
  const out = clone(obj);
  if (!versionBefore(apiVersion, BASIL)) return out;
  if (out.object === 'subscription') {
    const it = out.items.data[0];
    out.current_period_start = it.current_period_start;
    out.current_period_end = it.current_period_end;
    for (const i of out.items.data) { delete i.current_period_start; delete i.current_period_end; }
  } else if (out.object === 'invoice') {
    out.subscription = out.parent && out.parent.subscription_details ? out.parent.subscription_details.subscription : null;
    out.subscription_details = out.parent && out.parent.subscription_details ? { metadata: out.parent.subscription_details.metadata } : null;
    delete out.parent;
    for (const l of out.lines.data) {
      const d = l.parent && l.parent.subscription_item_details;
      l.subscription = d ? d.subscription : null;
      l.subscription_item = d ? d.subscription_item : null;
      l.proration = false;
      l.type = 'subscription';
      l.price = { id: l.pricing.price_details.price };
      delete l.parent; delete l.pricing;
    }
  }
  return out;
}

const DEFAULT_PRICES = [
  { id: 'price_basic_monthly', nickname: 'Basic monthly', unit_amount: 900, recurring: { interval: 'month' }, product: 'prod_FakeBasic' },
  { id: 'price_pro_monthly', nickname: 'Pro monthly', unit_amount: 2900, recurring: { interval: 'month' }, product: 'prod_FakePro' },
  { id: 'price_pro_yearly', nickname: 'Pro yearly', unit_amount: 29000, recurring: { interval: 'year' }, product: 'prod_FakePro' },
  { id: 'price_metered_images', nickname: 'Images processed', unit_amount: 2, recurring: { interval: 'month', usage_type: 'metered', meter: 'mtr_test_images' }, product: 'prod_FakeUsage' },
];

// ---------------------------------------------------------------- the fake

function createStripeFake(options) {
  const opt = options || {};
  const defaultApiVersion = opt.apiVersion || DEFAULT_API_VERSION;
  let st;
  let fake;

  function now() { return Math.floor(Date.now() / 1000) + st.clockOffset; }

  function resetState() {
    st = {
      clockOffset: 0,
      prices: new Map(), customers: new Map(), sessions: new Map(), portalSessions: new Map(),
      subscriptions: new Map(), invoices: new Map(),
      meterEvents: [], meterIdentifiers: new Map(), meterDuplicates: [],
      idempotency: new Map(), events: [], deliveries: [],
      webhook: opt.webhookUrl ? { url: opt.webhookUrl, secret: opt.webhookSecret, api_version: defaultApiVersion } : null,
      completedCheckouts: [],
      deliveryChain: Promise.resolve(),
    };
    const t = Math.floor(Date.now() / 1000);
    for (const p of DEFAULT_PRICES) st.prices.set(p.id, buildPrice(p, t));
  }
  resetState();

  // ------------------------------------------------------------ events / webhooks

  function makeEvent(type, object, previous, request) {
    const ev = {
      id: randomId('evt', 24), object: 'event', api_version: (st.webhook && st.webhook.api_version) || defaultApiVersion,
      created: now(), data: { object: render(object, (st.webhook && st.webhook.api_version) || defaultApiVersion) },
      livemode: false, pending_webhooks: st.webhook ? 1 : 0,
      request: { id: (request && request.id) || null, idempotency_key: (request && request.idempotency_key) || null },
      type,
    };
    if (previous) ev.data.previous_attributes = previous;
    st.events.push(ev);
    return ev;
  }

  async function deliver(ev, attempt) {
    const hook = st.webhook;
    if (!hook) return null;
    const rec = { event_id: ev.id, type: ev.type, url: hook.url, attempt: attempt || 1, at: new Date().toISOString(), status: null, error: null };
    st.deliveries.push(rec);
    try {
      const r = await sendEvent({ url: hook.url, secret: hook.secret, event: ev, timeoutMs: hook.timeout_ms || 10000 });
      rec.status = r.status;
      rec.response = r.body.slice(0, 500);
    } catch (e) {
      rec.error = e.message;
    }
    return rec;
  }

  // Delivers events one after another (in order); returns the delivery records.
  function deliverAll(events) {
    const p = st.deliveryChain.then(async () => {
      const out = [];
      for (const ev of events) { const r = await deliver(ev); if (r) out.push(r); }
      return out;
    });
    st.deliveryChain = p.catch(() => {});
    return p;
  }

  // ------------------------------------------------------------ checkout completion

  async function completeCheckout(session) {
    if (session.status !== 'open') return { events: [], deliveries: [] };
    const t = now();
    let customerId = session.customer;
    if (!customerId) {
      customerId = randomId('cus', 14);
      st.customers.set(customerId, buildCustomer({ id: customerId, email: session.customer_email || 'checkout@example.com' }, t));
    }
    const li = session._line_items[0];
    const price = st.prices.get(li.price);
    const trialDays = session._subscription_data.trial_period_days;
    const subId = randomId('sub', 24);
    const invId = randomId('in', 24);
    const sub = buildSubscription({
      id: subId, customer: customerId, quantity: li.quantity, status: trialDays ? 'trialing' : 'active',
      trial_start: trialDays ? t : null, trial_end: trialDays ? t + trialDays * 86400 : null,
      current_period_start: t, current_period_end: trialDays ? t + trialDays * 86400 : undefined,
      metadata: session._subscription_data.metadata || {}, latest_invoice: invId, created: t, start_date: t,
    }, price, t);
    st.subscriptions.set(subId, sub);
    const item = sub.items.data[0];
    const inv = buildInvoice({
      id: invId, status: 'paid', billing_reason: 'subscription_create', amount: trialDays ? 0 : undefined,
      period_start: item.current_period_start, period_end: item.current_period_start,
      customer_email: (st.customers.get(customerId) || {}).email || null,
      number: `FAKE-${String(st.invoices.size + 1).padStart(4, '0')}`,
    }, sub, t);
    st.invoices.set(invId, inv);
    Object.assign(session, {
      status: 'complete', payment_status: trialDays ? 'no_payment_required' : 'paid',
      customer: customerId, subscription: subId, invoice: invId,
      customer_details: { address: null, email: (st.customers.get(customerId) || {}).email || session.customer_email, name: null, phone: null, tax_exempt: 'none', tax_ids: [] },
    });
    st.completedCheckouts.push({ session: session.id, customer: customerId, subscription: subId, invoice: invId, at: new Date().toISOString() });
    const events = [
      makeEvent('checkout.session.completed', publicSession(session)),
      makeEvent('customer.subscription.created', sub),
      makeEvent('invoice.paid', inv),
    ];
    const deliveries = await deliverAll(events);
    return { events: events.map((e) => e.id), deliveries };
  }

  function publicSession(s) {
    const out = {};
    for (const [k, v] of Object.entries(s)) if (!k.startsWith('_')) out[k] = clone(v);
    return out;
  }

  // ------------------------------------------------------------ subscription changes

  function subscriptionUpdate(sub, changes, reqInfo) {
    const prev = {};
    const item = sub.items.data[0];
    if (changes.cancel_at_period_end !== undefined && changes.cancel_at_period_end !== sub.cancel_at_period_end) {
      prev.cancel_at_period_end = sub.cancel_at_period_end;
      prev.cancel_at = sub.cancel_at;
      prev.canceled_at = sub.canceled_at;
      sub.cancel_at_period_end = changes.cancel_at_period_end;
      sub.cancel_at = changes.cancel_at_period_end ? item.current_period_end : null;
      sub.canceled_at = changes.cancel_at_period_end ? now() : null;
      sub.cancellation_details.reason = changes.cancel_at_period_end ? 'cancellation_requested' : null;
    }
    if (changes.status !== undefined && changes.status !== sub.status) { prev.status = sub.status; sub.status = changes.status; }
    if (changes.metadata) { prev.metadata = clone(sub.metadata); Object.assign(sub.metadata, changes.metadata); for (const [k, v] of Object.entries(sub.metadata)) if (v === '') delete sub.metadata[k]; }
    if (changes.price) {
      const price = st.prices.get(changes.price);
      if (!price) throw noSuch('price', changes.price, 'items[0][price]');
      prev.items = clone(sub.items);
      item.price = clone(price); item.plan = planFromPrice(price);
    }
    if (changes.period) {
      prev.items = prev.items || clone(sub.items);
      item.current_period_start = changes.period.start;
      item.current_period_end = changes.period.end;
      if (sub.cancel_at_period_end) sub.cancel_at = changes.period.end;
    }
    if (Object.keys(prev).length === 0) return null;
    return makeEvent('customer.subscription.updated', sub, prevForVersion(prev), reqInfo);
  }

  // previous_attributes with items: on older versions report the subscription-level period.
  function prevForVersion(prev) {
    const v = (st.webhook && st.webhook.api_version) || defaultApiVersion;
    const out = clone(prev);
    if (out.items && versionBefore(v, BASIL)) {
      const it = out.items.data[0];
      out.current_period_start = it.current_period_start;
      out.current_period_end = it.current_period_end;
      delete out.items;
    }
    return out;
  }

  function cancelSubscription(sub, reqInfo) {
    const t = now();
    sub.status = 'canceled';
    sub.canceled_at = sub.canceled_at || t;
    sub.ended_at = t;
    sub.cancellation_details.reason = sub.cancellation_details.reason || 'cancellation_requested';
    return makeEvent('customer.subscription.deleted', sub, null, reqInfo);
  }

  // ------------------------------------------------------------ API routes

  const routes = [];
  function route(method, pattern, fn) {
    const re = new RegExp(`^${pattern.replace(/:([a-z_]+)/g, '(?<$1>[^/]+)')}$`);
    routes.push({ method, re, fn });
  }

  route('POST', '/v1/customers', (p) => {
    checkKnown(p, ['email', 'name', 'description', 'metadata', 'phone']);
    const c = buildCustomer({ id: randomId('cus', 14), email: p.email, name: p.name, description: p.description, phone: p.phone, metadata: metadataOf(p.metadata) }, now());
    st.customers.set(c.id, c);
    return c;
  });
  route('GET', '/v1/customers', (p) => {
    let data = [...st.customers.values()];
    if (p.email) data = data.filter((c) => c.email === p.email);
    const limit = parseIntParam(p.limit, 'limit') || 10;
    return listObject('/v1/customers', data.reverse().slice(0, limit));
  });
  route('GET', '/v1/customers/:id', (p, m) => {
    const c = st.customers.get(m.id);
    if (!c) throw noSuch('customer', m.id);
    return c;
  });
  route('POST', '/v1/customers/:id', (p, m) => {
    const c = st.customers.get(m.id);
    if (!c) throw noSuch('customer', m.id);
    checkKnown(p, ['email', 'name', 'description', 'metadata', 'phone']);
    for (const k of ['email', 'name', 'description', 'phone']) if (p[k] !== undefined) c[k] = p[k] === '' ? null : p[k];
    if (p.metadata !== undefined) Object.assign(c.metadata, metadataOf(p.metadata));
    return c;
  });

  route('POST', '/v1/checkout/sessions', (p, m, ctx) => {
    checkKnown(p, ['mode', 'line_items', 'success_url', 'cancel_url', 'customer', 'customer_email',
      'client_reference_id', 'metadata', 'subscription_data', 'allow_promotion_codes', 'payment_method_types',
      'billing_address_collection', 'locale', 'ui_mode', 'customer_update', 'automatic_tax', 'tax_id_collection']);
    if (!p.mode) throw missingParam('mode');
    if (!['payment', 'setup', 'subscription'].includes(p.mode)) throw invalidRequest(`Invalid mode: must be one of payment, setup, or subscription`, 'mode', 'parameter_invalid_empty');
    if (p.mode !== 'subscription') throw invalidRequest(`This fake only supports mode=subscription (got ${p.mode}).`, 'mode');
    if (!p.success_url) throw missingParam('success_url');
    if (p.customer && p.customer_email) throw invalidRequest('You may only specify one of these parameters: customer, customer_email.', 'customer', 'parameters_exclusive');
    if (p.customer && !st.customers.has(p.customer)) throw noSuch('customer', p.customer, 'customer');
    if (p.client_reference_id !== undefined && p.client_reference_id.length > 200) throw invalidRequest('client_reference_id must be at most 200 characters', 'client_reference_id', 'string_length_exceeds_maximum');
    if (!Array.isArray(p.line_items) || p.line_items.length === 0) throw missingParam('line_items');
    const lineItems = p.line_items.map((li, i) => {
      if (!li || !li.price) throw missingParam(`line_items[${i}][price]`);
      const price = st.prices.get(li.price);
      if (!price) throw noSuch('price', li.price, `line_items[${i}][price]`);
      const metered = price.recurring && price.recurring.usage_type === 'metered';
      if (metered && li.quantity !== undefined) {
        throw invalidRequest(`Quantity should not be specified where usage_type is \`metered\`. Remove quantity from \`line_items[${i}]\``, `line_items[${i}][quantity]`);
      }
      if (!metered && li.quantity === undefined) throw missingParam(`line_items[${i}][quantity]`);
      const quantity = li.quantity === undefined ? undefined : parseIntParam(li.quantity, `line_items[${i}][quantity]`);
      if (quantity !== undefined && quantity < 1) throw invalidRequest('Quantity must be at least 1', `line_items[${i}][quantity]`);
      return { price: li.price, quantity };
    });
    const sd = p.subscription_data || {};
    const subscriptionData = {
      metadata: metadataOf(sd.metadata, 'subscription_data[metadata]'),
      trial_period_days: parseIntParam(sd.trial_period_days, 'subscription_data[trial_period_days]'),
    };
    const t = now();
    const id = `cs_test_${crypto.randomBytes(30).toString('base64url').replace(/[-_]/g, 'a').slice(0, 58)}`;
    const price0 = st.prices.get(lineItems[0].price);
    const total = lineItems.reduce((a, li) => a + (li.quantity || 0) * st.prices.get(li.price).unit_amount, 0);
    const s = {
      id, object: 'checkout.session', after_expiration: null, allow_promotion_codes: p.allow_promotion_codes === 'true' ? true : null,
      amount_subtotal: total, amount_total: total, automatic_tax: { enabled: false, liability: null, status: null },
      billing_address_collection: null, cancel_url: p.cancel_url || null,
      client_reference_id: p.client_reference_id || null, consent: null, created: t, currency: price0.currency,
      customer: p.customer || null, customer_creation: p.customer ? null : 'always', customer_details: null,
      customer_email: p.customer_email || null, expires_at: t + 86400, invoice: null, livemode: false,
      locale: p.locale || null, metadata: metadataOf(p.metadata), mode: 'subscription',
      payment_intent: null, payment_method_types: ['card'], payment_status: 'unpaid',
      status: 'open', submit_type: null, subscription: null, success_url: p.success_url,
      ui_mode: 'hosted', url: `${ctx.baseUrl}/checkout/${id}`,
      _line_items: lineItems, _subscription_data: subscriptionData,
    };
    st.sessions.set(id, s);
    return publicSession(s);
  });
  route('GET', '/v1/checkout/sessions/:id', (p, m) => {
    const s = st.sessions.get(m.id);
    if (!s) throw noSuch('checkout.session', m.id);
    return publicSession(s);
  });

  route('POST', '/v1/billing_portal/sessions', (p, m, ctx) => {
    checkKnown(p, ['customer', 'return_url', 'configuration', 'flow_data', 'locale', 'on_behalf_of']);
    if (!p.customer) throw missingParam('customer');
    if (!st.customers.has(p.customer)) throw noSuch('customer', p.customer, 'customer');
    const id = randomId('bps', 24);
    const s = {
      id, object: 'billing_portal.session', configuration: p.configuration || 'bpc_FakeDefaultConfig',
      created: now(), customer: p.customer, flow: null, livemode: false, locale: p.locale || null,
      on_behalf_of: null, return_url: p.return_url || null, url: `${ctx.baseUrl}/billing_portal/${id}`,
    };
    st.portalSessions.set(id, s);
    return s;
  });

  route('GET', '/v1/subscriptions', (p) => {
    let data = [...st.subscriptions.values()];
    if (p.customer) data = data.filter((s) => s.customer === p.customer);
    if (p.price) data = data.filter((s) => s.items.data[0].price.id === p.price);
    const status = p.status || 'active_default';
    if (status === 'active_default') data = data.filter((s) => s.status !== 'canceled' && s.status !== 'incomplete_expired');
    else if (status !== 'all') data = data.filter((s) => s.status === status);
    const limit = parseIntParam(p.limit, 'limit') || 10;
    return listObject('/v1/subscriptions', data.reverse().slice(0, limit));
  });
  route('GET', '/v1/subscriptions/:id', (p, m) => {
    const s = st.subscriptions.get(m.id);
    if (!s) throw noSuch('subscription', m.id);
    return s;
  });
  route('POST', '/v1/subscriptions/:id', (p, m, ctx) => {
    const s = st.subscriptions.get(m.id);
    if (!s) throw noSuch('subscription', m.id);
    checkKnown(p, ['cancel_at_period_end', 'metadata', 'proration_behavior', 'description']);
    if (s.status === 'canceled') throw invalidRequest('A canceled subscription can only update its cancellation_details and metadata.', 'cancel_at_period_end');
    const ev = subscriptionUpdate(s, {
      cancel_at_period_end: parseBool(p.cancel_at_period_end, 'cancel_at_period_end'),
      metadata: p.metadata !== undefined ? metadataOf(p.metadata) : undefined,
    }, ctx.reqInfo);
    if (ev) deliverAll([ev]);
    return s;
  });
  route('DELETE', '/v1/subscriptions/:id', (p, m, ctx) => {
    const s = st.subscriptions.get(m.id);
    if (!s) throw noSuch('subscription', m.id);
    if (s.status === 'canceled') throw invalidRequest(`No such subscription: '${m.id}'. This subscription has already been canceled.`, 'id', 'resource_missing');
    deliverAll([cancelSubscription(s, ctx.reqInfo)]);
    return s;
  });

  route('GET', '/v1/invoices/:id', (p, m) => {
    const inv = st.invoices.get(m.id);
    if (!inv) throw noSuch('invoice', m.id);
    return inv;
  });
  route('GET', '/v1/prices', (p) => listObject('/v1/prices', [...st.prices.values()].filter((x) => p.active === undefined || String(x.active) === p.active)));
  route('GET', '/v1/prices/:id', (p, m) => {
    const price = st.prices.get(m.id);
    if (!price) throw noSuch('price', m.id);
    return price;
  });

  route('POST', '/v1/billing/meter_events', (p, m, ctx) => {
    checkKnown(p, ['event_name', 'payload', 'identifier', 'timestamp']);
    if (!p.event_name) throw missingParam('event_name');
    if (p.event_name.length > 100) throw invalidRequest('event_name must be at most 100 characters', 'event_name', 'string_length_exceeds_maximum');
    if (!p.payload || typeof p.payload !== 'object') throw missingParam('payload');
    if (!p.payload.stripe_customer_id) throw missingParam('payload[stripe_customer_id]');
    if (p.payload.value === undefined) throw missingParam('payload[value]');
    if (!/^-?\d+(\.\d+)?$/.test(p.payload.value)) throw invalidRequest(`Invalid value for payload[value]: ${p.payload.value} is not a number.`, 'payload[value]');
    const t = now();
    let ts = t;
    if (p.timestamp !== undefined) {
      ts = parseIntParam(p.timestamp, 'timestamp');
      if (ts < t - 35 * 86400) throw invalidRequest('Timestamp must be within the past 35 calendar days.', 'timestamp');
      if (ts > t + 300) throw invalidRequest('Timestamp must not be more than 5 minutes in the future.', 'timestamp');
    }
    const identifier = p.identifier || crypto.randomUUID();
    if (identifier.length > 100) throw invalidRequest('identifier must be at most 100 characters', 'identifier', 'string_length_exceeds_maximum');
    const seen = st.meterIdentifiers.get(identifier);
    if (seen !== undefined && t - seen < 86400) {
      st.meterDuplicates.push({ identifier, event_name: p.event_name, at: new Date().toISOString() });
      throw stripeErr(400, 'invalid_request_error', `An event already exists with identifier ${identifier}.`, { param: 'identifier', _headers: { 'Stripe-Should-Retry': 'false' } });
    }
    st.meterIdentifiers.set(identifier, t);
    const payload = {};
    for (const [k, v] of Object.entries(p.payload)) payload[k] = String(v);
    const ev = { object: 'billing.meter_event', created: t, event_name: p.event_name, identifier, livemode: false, payload, timestamp: ts };
    st.meterEvents.push({ ...ev, customer_exists: st.customers.has(payload.stripe_customer_id), idempotency_key: ctx.reqInfo.idempotency_key });
    return ev;
  });
  for (const e of routes) e.fn.displayName = e.re.source;

  // ------------------------------------------------------------ browser pages

  function html(res, status, title, body, headers) {
    const data = Buffer.from(`<!doctype html><html><head><title>${title}</title></head><body>${body}</body></html>\n`);
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': data.length, ...(headers || {}) });
    res.end(data);
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]); }

  async function checkoutPage(req, res, ctx, id) {
    const s = st.sessions.get(id);
    if (!s) return html(res, 404, 'Not found', `No such checkout session ${esc(id)}`);
    if (ctx.query.get('cancel')) {
      if (!s.cancel_url) return html(res, 200, 'Canceled', 'Checkout canceled (no cancel_url).');
      return html(res, 303, 'Canceled', 'Redirecting', { Location: s.cancel_url });
    }
    if (s.status === 'open') {
      if (s.expires_at < now()) { s.status = 'expired'; return html(res, 410, 'Expired', 'This checkout session has expired.'); }
      await completeCheckout(s);
    } else if (s.status !== 'complete') {
      return html(res, 410, 'Expired', `This checkout session is ${esc(s.status)}.`);
    }
    const dest = s.success_url.split('{CHECKOUT_SESSION_ID}').join(s.id);
    return html(res, 303, 'Paid', `Payment complete. <a href="${esc(dest)}">Continue</a>`, { Location: dest });
  }

  // ------------------------------------------------------------ request handling

  function authenticate(req) {
    const h = req.headers.authorization || '';
    let key = null;
    const bearer = /^Bearer\s+(\S+)$/i.exec(h);
    if (bearer) key = bearer[1];
    const basic = /^Basic\s+(\S+)$/i.exec(h);
    if (basic) key = Buffer.from(basic[1], 'base64').toString('utf8').split(':')[0];
    if (!key) {
      throw stripeErr(401, 'invalid_request_error', 'You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. \'Authorization: Bearer YOUR_SECRET_KEY\'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.');
    }
    const ok = opt.apiKey ? key === opt.apiKey : /^(sk|rk)_test_\w+$/.test(key);
    if (!ok) {
      const masked = key.length > 8 ? `${key.slice(0, 8)}${'*'.repeat(Math.max(0, key.length - 12))}${key.slice(-4)}` : key;
      throw stripeErr(401, 'invalid_request_error', `Invalid API Key provided: ${masked}`);
    }
    return key;
  }

  async function handle(req, res, ctx) {
    const requestId = randomId('req', 14);
    res.setHeader('Request-Id', requestId);
    ctx.baseUrl = `http://${req.headers.host || `127.0.0.1:${fake.port}`}`;
    let m = /^\/checkout\/([^/]+)$/.exec(ctx.path);
    if (m && req.method === 'GET') return checkoutPage(req, res, ctx, m[1]);
    m = /^\/billing_portal\/([^/]+)$/.exec(ctx.path);
    if (m && req.method === 'GET') {
      const s = st.portalSessions.get(m[1]);
      if (!s) return html(res, 404, 'Not found', 'No such portal session');
      return html(res, 200, 'Billing portal', `Customer ${esc(s.customer)}. <a href="${esc(s.return_url || '/')}">Return</a>`);
    }

    const apiKey = authenticate(req);
    const apiVersion = req.headers['stripe-version'] || defaultApiVersion;
    let params;
    if (req.method === 'POST') {
      const raw = (await readBody(req, BODY_LIMIT)).toString('utf8');
      params = parseStripeForm(raw);
    } else {
      params = parseStripeForm(ctx.url.search.slice(1));
    }
    const idemKey = req.method === 'POST' ? req.headers['idempotency-key'] : undefined;
    ctx.reqInfo = { id: requestId, idempotency_key: idemKey || null };
    ctx.note({ params, idempotency_key: idemKey || null, stripe_version: req.headers['stripe-version'] || null });

    let found = null;
    for (const r of routes) {
      if (r.method !== req.method) continue;
      const mm = r.re.exec(ctx.path);
      if (mm) { found = { r, groups: mm.groups || {} }; break; }
    }
    if (!found) {
      throw stripeErr(404, 'invalid_request_error', `Unrecognized request URL (${req.method}: ${ctx.path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`);
    }

    let storeKey = null;
    if (idemKey) {
      if (idemKey.length > 255) throw invalidRequest('Idempotency-Key must be at most 255 characters', 'Idempotency-Key');
      storeKey = `${apiKey}\n${idemKey}`;
      const prev = st.idempotency.get(storeKey);
      if (prev && Date.now() - prev.at > 24 * 3600 * 1000) st.idempotency.delete(storeKey);
      else if (prev) {
        if (prev.method !== req.method || prev.path !== ctx.path || prev.paramsHash !== hash(params)) {
          throw stripeErr(400, 'idempotency_error', `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idemKey}' if you meant to execute a different request.`);
        }
        ctx.note({ idempotent_replayed: true });
        return sendJson(res, prev.status, prev.body, { 'Idempotent-Replayed': 'true', 'Original-Request': prev.requestId, 'Idempotency-Key': idemKey });
      }
    }

    let status = 200;
    let body;
    try {
      body = render(await found.r.fn(params, found.groups, ctx), apiVersion);
    } catch (e) {
      if (e instanceof HttpError) throw e; // validation errors are not saved
      status = 500;
      body = errorBody(500);
      common.log('stripe', `handler error: ${e && e.stack}`);
    }
    if (storeKey) {
      st.idempotency.set(storeKey, { method: req.method, path: ctx.path, paramsHash: hash(params), status, body, requestId, at: Date.now() });
    }
    const headers = idemKey ? { 'Idempotency-Key': idemKey } : {};
    return sendJson(res, status, body, headers);
  }

  // ------------------------------------------------------------ admin routes

  function findSubOr404(id) {
    const s = st.subscriptions.get(id);
    if (!s) throw new HttpError(404, { error: `no subscription ${id}` });
    return s;
  }

  const admin = {
    'GET /state': async (req, res) => sendJson(res, 200, {
      prices: [...st.prices.values()], customers: [...st.customers.values()],
      checkout_sessions: [...st.sessions.values()].map(publicSession),
      billing_portal_sessions: [...st.portalSessions.values()],
      subscriptions: [...st.subscriptions.values()], invoices: [...st.invoices.values()],
      completed_checkouts: st.completedCheckouts, clock_offset: st.clockOffset,
    }),
    'POST /seed': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      const t = now();
      for (const p of b.prices || []) {
        if (!p.id) throw new HttpError(400, { error: 'price needs id' });
        st.prices.set(p.id, buildPrice(p, t));
      }
      for (const c of b.customers || []) {
        const id = c.id || randomId('cus', 14);
        st.customers.set(id, buildCustomer({ ...c, id }, t));
      }
      const subs = [];
      for (const s of b.subscriptions || []) {
        const price = st.prices.get(s.price || 'price_basic_monthly');
        if (!price) throw new HttpError(400, { error: `unknown price ${s.price}` });
        if (!s.customer) throw new HttpError(400, { error: 'subscription needs customer' });
        if (!st.customers.has(s.customer)) st.customers.set(s.customer, buildCustomer({ id: s.customer }, t));
        const id = s.id || randomId('sub', 24);
        st.subscriptions.set(id, buildSubscription({ ...s, id }, price, t));
        subs.push(id);
      }
      sendJson(res, 200, { ok: true, subscriptions: subs });
    },
    'GET /meter_events': async (req, res) => {
      const totals = {};
      for (const e of st.meterEvents) {
        const byCust = totals[e.event_name] || (totals[e.event_name] = {});
        byCust[e.payload.stripe_customer_id] = (byCust[e.payload.stripe_customer_id] || 0) + Number(e.payload.value);
      }
      sendJson(res, 200, { events: st.meterEvents, totals, duplicates_rejected: st.meterDuplicates });
    },
    'POST /webhook': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      if (!b.url || !b.secret) throw new HttpError(400, { error: 'need url and secret' });
      st.webhook = { url: b.url, secret: b.secret, api_version: b.api_version || defaultApiVersion, timeout_ms: b.timeout_ms };
      sendJson(res, 200, { ok: true, webhook: { url: b.url, api_version: st.webhook.api_version } });
    },
    'GET /webhook': async (req, res) => sendJson(res, 200, { webhook: st.webhook ? { url: st.webhook.url, api_version: st.webhook.api_version } : null }),
    'DELETE /webhook': async (req, res) => { st.webhook = null; sendJson(res, 200, { ok: true }); },
    'GET /events': async (req, res) => sendJson(res, 200, { events: st.events }),
    'GET /deliveries': async (req, res) => { await st.deliveryChain; sendJson(res, 200, { deliveries: st.deliveries }); },
    // POST /__admin/events/{evt_id}/resend: re-signs (new t) and delivers again.
    'POST /events/*': async (req, res, ctx) => {
      const mm = /^\/events\/([^/]+)\/resend$/.exec(ctx.adminPath);
      if (!mm) throw new HttpError(404, { error: 'use POST /__admin/events/{id}/resend' });
      const ev = st.events.find((e) => e.id === mm[1]);
      if (!ev) throw new HttpError(404, { error: `no event ${mm[1]}` });
      const attempts = st.deliveries.filter((d) => d.event_id === ev.id).length;
      const p = st.deliveryChain.then(() => deliver(ev, attempts + 1));
      st.deliveryChain = p.catch(() => {});
      sendJson(res, 200, { delivery: await p });
    },
    // POST /__admin/checkout/{cs_id}/complete: like visiting the checkout url, JSON answer.
    'POST /checkout/*': async (req, res, ctx) => {
      const mm = /^\/checkout\/([^/]+)\/complete$/.exec(ctx.adminPath);
      if (!mm) throw new HttpError(404, { error: 'use POST /__admin/checkout/{id}/complete' });
      const s = st.sessions.get(mm[1]);
      if (!s) throw new HttpError(404, { error: `no session ${mm[1]}` });
      const r = await completeCheckout(s);
      sendJson(res, 200, { session: publicSession(s), ...r });
    },
    // POST /__admin/subscriptions/{id}/{renew|payment_failed|trial_will_end|cancel|update}
    'POST /subscriptions/*': async (req, res, ctx) => {
      const mm = /^\/subscriptions\/([^/]+)\/([a-z_]+)$/.exec(ctx.adminPath);
      if (!mm) throw new HttpError(404, { error: 'use POST /__admin/subscriptions/{id}/{action}' });
      const sub = findSubOr404(mm[1]);
      const b = (await common.readJson(req)) || {};
      const item = sub.items.data[0];
      const events = [];
      const t = now();
      switch (mm[2]) {
        case 'renew': {
          const start = item.current_period_end;
          const end = addInterval(start, item.price.recurring.interval, item.price.recurring.interval_count);
          const invId = randomId('in', 24);
          const inv = buildInvoice({ id: invId, status: 'paid', billing_reason: 'subscription_cycle', period_start: item.current_period_start, period_end: start }, sub, t);
          st.invoices.set(invId, inv);
          sub.latest_invoice = invId;
          const upd = subscriptionUpdate(sub, { period: { start, end }, status: sub.status === 'trialing' || sub.status === 'past_due' ? 'active' : undefined });
          events.push(makeEvent('invoice.paid', inv));
          if (upd) events.push(upd);
          break;
        }
        case 'payment_failed': {
          const invId = randomId('in', 24);
          const inv = buildInvoice({ id: invId, status: 'open', billing_reason: 'subscription_cycle', attempt_count: b.attempt_count || 1, next_payment_attempt: t + 3 * 86400, period_start: item.current_period_start, period_end: item.current_period_end }, sub, t);
          st.invoices.set(invId, inv);
          sub.latest_invoice = invId;
          events.push(makeEvent('invoice.payment_failed', inv));
          const upd = subscriptionUpdate(sub, { status: b.status || 'past_due' });
          if (upd) events.push(upd);
          break;
        }
        case 'trial_will_end':
          events.push(makeEvent('customer.subscription.trial_will_end', sub));
          break;
        case 'cancel':
          if (sub.status !== 'canceled') events.push(cancelSubscription(sub));
          break;
        case 'update': {
          const upd = subscriptionUpdate(sub, {
            status: b.status, cancel_at_period_end: b.cancel_at_period_end, metadata: b.metadata, price: b.price,
            period: b.current_period_end ? { start: b.current_period_start || item.current_period_start, end: b.current_period_end } : undefined,
          });
          if (upd) events.push(upd);
          break;
        }
        default: throw new HttpError(404, { error: `unknown action ${mm[2]}` });
      }
      const deliveries = await deliverAll(events);
      sendJson(res, 200, { subscription: sub, events: events.map((e) => e.id), deliveries });
    },
    'POST /clock': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      if (typeof b.offset_seconds === 'number') st.clockOffset = b.offset_seconds;
      if (typeof b.advance_seconds === 'number') st.clockOffset += b.advance_seconds;
      sendJson(res, 200, { offset_seconds: st.clockOffset, now: now() });
    },
  };

  fake = common.createFake({
    name: 'stripe', handle, admin, errorBody, bodyLimit: BODY_LIMIT,
    onReset: async () => { await st.deliveryChain; resetState(); },
  });
  fake.state = () => st;
  return fake;
}

module.exports = {
  createStripeFake, parseStripeForm, buildPrice, buildCustomer, buildSubscription, buildInvoice,
  render, DEFAULT_PRICES, DEFAULT_API_VERSION,
};

if (require.main === module) {
  let args;
  try {
    args = common.parseArgs(process.argv.slice(2), {
      port: 0, host: '127.0.0.1', 'api-key': '', 'api-version': DEFAULT_API_VERSION,
      'webhook-url': '', 'webhook-secret': '', verbose: false,
    });
  } catch (e) {
    process.stderr.write(`stripe fake: ${e.message}\n`);
    process.exit(2);
  }
  const fake = createStripeFake({
    apiKey: args['api-key'] || null, apiVersion: args['api-version'],
    webhookUrl: args['webhook-url'] || null, webhookSecret: args['webhook-secret'] || null,
  });
  common.runMain(fake, args).catch((e) => { process.stderr.write(`stripe fake: ${e.message}\n`); process.exit(1); });
}
