'use strict';
// Drive push notifications in the Google fake (lib/google-push.js), checked
// with the official googleapis client: changes.watch and channels.stop, the
// sync message, change messages with Drive's headers, expiration, and the
// test controls that lose notifications.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

function startFake() {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(__dirname, '..', 'run'), ['google', '--port', '0', '--client-id', 'cid', '--client-secret', 'cs'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ child, base: `http://127.0.0.1:${m[1]}` });
    });
    child.on('exit', (c) => reject(new Error(`fake exited ${c}`)));
  });
}

// A webhook receiver that records every message; status() decides the answer.
function receiver(status) {
  const got = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      got.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.writeHead(status ? status(got.length) : 200); res.end();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, got, url: `http://127.0.0.1:${server.address().port}/webhooks/drive` })));
}

const waitFor = async (cond, ms = 5000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (cond()) return true; await new Promise((r) => setTimeout(r, 20)); }
  return cond();
};

let fake; let base;
test.before(async () => { fake = await startFake(); base = fake.base; });
test.after(() => { fake.child.kill('SIGTERM'); });

const admin = async (method, p, body) => (await fetch(`${base}/__admin${p}`, { method, body: body && JSON.stringify(body) })).json();

function drive(tok) {
  const { google } = require('googleapis');
  const auth = new google.auth.OAuth2('cid', 'cs');
  auth.setCredentials({ access_token: tok });
  return google.drive({ version: 'v3', auth, rootUrl: `${base}/` });
}

