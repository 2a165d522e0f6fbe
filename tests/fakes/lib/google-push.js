'use strict';
/*
 * Drive v3 push notifications for the Google fake (google.js): changes.watch,
 * channels.stop, and the notifications themselves, sent the way Drive sends
 * them (docs/fakes.md "Push notifications").
 *
 *  - POST /drive/v3/changes/watch?pageToken=T  body {id, type:"web_hook"|"webhook",
 *    address, token?, expiration?}: a channel on the caller's changes. Answers
 *    {kind:"api#channel", id, resourceId, resourceUri, token?, expiration}
 *    (expiration as a string of Unix ms). expiration is capped at
 *    maxSeconds (Drive: 604800 for changes; default 3600 when none is asked);
 *    one in the past is 400. A live channel id used again is 400
 *    channelIdNotUnique. The address must be https, or http to a loopback
 *    host (a simplification: Drive also wants a verified domain and a valid
 *    certificate) -- else 400 push.webhookUrlNotHttps.
 *  - Right after the answer: a "sync" message (X-Goog-Message-Number 1).
 *  - Every change on the user's Drive (DriveStore.recordChange): a POST to
 *    the address with X-Goog-Channel-ID, X-Goog-Channel-Token (when set),
 *    X-Goog-Channel-Expiration (RFC 1123), X-Goog-Resource-ID,
 *    X-Goog-Resource-URI, X-Goog-Resource-State: change, X-Goog-Message-Number
 *    (one more per message), no body. While one message is in flight, further
 *    changes are coalesced into one next message, as Drive batches them.
 *    5xx and network errors are retried with exponential backoff (3 times);
 *    other answers are final (Drive does not retry them).
 *  - Past its expiration a channel sends nothing and is forgotten.
 *  - POST /drive/v3/channels/stop {id, resourceId}: 204; unknown id, another
 *    user's channel or a wrong resourceId: 404 notFound.
 *
 * Test controls (admin): POST /__admin/push {max_seconds?} sets the
 * expiration cap; POST /__admin/push/silence {id|email, mode:"stop"|"drop",
 * count?}: "stop" makes the channel silently stop sending (the client is
 * not told, like a channel Drive lost), "drop" loses its next `count` (1)
 * change messages; GET /__admin/push -> {channels:[...], deliveries:[...]}.
 */
const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const { driveError, readJson, sendJson, HttpError } = require('./google-drive');

const DEFAULT_SECONDS = 3600;
const MAX_SECONDS = 604800;
const RETRIES = 3;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

