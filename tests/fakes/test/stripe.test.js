'use strict';
// Tests of the Stripe fake through the official npm `stripe` client, and of
// stripe-send-event.js (signatures checked with stripe.webhooks.constructEvent).
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { spawn, execFile } = require('node:child_process');
const Stripe = require('stripe');
const { createStripeFake, parseStripeForm } = require('../stripe');
const { sendEvent, listFixtures, loadFixture } = require('../stripe-send-event');

const SECRET = 'whsec_test_fake_secret_123';
const FAKES = path.join(__dirname, '..');

// A webhook endpoint that verifies each delivery with the official library.
async function startReceiver(secret) {
  const got = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const sig = req.headers['stripe-signature'];
      try {
        const ev = Stripe.webhooks.constructEvent(raw, sig, secret);
        got.push({ ok: true, event: ev, sig });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"received":true}');
      } catch (e) {
        got.push({ ok: false, error: e.message, sig });
        res.writeHead(400, { 'Content-Type': 'text/plain' });
        res.end(`bad signature: ${e.message}`);
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { got, url: `http://127.0.0.1:${server.address().port}/webhooks/stripe`, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

async function adminJson(port, method, p, body) {
  const r = await fetch(`http://127.0.0.1:${port}/__admin${p}`, {
    method, headers: body ? { 'Content-Type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

function client(port, extra) {
  return new Stripe('sk_test_fake_key', { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0, ...(extra || {}) });
}

async function rawPost(port, p, form, headers) {
  const r = await fetch(`http://127.0.0.1:${port}${p}`, {
    method: 'POST',
    headers: { Authorization: 'Bearer sk_test_fake_key', 'Content-Type': 'application/x-www-form-urlencoded', ...(headers || {}) },
    body: form,
  });
  return { status: r.status, headers: r.headers, body: await r.json() };
}

let fake; let port; let stripe;
test.before(async () => {
  fake = createStripeFake();
  port = await fake.listen(0);
  stripe = client(port);
});
test.after(async () => { await fake.close(); });
test.beforeEach(async () => { await adminJson(port, 'POST', '/reset'); });

test('bracket-notation form bodies parse into nested objects and arrays', () => {
  const cases = [
    ['a=1', { a: '1' }],
    ['a[b][c]=1', { a: { b: { c: '1' } } }],
    ['line_items[0][price]=price_x&line_items[0][quantity]=2', { line_items: [{ price: 'price_x', quantity: '2' }] }],
    ['items[1][price]=b&items[0][price]=a', { items: [{ price: 'a' }, { price: 'b' }] }],
    ['expand[]=x&expand[]=y', { expand: ['x', 'y'] }],
    ['metadata[user_id]=42&metadata[plan]=pro%20plan', { metadata: { user_id: '42', plan: 'pro plan' } }],
    ['payload[stripe_customer_id]=cus_1&payload[value]=25', { payload: { stripe_customer_id: 'cus_1', value: '25' } }],
    ['success_url=https%3A%2F%2Fapp%2Fok%3Fsession_id%3D%7BCHECKOUT_SESSION_ID%7D', { success_url: 'https://app/ok?session_id={CHECKOUT_SESSION_ID}' }],
    ['', {}],
  ];
  for (const [input, want] of cases) assert.deepEqual(parseStripeForm(input), want, input);
  assert.throws(() => parseStripeForm('a[__proto__][x]=1'));
});

test('customers: create and retrieve; missing one is resource_missing 404', async () => {
  const c = await stripe.customers.create({ email: 'creator@example.com', metadata: { user_id: '42' } });
  assert.match(c.id, /^cus_/);
  assert.equal(c.object, 'customer');
  const back = await stripe.customers.retrieve(c.id);
  assert.equal(back.email, 'creator@example.com');
  assert.deepEqual(back.metadata, { user_id: '42' });
  await assert.rejects(stripe.customers.retrieve('cus_nope'), (e) => {
    assert.equal(e.statusCode, 404);
    assert.equal(e.type, 'StripeInvalidRequestError');
    assert.equal(e.raw.type, 'invalid_request_error');
    assert.equal(e.code, 'resource_missing');
    assert.equal(e.message, "No such customer: 'cus_nope'");
    assert.equal(e.param, 'id');
    return true;
  });
});

test('checkout session: url on the fake; visiting it completes and sends signed events', async () => {
  const rx = await startReceiver(SECRET);
  try {
    await adminJson(port, 'POST', '/webhook', { url: rx.url, secret: SECRET });
    const cus = await stripe.customers.create({ email: 'c@example.com' });
    const s = await stripe.checkout.sessions.create({
      mode: 'subscription', line_items: [{ price: 'price_pro_monthly', quantity: 1 }], customer: cus.id,
      client_reference_id: 'user-42', success_url: 'http://app.local/ok?session_id={CHECKOUT_SESSION_ID}',
      cancel_url: 'http://app.local/cancel', metadata: { user_id: '42' },
    });
    assert.match(s.id, /^cs_test_/);
    assert.equal(s.status, 'open');
    assert.equal(s.url, `http://127.0.0.1:${port}/checkout/${s.id}`);
    const page = await fetch(s.url, { redirect: 'manual' });
    assert.equal(page.status, 303);
    assert.equal(page.headers.get('location'), `http://app.local/ok?session_id=${s.id}`);
    assert.deepEqual(rx.got.map((g) => g.ok), [true, true, true]);
    assert.deepEqual(rx.got.map((g) => g.event.type), ['checkout.session.completed', 'customer.subscription.created', 'invoice.paid']);
    const [done, created, paid] = rx.got.map((g) => g.event);
    assert.equal(done.data.object.id, s.id);
    assert.equal(done.data.object.status, 'complete');
    assert.equal(done.data.object.client_reference_id, 'user-42');
    assert.equal(done.data.object.customer, cus.id);
    assert.equal(done.data.object.subscription, created.data.object.id);
    assert.equal(done.livemode, false);
    assert.equal(done.api_version, '2025-03-31.basil');
    assert.equal(created.data.object.items.data[0].price.id, 'price_pro_monthly');
    assert.ok(created.data.object.items.data[0].current_period_end > created.data.object.items.data[0].current_period_start);
    assert.equal(paid.data.object.parent.subscription_details.subscription, created.data.object.id);
    // The session and subscription are retrievable through the API.
    const again = await stripe.checkout.sessions.retrieve(s.id);
    assert.equal(again.status, 'complete');
    assert.equal(again.payment_status, 'paid');
    const sub = await stripe.subscriptions.retrieve(created.data.object.id);
    assert.equal(sub.status, 'active');
    // Visiting again does not complete twice.
    await fetch(s.url, { redirect: 'manual' });
    assert.equal(rx.got.length, 3);
    const { body } = await adminJson(port, 'GET', '/deliveries');
    assert.deepEqual(body.deliveries.map((d) => d.status), [200, 200, 200]);
  } finally { await rx.close(); }
});

test('checkout session validation: missing mode, metered quantity, unknown price, exclusive params', async () => {
  const base = { success_url: 'http://x/ok' };
  const cases = [
    [{ ...base, line_items: [{ price: 'price_basic_monthly', quantity: 1 }] }, 400, 'parameter_missing', 'mode'],
    [{ ...base, mode: 'subscription', line_items: [{ price: 'price_metered_images', quantity: 1 }] }, 400, undefined, 'line_items[0][quantity]'],
    [{ ...base, mode: 'subscription', line_items: [{ price: 'price_nope', quantity: 1 }] }, 404, 'resource_missing', 'line_items[0][price]'],
    [{ ...base, mode: 'subscription', line_items: [{ price: 'price_basic_monthly', quantity: 1 }], customer: 'cus_x', customer_email: 'a@b' }, 400, 'parameters_exclusive', 'customer'],
    [{ ...base, mode: 'subscription', line_items: [{ price: 'price_basic_monthly', quantity: 1 }], bogus: 'x' }, 400, 'parameter_unknown', 'bogus'],
  ];
  for (const [params, status, code, param] of cases) {
    await assert.rejects(stripe.checkout.sessions.create(params), (e) => {
      assert.equal(e.statusCode, status, JSON.stringify(params));
      assert.equal(e.raw.type, 'invalid_request_error');
      assert.equal(e.code, code);
      assert.equal(e.param, param);
      return true;
    });
  }
  // Metered price without quantity and customer_email are fine.
  const ok = await stripe.checkout.sessions.create({ ...base, mode: 'subscription', line_items: [{ price: 'price_metered_images' }], customer_email: 'm@example.com' });
  assert.equal(ok.customer_email, 'm@example.com');
});

test('billing portal session returns a url on the fake', async () => {
  const cus = await stripe.customers.create({ email: 'p@example.com' });
  const s = await stripe.billingPortal.sessions.create({ customer: cus.id, return_url: 'http://app.local/account' });
  assert.match(s.id, /^bps_/);
  assert.equal(s.object, 'billing_portal.session');
  assert.equal(s.return_url, 'http://app.local/account');
  assert.ok(s.url.startsWith(`http://127.0.0.1:${port}/billing_portal/`));
  const page = await fetch(s.url);
  assert.equal(page.status, 200);
  await assert.rejects(stripe.billingPortal.sessions.create({ return_url: 'x' }), (e) => e.code === 'parameter_missing' && e.param === 'customer');
});

test('meter events: a repeated identifier is rejected like Stripe does and counted once', async () => {
  const cus = await stripe.customers.create({});
  const params = { event_name: 'images_processed', payload: { stripe_customer_id: cus.id, value: '25' }, identifier: 'job-1-usage' };
  const ev = await stripe.billing.meterEvents.create(params);
  assert.equal(ev.object, 'billing.meter_event');
  assert.equal(ev.identifier, 'job-1-usage');
  assert.deepEqual(ev.payload, { stripe_customer_id: cus.id, value: '25' });
  // Raw request so the Stripe-Should-Retry header is visible.
  const dup = await rawPost(port, '/v1/billing/meter_events', `event_name=images_processed&payload[stripe_customer_id]=${cus.id}&payload[value]=25&identifier=job-1-usage`);
  assert.equal(dup.status, 400);
  assert.equal(dup.body.error.type, 'invalid_request_error');
  assert.equal(dup.body.error.message, 'An event already exists with identifier job-1-usage.');
  assert.equal(dup.headers.get('stripe-should-retry'), 'false');
  await assert.rejects(stripe.billing.meterEvents.create(params), (e) => e.statusCode === 400 && /already exists/.test(e.message));
  await stripe.billing.meterEvents.create({ ...params, identifier: 'job-2-usage', payload: { ...params.payload, value: '5' } });
  const { body } = await adminJson(port, 'GET', '/meter_events');
  assert.equal(body.events.length, 2);
  assert.equal(body.totals.images_processed[cus.id], 30);
  assert.equal(body.duplicates_rejected.length, 2);
  // Validation.
  await assert.rejects(stripe.billing.meterEvents.create({ payload: params.payload }), (e) => e.code === 'parameter_missing' && e.param === 'event_name');
  await assert.rejects(stripe.billing.meterEvents.create({ event_name: 'x', payload: { value: '1' } }), (e) => e.param === 'payload[stripe_customer_id]');
  await assert.rejects(stripe.billing.meterEvents.create({ event_name: 'x', payload: params.payload, timestamp: Math.floor(Date.now() / 1000) - 40 * 86400 }), (e) => e.param === 'timestamp');
});

test('idempotency: same key and params replays; different params is an idempotency_error', async () => {
  const a = await rawPost(port, '/v1/customers', 'email=i%40example.com', { 'Idempotency-Key': 'key-1' });
  const b = await rawPost(port, '/v1/customers', 'email=i%40example.com', { 'Idempotency-Key': 'key-1' });
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  assert.equal(b.body.id, a.body.id);
  assert.equal(a.headers.get('idempotent-replayed'), null);
  assert.equal(b.headers.get('idempotent-replayed'), 'true');
  const c = await rawPost(port, '/v1/customers', 'email=other%40example.com', { 'Idempotency-Key': 'key-1' });
  assert.equal(c.status, 400);
  assert.equal(c.body.error.type, 'idempotency_error');
  assert.match(c.body.error.message, /same parameters/);
  const list = await stripe.customers.list({ email: 'i@example.com' });
  assert.equal(list.data.length, 1);
  // Through the client too: the meter event with the same key is not counted twice.
  const cus = await stripe.customers.create({});
  const p = { event_name: 'e', payload: { stripe_customer_id: cus.id, value: '1' }, identifier: 'idem-meter' };
  const m1 = await stripe.billing.meterEvents.create(p, { idempotencyKey: 'meter-key' });
  const m2 = await stripe.billing.meterEvents.create(p, { idempotencyKey: 'meter-key' });
  assert.deepEqual(m2, m1);
  const { body } = await adminJson(port, 'GET', '/meter_events');
  assert.equal(body.events.length, 1);
});

test('authentication and unknown URLs use Stripe error shapes', async () => {
  let r = await fetch(`http://127.0.0.1:${port}/v1/customers/cus_x`);
  assert.equal(r.status, 401);
  let b = await r.json();
  assert.equal(b.error.type, 'invalid_request_error');
  assert.match(b.error.message, /You did not provide an API key/);
  await assert.rejects(new Stripe('sk_live_nope', { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0 }).customers.retrieve('cus_x'),
    (e) => e.statusCode === 401 && e.type === 'StripeAuthenticationError' && /Invalid API Key provided/.test(e.message));
  r = await fetch(`http://127.0.0.1:${port}/v1/nothing_here`, { headers: { Authorization: 'Bearer sk_test_x' } });
  b = await r.json();
  assert.equal(r.status, 404);
  assert.match(b.error.message, /Unrecognized request URL \(GET: \/v1\/nothing_here\)/);
  assert.match(r.headers.get('request-id'), /^req_/);
});

test('subscriptions: retrieve, cancel_at_period_end, delete; older API versions see top-level periods', async () => {
  const rx = await startReceiver(SECRET);
  try {
    await adminJson(port, 'POST', '/webhook', { url: rx.url, secret: SECRET });
    const seeded = await adminJson(port, 'POST', '/seed', {
      customers: [{ id: 'cus_seeded1', email: 's@example.com' }],
      subscriptions: [{ id: 'sub_seeded1', customer: 'cus_seeded1', price: 'price_basic_monthly', current_period_start: 1767225600, current_period_end: 1769904000 }],
    });
    assert.deepEqual(seeded.body.subscriptions, ['sub_seeded1']);
    const sub = await stripe.subscriptions.retrieve('sub_seeded1');
    assert.equal(sub.items.data[0].current_period_end, 1769904000);
    assert.equal(sub.current_period_end, undefined);
    const old = new Stripe('sk_test_fake_key', { host: '127.0.0.1', port, protocol: 'http', apiVersion: '2024-06-20', maxNetworkRetries: 0 });
    const oldSub = await old.subscriptions.retrieve('sub_seeded1');
    assert.equal(oldSub.current_period_end, 1769904000);
    const upd = await stripe.subscriptions.update('sub_seeded1', { cancel_at_period_end: true });
    assert.equal(upd.cancel_at_period_end, true);
    assert.equal(upd.cancel_at, 1769904000);
    const del = await stripe.subscriptions.cancel('sub_seeded1');
    assert.equal(del.status, 'canceled');
    await adminJson(port, 'GET', '/deliveries'); // waits for queued deliveries
    assert.deepEqual(rx.got.map((g) => g.event.type), ['customer.subscription.updated', 'customer.subscription.deleted']);
    assert.deepEqual(rx.got[0].event.data.previous_attributes, { cancel_at_period_end: false, cancel_at: null, canceled_at: null });
    await assert.rejects(stripe.subscriptions.retrieve('sub_missing'), (e) => e.statusCode === 404 && e.code === 'resource_missing');
    const price = await stripe.prices.retrieve('price_metered_images');
    assert.equal(price.recurring.usage_type, 'metered');
    assert.equal(price.recurring.meter, 'mtr_test_images');
  } finally { await rx.close(); }
});

test('admin lifecycle actions send renewal and failure events', async () => {
  const rx = await startReceiver(SECRET);
  try {
    await adminJson(port, 'POST', '/webhook', { url: rx.url, secret: SECRET, api_version: '2024-06-20' });
    await adminJson(port, 'POST', '/seed', { subscriptions: [{ id: 'sub_life', customer: 'cus_life', current_period_start: 1767225600, current_period_end: 1769904000 }] });
    const renew = await adminJson(port, 'POST', '/subscriptions/sub_life/renew');
    assert.equal(renew.status, 200);
    const fail = await adminJson(port, 'POST', '/subscriptions/sub_life/payment_failed');
    assert.equal(fail.body.subscription.status, 'past_due');
    assert.deepEqual(rx.got.map((g) => g.event.type), ['invoice.paid', 'customer.subscription.updated', 'invoice.payment_failed', 'customer.subscription.updated']);
    const renewed = rx.got[1].event;
    assert.equal(renewed.api_version, '2024-06-20');
    assert.equal(renewed.data.object.current_period_start, 1769904000); // legacy shape: top level
    assert.equal(renewed.data.previous_attributes.current_period_start, 1767225600);
    assert.equal(rx.got[2].event.data.object.subscription, 'sub_life');
    assert.equal(rx.got[2].event.data.object.attempt_count, 1);
  } finally { await rx.close(); }
});

test('every fixture is a well-formed event and verifies after signing with stripe-send-event', async () => {
  const rx = await startReceiver(SECRET);
  try {
    const names = listFixtures();
    for (const t of ['checkout.session.completed', 'customer.subscription.created', 'customer.subscription.updated',
      'customer.subscription.deleted', 'customer.subscription.trial_will_end', 'invoice.paid', 'invoice.payment_failed']) {
      assert.ok(names.includes(t), `fixture ${t}`);
    }
    for (const name of names) {
      const ev = loadFixture(name);
      assert.equal(ev.object, 'event', name);
      assert.equal(ev.livemode, false, name);
      assert.ok(ev.api_version && ev.created && ev.type && ev.data && ev.data.object, name);
      const obj = ev.data.object;
      if (obj.object === 'subscription') {
        assert.match(obj.items.data[0].price.id, /^price_/, name);
        assert.equal(typeof obj.cancel_at_period_end, 'boolean', name);
        assert.ok(obj.status, name);
        const legacy = name.endsWith('.legacy');
        assert.equal(typeof (legacy ? obj.current_period_end : obj.items.data[0].current_period_end), 'number', name);
      }
      const r = await sendEvent({ url: rx.url, secret: SECRET, fixture: name });
      assert.equal(r.status, 200, `${name}: ${r.body}`);
      assert.equal(rx.got.at(-1).event.type, ev.type);
      assert.match(r.signature, /^t=\d+,v1=[0-9a-f]{64}$/);
    }
  } finally { await rx.close(); }
});

test('stripe-send-event: ids, --set, wrong secret and stale timestamps', async () => {
  const rx = await startReceiver(SECRET);
  try {
    const a = await sendEvent({ url: rx.url, secret: SECRET, type: 'customer.subscription.updated', id: 'evt_same', set: { 'data.object.status': 'past_due', 'data.object.items.data.0.price.id': 'price_pro_monthly' } });
    assert.equal(a.status, 200);
    const ev = rx.got.at(-1).event;
    assert.equal(ev.id, 'evt_same');
    assert.equal(ev.data.object.status, 'past_due');
    assert.equal(ev.data.object.items.data[0].price.id, 'price_pro_monthly');
    const b = await sendEvent({ url: rx.url, secret: SECRET, type: 'invoice.paid' });
    assert.notEqual(b.event.id, a.event.id);
    // constructEvent rejects a wrong secret and a stale timestamp.
    const wrong = await sendEvent({ url: rx.url, secret: SECRET, type: 'invoice.paid', wrongSecret: true });
    assert.equal(wrong.status, 400);
    assert.match(rx.got.at(-1).error, /No signatures found matching the expected signature/);
    const stale = await sendEvent({ url: rx.url, secret: SECRET, type: 'invoice.paid', timestamp: Math.floor(Date.now() / 1000) - 600 });
    assert.equal(stale.status, 400);
    assert.match(rx.got.at(-1).error, /Timestamp outside the tolerance zone/);
    // Directly: the exact payload verifies with the right secret only.
    assert.equal(Stripe.webhooks.constructEvent(a.payload, a.signature, SECRET).id, 'evt_same');
    assert.throws(() => Stripe.webhooks.constructEvent(a.payload, a.signature, 'whsec_other'));
    // The CLI: exit 0 on 2xx, 1 otherwise.
    const cli = (args) => new Promise((resolve) => {
      execFile(process.execPath, [path.join(FAKES, 'stripe-send-event.js'), ...args], (err, stdout) => resolve({ code: err ? err.code : 0, stdout }));
    });
    let r = await cli(['--url', rx.url, '--secret', SECRET, '--type', 'invoice.payment_failed', '--set', 'data.object.attempt_count=3']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^status 200\n/);
    assert.equal(rx.got.at(-1).event.data.object.attempt_count, 3);
    r = await cli(['--url', rx.url, '--secret', SECRET, '--fixture', 'customer.subscription.deleted', '--wrong-secret']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^status 400\n/);
  } finally { await rx.close(); }
});

test('faults: 429 and 500 in Stripe shape, delay, drop and slow body', async () => {
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/customers' }, action: 'status', status: 429, count: 1 });
  await assert.rejects(stripe.customers.create({}), (e) => {
    assert.equal(e.type, 'StripeRateLimitError');
    assert.equal(e.statusCode, 429);
    assert.equal(e.code, 'rate_limit');
    return true;
  });
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/customers' }, action: 'status', status: 500, count: 1 });
  await assert.rejects(stripe.customers.create({}), (e) => e.type === 'StripeAPIError' && e.statusCode === 500 && e.raw.type === 'api_error');
  // A 500 fault happens before the endpoint runs, so a retry with the same key succeeds.
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/customers' }, action: 'status', status: 500, count: 1 });
  const retrying = client(port, { maxNetworkRetries: 1 });
  const c = await retrying.customers.create({ email: 'retry@example.com' });
  assert.match(c.id, /^cus_/);
  const log = (await adminJson(port, 'GET', '/requests')).body.requests.filter((r) => r.method === 'POST');
  const last2 = log.slice(-2);
  assert.deepEqual(last2.map((r) => r.status), [500, 200]);
  assert.equal(last2[0].note, undefined); // the faulted request never reached the handler
  assert.ok(last2[1].note.idempotency_key);
  // delay
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/prices' }, action: 'delay', delay_ms: 300, count: 1 });
  let t0 = Date.now();
  await stripe.prices.retrieve('price_basic_monthly');
  assert.ok(Date.now() - t0 >= 280);
  // drop (twice: the client retries a closed connection once on its own)
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/prices' }, action: 'drop', count: 2 });
  await assert.rejects(stripe.prices.retrieve('price_basic_monthly'), (e) => e.type === 'StripeConnectionError');
  // slow body: still correct, but trickled
  await adminJson(port, 'POST', '/faults', { match: { path: '/v1/prices' }, action: 'slow_body', chunk_bytes: 64, interval_ms: 20, count: 1 });
  t0 = Date.now();
  const p = await stripe.prices.retrieve('price_basic_monthly');
  assert.equal(p.id, 'price_basic_monthly');
  assert.ok(Date.now() - t0 >= 100);
});

test('tests/fakes/run stripe --port 0 prints its port and serves', async () => {
  const child = spawn(path.join(FAKES, 'run'), ['stripe', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const p = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const price = await client(p).prices.retrieve('price_pro_yearly');
    assert.equal(price.recurring.interval, 'year');
  } finally { child.kill('SIGTERM'); }
});