test('googleapis changes.watch and channels.stop; sync, then change messages with Drive headers', async () => {
  const u = await admin('POST', '/users', { email: 'push1@example.com', client_id: 'cid' });
  const rx = await receiver();
  const d = drive(u.access_token);
  const start = (await d.changes.getStartPageToken()).data.startPageToken;
  const want = Date.now() + 3600 * 1000;
  const w = await d.changes.watch({ pageToken: start, requestBody: { id: 'chan-1', type: 'web_hook', address: rx.url, token: 'secret-1', expiration: String(want) } });
  assert.equal(w.status, 200);
  assert.equal(w.data.kind, 'api#channel');
  assert.equal(w.data.id, 'chan-1');
  assert.ok(w.data.resourceId && w.data.resourceUri);
  assert.equal(w.data.expiration, String(want));
  assert.ok(await waitFor(() => rx.got.length === 1));
  const sync = rx.got[0].headers;
  assert.equal(rx.got[0].method, 'POST');
  assert.equal(sync['x-goog-resource-state'], 'sync');
  assert.equal(sync['x-goog-message-number'], '1');
  assert.equal(sync['x-goog-channel-id'], 'chan-1');
  assert.equal(sync['x-goog-channel-token'], 'secret-1');
  assert.equal(sync['x-goog-resource-id'], w.data.resourceId);
  assert.equal(sync['x-goog-resource-uri'], w.data.resourceUri);
  assert.equal(new Date(sync['x-goog-channel-expiration']).getTime(), Math.floor(want / 1000) * 1000);
  await d.files.create({ requestBody: { name: 'a.jpg', mimeType: 'image/jpeg' } });
  assert.ok(await waitFor(() => rx.got.length === 2));
  assert.equal(rx.got[1].headers['x-goog-resource-state'], 'change');
  assert.equal(rx.got[1].headers['x-goog-message-number'], '2');
  assert.equal(rx.got[1].body, '');
  // another user's change says nothing on this channel
  const v = await admin('POST', '/users', { email: 'push2@example.com', client_id: 'cid' });
  await drive(v.access_token).files.create({ requestBody: { name: 'b.jpg', mimeType: 'image/jpeg' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(rx.got.length, 2);
  // the same id again while live: channelIdNotUnique
  await assert.rejects(d.changes.watch({ pageToken: start, requestBody: { id: 'chan-1', type: 'web_hook', address: rx.url } }), (e) => e.code === 400 && /channelIdNotUnique/.test(JSON.stringify(e.response.data)));
  // another user cannot stop it; a wrong resourceId neither
  await assert.rejects(drive(v.access_token).channels.stop({ requestBody: { id: 'chan-1', resourceId: w.data.resourceId } }), (e) => e.code === 404);
  await assert.rejects(d.channels.stop({ requestBody: { id: 'chan-1', resourceId: 'nope' } }), (e) => e.code === 404);
  const s = await d.channels.stop({ requestBody: { id: 'chan-1', resourceId: w.data.resourceId } });
  assert.equal(s.status, 204);
  await d.files.create({ requestBody: { name: 'c.jpg', mimeType: 'image/jpeg' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(rx.got.length, 2, 'nothing after channels.stop');
  await assert.rejects(d.channels.stop({ requestBody: { id: 'chan-1', resourceId: w.data.resourceId } }), (e) => e.code === 404);
  rx.server.close();
});

test('expiration: default one hour, capped, past is 400; an expired channel sends nothing; http only to loopback', async () => {
  const u = await admin('POST', '/users', { email: 'push3@example.com', client_id: 'cid' });
  const d = drive(u.access_token);
  const rx = await receiver();
  const start = (await d.changes.getStartPageToken()).data.startPageToken;
  const t0 = Date.now();
  const w = await d.changes.watch({ pageToken: start, requestBody: { id: 'chan-def', type: 'web_hook', address: rx.url } });
  assert.ok(Math.abs(Number(w.data.expiration) - (t0 + 3600 * 1000)) < 5000);
  await assert.rejects(d.changes.watch({ pageToken: start, requestBody: { id: 'chan-past', type: 'web_hook', address: rx.url, expiration: String(Date.now() - 1000) } }), (e) => e.code === 400);
  await assert.rejects(d.changes.watch({ pageToken: start, requestBody: { id: 'chan-http', type: 'web_hook', address: 'http://example.com/hook' } }), (e) => e.code === 400 && /webhookUrlNotHttps/.test(JSON.stringify(e.response.data)));
  await d.channels.stop({ requestBody: { id: 'chan-def', resourceId: w.data.resourceId } });
  await admin('POST', '/push', { max_seconds: 1 });
  const c = await d.changes.watch({ pageToken: start, requestBody: { id: 'chan-short', type: 'web_hook', address: rx.url, token: 't', expiration: String(Date.now() + 3600 * 1000) } });
  assert.ok(Number(c.data.expiration) <= Date.now() + 1000);
  assert.ok(await waitFor(() => rx.got.some((g) => g.headers['x-goog-channel-id'] === 'chan-short')));
  await new Promise((r) => setTimeout(r, 1100));
  const n = rx.got.length;
  await d.files.create({ requestBody: { name: 'late.jpg', mimeType: 'image/jpeg' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(rx.got.length, n, 'an expired channel sends nothing');
  await admin('POST', '/push', { max_seconds: 604800 });
  rx.server.close();
});

test('silence: drop loses the next message, stop silences the channel; 5xx answers are retried', async () => {
  const u = await admin('POST', '/users', { email: 'push4@example.com', client_id: 'cid' });
  const d = drive(u.access_token);
  let fail = 0;
  const rx = await receiver(() => (fail-- > 0 ? 503 : 200));
  const start = (await d.changes.getStartPageToken()).data.startPageToken;
  await d.changes.watch({ pageToken: start, requestBody: { id: 'chan-s', type: 'web_hook', address: rx.url, token: 'tok' } });
  assert.ok(await waitFor(() => rx.got.length === 1));
  await admin('POST', '/push/silence', { id: 'chan-s', mode: 'drop' });
  await d.files.create({ requestBody: { name: 'lost.jpg', mimeType: 'image/jpeg' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(rx.got.length, 1, 'dropped');
  fail = 1;
  await d.files.create({ requestBody: { name: 'retried.jpg', mimeType: 'image/jpeg' } });
  assert.ok(await waitFor(() => rx.got.length === 3), 'a 503 is retried');
  assert.equal(rx.got[1].headers['x-goog-message-number'], rx.got[2].headers['x-goog-message-number']);
  await admin('POST', '/push/silence', { email: 'push4@example.com', mode: 'stop' });
  await d.files.create({ requestBody: { name: 'silent.jpg', mimeType: 'image/jpeg' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(rx.got.length, 3, 'silenced');
  const state = await admin('GET', '/push');
  assert.ok(state.channels.find((c) => c.id === 'chan-s' && c.silenced && c.dropped === 1));
  rx.server.close();
});