function createPush(store, auth) {
  let st;
  function fresh() {
    st = { channels: new Map(), deliveries: [], maxSeconds: MAX_SECONDS };
  }
  fresh();


  function deliver(ch, state, attempt) {
    if (ch.stopped || ch.silenced || Date.now() >= ch.expiration) return;
    ch.inFlight = true;
    const number = attempt ? ch.lastNumber : ++ch.messageNumber;
    ch.lastNumber = number;
    const headers = {
      'X-Goog-Channel-ID': ch.id,
      'X-Goog-Channel-Expiration': new Date(ch.expiration).toUTCString(),
      'X-Goog-Resource-ID': ch.resourceId,
      'X-Goog-Resource-URI': ch.resourceUri,
      'X-Goog-Resource-State': state,
      'X-Goog-Message-Number': String(number),
      'Content-Length': '0',
      'User-Agent': 'APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)',
    };
    if (ch.token !== undefined) headers['X-Goog-Channel-Token'] = ch.token;
    const rec = { channel: ch.id, state, number, attempt: attempt || 0, time: new Date().toISOString(), status: null };
    st.deliveries.push(rec);
    if (st.deliveries.length > 1000) st.deliveries.shift();
    const u = new URL(ch.address);
    const mod = u.protocol === 'https:' ? https : http;
    const done = (status) => {
      rec.status = status;
      const retry = (status === 0 || status >= 500) && (attempt || 0) < RETRIES;
      if (retry) {
        setTimeout(() => deliver(ch, state, (attempt || 0) + 1), 250 * 2 ** (attempt || 0)).unref();
        return;
      }
      ch.inFlight = false;
      if (ch.pending) { ch.pending = false; notify(ch); }
    };
    const r = mod.request(u, { method: 'POST', headers, timeout: 10000 }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode));
      res.on('error', () => done(0));
    });
    r.on('timeout', () => r.destroy(new Error('timeout')));
    r.on('error', () => { if (rec.status === null) done(0); });
    r.end();
  }

  function notify(ch) {
    if (ch.stopped || Date.now() >= ch.expiration) return;
    if (ch.dropNext > 0) { ch.dropNext--; ch.dropped++; st.deliveries.push({ channel: ch.id, state: 'change', dropped: true, time: new Date().toISOString() }); return; }
    if (ch.inFlight) { ch.pending = true; return; }
    deliver(ch, 'change');
  }

  // Called by the Drive store for every change of a file owned by `sub`.
  function onChange(sub) {
    const now = Date.now();
    for (const ch of [...st.channels.values()]) {
      if (now >= ch.expiration) { st.channels.delete(ch.id); continue; }
      if (ch.sub === sub && !ch.stopped) notify(ch);
    }
  }

  function addRoutes(router) {
    router.add('POST', '/drive/v3/changes/watch', async (req, res, ctx) => {
      const user = auth(req);
      const tok = ctx.query.get('pageToken');
      if (tok === null) throw driveError(400, 'required', 'Required parameter: pageToken', { location: 'pageToken', locationType: 'parameter' });
      if (!/^\d+$/.test(tok) || Number(tok) < 1 || Number(tok) > store.changeSeq + 1) {
        throw driveError(400, 'invalid', 'Invalid Value', { location: 'pageToken', locationType: 'parameter' });
      }
      const b = (await readJson(req, 64 * 1024)) || {};
      if (!b.id || typeof b.id !== 'string' || b.id.length > 64) throw driveError(400, 'required', 'Required: channel id', { location: 'id', locationType: 'other' });
      if (b.type !== 'web_hook' && b.type !== 'webhook') throw driveError(400, 'invalid', `Invalid value for type: ${b.type}`, { location: 'type', locationType: 'other' });
      let u;
      try { u = new URL(String(b.address || '')); } catch (e) { throw driveError(400, 'invalid', 'Invalid value for address.', { location: 'address', locationType: 'other' }); }
      if (u.protocol !== 'https:' && !(u.protocol === 'http:' && LOOPBACK.has(u.hostname))) {
        throw driveError(400, 'push.webhookUrlNotHttps', `WebHook callback must be HTTPS: ${b.address}`);
      }
      if (b.token !== undefined && (typeof b.token !== 'string' || b.token.length > 256)) {
        throw driveError(400, 'invalid', 'Invalid value for token.', { location: 'token', locationType: 'other' });
      }
      const existing = st.channels.get(b.id);
      if (existing && !existing.stopped && Date.now() < existing.expiration) throw driveError(400, 'channelIdNotUnique', 'Channel id not unique');
      const now = Date.now();
      let exp = now + DEFAULT_SECONDS * 1000;
      if (b.expiration !== undefined && b.expiration !== null) {
        exp = Number(b.expiration);
        if (!Number.isFinite(exp) || exp <= now) throw driveError(400, 'invalid', 'Invalid expiration time.', { location: 'expiration', locationType: 'other' });
      }
      exp = Math.min(exp, now + st.maxSeconds * 1000);
      const resourceId = crypto.randomBytes(20).toString('base64url').slice(0, 27);
      const ch = {
        id: b.id, sub: user.sub, email: user.email, address: u.toString(), token: b.token, resourceId,
        resourceUri: `https://www.googleapis.com/drive/v3/changes?alt=json&pageToken=${tok}&restrictToMyDrive=${ctx.query.get('restrictToMyDrive') === 'true'}`,
        expiration: exp, messageNumber: 0, lastNumber: 0, inFlight: false, pending: false, stopped: false,
        silenced: false, dropNext: 0, dropped: 0, created: new Date(now).toISOString(),
      };
      st.channels.set(ch.id, ch);
      const out = { kind: 'api#channel', id: ch.id, resourceId, resourceUri: ch.resourceUri, expiration: String(exp) };
      if (ch.token !== undefined) out.token = ch.token;
      res.on('finish', () => setImmediate(() => deliver(ch, 'sync')));
      sendJson(res, 200, out);
    });

    router.add('POST', '/drive/v3/channels/stop', async (req, res) => {
      const user = auth(req);
      const b = (await readJson(req, 64 * 1024)) || {};
      const ch = b.id && st.channels.get(String(b.id));
      if (!ch || ch.stopped || ch.sub !== user.sub || ch.resourceId !== b.resourceId) {
        throw driveError(404, 'notFound', `Channel '${b.id}' not found for project 'fake'`);
      }
      ch.stopped = true;
      st.channels.delete(ch.id);
      res.writeHead(204); res.end();
    });
  }

  const admin = {
    'GET /push': async (req, res) => {
      sendJson(res, 200, {
        max_seconds: st.maxSeconds,
        channels: [...st.channels.values()].map((c) => ({
          id: c.id, email: c.email, address: c.address, resourceId: c.resourceId, expiration: String(c.expiration),
          live: !c.stopped && Date.now() < c.expiration, silenced: c.silenced, messageNumber: c.messageNumber,
          dropped: c.dropped, created: c.created,
        })),
        deliveries: st.deliveries,
      });
    },
    'POST /push': async (req, res) => {
      const b = (await readJson(req)) || {};
      if (b.max_seconds !== undefined) {
        const n = Number(b.max_seconds);
        if (!Number.isInteger(n) || n < 1 || n > MAX_SECONDS) throw new HttpError(400, { error: 'max_seconds: 1..604800' });
        st.maxSeconds = n;
      }
      sendJson(res, 200, { max_seconds: st.maxSeconds });
    },
    'POST /push/silence': async (req, res) => {
      const b = (await readJson(req)) || {};
      const email = b.email && String(b.email).toLowerCase();
      const hit = [...st.channels.values()].filter((c) => (b.id && c.id === b.id) || (email && c.email === email));
      if (!hit.length) throw new HttpError(404, { error: 'no such channel' });
      for (const c of hit) {
        if (b.mode === 'stop') c.silenced = true;
        else if (b.mode === 'drop') c.dropNext += b.count === undefined ? 1 : Number(b.count);
        else throw new HttpError(400, { error: 'mode: stop or drop' });
      }
      sendJson(res, 200, { channels: hit.length });
    },
  };

  return { addRoutes, admin, onChange, reset: fresh };
}

module.exports = { createPush };
