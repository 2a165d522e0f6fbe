#!/usr/bin/env node
'use strict';
/*
 * Minimal SMTP server (node:net) that keeps every accepted message in memory,
 * plus an HTTP admin port. See docs/fakes.md (SMTP).
 *
 *   node tests/fakes/smtp.js --port P --admin-port P2 [--max-size BYTES]
 *        [--hostname NAME] [--require-auth] [--verbose]
 *
 * Prints "admin listening on 127.0.0.1:P2" and then "listening on 127.0.0.1:P"
 * (the SMTP port; that line means both are ready).
 * Admin (HTTP, on --admin-port; plus lib/common.js's shared routes):
 *   GET    /__admin/messages[?to=addr]  -> {messages:[{id,from,to,data,headers,
 *                                          body,size,helo,auth_user,received_at}]}
 *   DELETE /__admin/messages
 *   GET    /__admin/sessions            -> transcripts (commands and replies)
 *   POST   /__admin/smtp/faults {stage, code, message?, count?, delay_ms?, action?}
 *   GET    /__admin/smtp/faults, DELETE /__admin/smtp/faults
 *   POST   /__admin/reset               clears messages, sessions and faults
 */
const net = require('node:net');
const crypto = require('node:crypto');
const common = require('./lib/common');
const { HttpError, sendJson } = common;

const STAGES = ['connect', 'helo', 'mail', 'rcpt', 'data', 'data_end'];

function parseMessage(data) {
  const sep = /\r?\n\r?\n/.exec(data);
  const headText = sep ? data.slice(0, sep.index) : data;
  const body = sep ? data.slice(sep.index + sep[0].length) : '';
  const headers = {};
  const unfolded = headText.replace(/\r?\n[ \t]+/g, ' ');
  for (const line of unfolded.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    if (headers[k] === undefined) headers[k] = v;
    else headers[k] = [].concat(headers[k], v);
  }
  return { headers, body };
}

function addrOf(arg, keyword) {
  const re = new RegExp(`^${keyword}:\\s*<([^>]*)>(.*)$`, 'i');
  const m = re.exec(arg);
  if (!m) return null;
  const params = {};
  for (const p of m[2].trim().split(/\s+/).filter(Boolean)) {
    const [k, v] = p.split('=');
    params[k.toUpperCase()] = v === undefined ? true : v;
  }
  return { addr: m[1], params };
}

function createSmtpFake(options) {
  const opt = options || {};
  const maxSize = opt.maxSize || 10 * 1024 * 1024;
  const hostname = opt.hostname || 'fake-smtp.local';
  let messages = [];
  let sessions = [];
  let faults = [];
  let faultSeq = 0;
  let connSeq = 0;
  const conns = new Set();

  // The first fault for `stage` fires (and uses up one of its count).
  function takeFault(stage) {
    const i = faults.findIndex((f) => f.stage === stage);
    if (i < 0) return null;
    const f = faults[i];
    if (f.count !== undefined) { f.count -= 1; if (f.count <= 0) faults.splice(i, 1); }
    f.fired = (f.fired || 0) + 1;
    return f;
  }

  const server = net.createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    const session = { id: ++connSeq, remote: `${sock.remoteAddress}:${sock.remotePort}`, started: new Date().toISOString(), transcript: [] };
    sessions.push(session);
    if (sessions.length > 1000) sessions.shift();
    let helo = null;
    let authUser = null;
    let tx = null; // {from, to[], size}
    let mode = 'cmd'; // cmd | data | auth_login_user | auth_login_pass | auth_plain
    let dataLines = [];
    let dataSize = 0;
    let buf = Buffer.alloc(0);
    let closed = false;
    let busy = Promise.resolve();

    const reply = (code, text) => {
      if (closed) return;
      const lines = Array.isArray(text) ? text : [text];
      const out = lines.map((l, i) => `${code}${i < lines.length - 1 ? '-' : ' '}${l}\r\n`).join('');
      session.transcript.push(`S: ${out.trimEnd()}`);
      sock.write(out);
    };
    const close = () => { closed = true; sock.end(); };
    // Applies a fault for a stage; returns true when it answered (or dropped).
    const faulted = async (stage) => {
      const f = takeFault(stage);
      if (!f) return false;
      if (f.delay_ms) await new Promise((r) => setTimeout(r, f.delay_ms));
      if (f.action === 'drop') { closed = true; sock.destroy(); return true; }
      if (f.action === 'delay') return false;
      reply(f.code || 451, f.message || (f.code >= 500 ? '5.3.0 Transaction failed (injected fault)' : '4.3.0 Try again later (injected fault)'));
      if (stage === 'connect' || f.close) close();
      return true;
    };

    const finishData = async () => {
      session.transcript.push(`C: <${dataSize} bytes of data>`);
      const t = tx;
      tx = null;
      if (dataSize > maxSize) { reply(552, '5.3.4 Message size exceeds fixed maximum message size'); return; }
      if (await faulted('data_end')) return;
      const data = dataLines.join('\r\n') + (dataLines.length ? '\r\n' : '');
      const id = crypto.randomBytes(6).toString('hex').toUpperCase();
      const parsed = parseMessage(data);
      messages.push({
        id, from: t.from, to: t.to, data, headers: parsed.headers, body: parsed.body,
        size: Buffer.byteLength(data), helo, auth_user: authUser, received_at: new Date().toISOString(),
      });
      reply(250, `2.0.0 Ok: queued as ${id}`);
    };

    const command = async (line) => {
      session.transcript.push(`C: ${/^AUTH\s/i.test(line) ? line.split(' ').slice(0, 2).join(' ') + ' ***' : line}`);
      const sp = line.indexOf(' ');
      const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
      const arg = sp < 0 ? '' : line.slice(sp + 1).trim();
      switch (verb) {
        case 'EHLO': case 'HELO': {
          if (!arg) return reply(501, `Syntax: ${verb} hostname`);
          if (await faulted('helo')) return undefined;
          helo = arg; tx = null;
          if (verb === 'HELO') return reply(250, hostname);
          return reply(250, [hostname, 'PIPELINING', `SIZE ${maxSize}`, '8BITMIME', 'ENHANCEDSTATUSCODES', 'AUTH PLAIN LOGIN', 'SMTPUTF8']);
        }
        case 'MAIL': {
          if (!helo) return reply(503, '5.5.1 Error: send HELO/EHLO first');
          if (tx) return reply(503, '5.5.1 Error: nested MAIL command');
          const a = addrOf(arg, 'FROM');
          if (!a) return reply(501, '5.5.4 Syntax: MAIL FROM:<address>');
          if (opt.requireAuth && !authUser) return reply(530, '5.7.0 Authentication required');
          if (a.params.SIZE && Number(a.params.SIZE) > maxSize) return reply(552, '5.3.4 Message size exceeds fixed limit');
          if (await faulted('mail')) return undefined;
          tx = { from: a.addr, to: [] };
          return reply(250, '2.1.0 Ok');
        }
        case 'RCPT': {
          if (!tx) return reply(503, '5.5.1 Error: need MAIL command');
          const a = addrOf(arg, 'TO');
          if (!a || !a.addr) return reply(501, '5.5.4 Syntax: RCPT TO:<address>');
          if (tx.to.length >= 100) return reply(452, '4.5.3 Error: too many recipients');
          if (await faulted('rcpt')) return undefined;
          tx.to.push(a.addr);
          return reply(250, '2.1.5 Ok');
        }
        case 'DATA': {
          if (!tx) return reply(503, '5.5.1 Error: need MAIL command');
          if (tx.to.length === 0) return reply(554, '5.5.1 Error: no valid recipients');
          if (await faulted('data')) { tx = null; return undefined; }
          mode = 'data'; dataLines = []; dataSize = 0;
          return reply(354, 'End data with <CR><LF>.<CR><LF>');
        }
        case 'RSET': tx = null; return reply(250, '2.0.0 Ok');
        case 'NOOP': return reply(250, '2.0.0 Ok');
        case 'VRFY': return reply(252, '2.0.0 Cannot VRFY user');
        case 'QUIT': reply(221, '2.0.0 Bye'); return close();
        case 'STARTTLS': return reply(454, '4.7.0 TLS not available');
        case 'AUTH': {
          const [mech, initial] = arg.split(/\s+/);
          if (!helo) return reply(503, '5.5.1 Error: send HELO/EHLO first');
          if (authUser) return reply(503, '5.5.1 Error: already authenticated');
          if (/^PLAIN$/i.test(mech || '')) {
            if (initial) return authPlain(initial);
            mode = 'auth_plain';
            return reply(334, '');
          }
          if (/^LOGIN$/i.test(mech || '')) {
            if (initial) { session.pendingUser = Buffer.from(initial, 'base64').toString(); mode = 'auth_login_pass'; return reply(334, 'UGFzc3dvcmQ6'); }
            mode = 'auth_login_user';
            return reply(334, 'VXNlcm5hbWU6');
          }
          return reply(504, '5.5.4 Unrecognized authentication type');
        }
        default:
          return reply(502, '5.5.2 Error: command not recognized');
      }
    };

    const authPlain = (b64) => {
      const parts = Buffer.from(b64, 'base64').toString().split('\0');
      if (parts.length < 3 || !parts[1]) return reply(535, '5.7.8 Error: authentication failed');
      authUser = parts[1];
      return reply(235, '2.7.0 Authentication successful');
    };

    const handleLine = async (line) => {
      if (mode === 'data') {
        if (line === '.') { mode = 'cmd'; return finishData(); }
        const l = line.startsWith('.') ? line.slice(1) : line; // dot-unstuffing
        dataSize += Buffer.byteLength(l) + 2;
        if (dataSize <= maxSize) dataLines.push(l);
        return undefined;
      }
      if (mode === 'auth_plain') { mode = 'cmd'; if (line === '*') return reply(501, '5.7.0 Authentication aborted'); return authPlain(line); }
      if (mode === 'auth_login_user') {
        mode = 'auth_login_pass'; session.pendingUser = Buffer.from(line, 'base64').toString();
        return reply(334, 'UGFzc3dvcmQ6');
      }
      if (mode === 'auth_login_pass') {
        mode = 'cmd'; authUser = session.pendingUser || 'unknown';
        return reply(235, '2.7.0 Authentication successful');
      }
      if (line.length > 2048) return reply(500, '5.5.2 Error: line too long');
      return command(line);
    };

    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let nl;
      const lines = [];
      while ((nl = buf.indexOf(0x0a)) >= 0) {
        let end = nl;
        if (end > 0 && buf[end - 1] === 0x0d) end -= 1;
        lines.push(buf.toString('utf8', 0, end));
        buf = buf.subarray(nl + 1);
      }
      for (const l of lines) busy = busy.then(() => (closed ? undefined : handleLine(l)));
    });
    sock.on('error', () => { closed = true; });
    busy = busy.then(async () => { if (!(await faulted('connect'))) reply(220, `${hostname} ESMTP fake ready`); });
  });

  const adminRoutes = {
    'GET /messages': async (req, res, ctx) => {
      const to = ctx.query.get('to');
      sendJson(res, 200, { messages: to ? messages.filter((m) => m.to.includes(to)) : messages });
    },
    'DELETE /messages': async (req, res) => { messages = []; sendJson(res, 200, { ok: true }); },
    'GET /sessions': async (req, res) => sendJson(res, 200, { sessions }),
    'POST /smtp/faults': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      if (!STAGES.includes(b.stage)) throw new HttpError(400, { error: `stage must be one of ${STAGES.join(', ')}` });
      if (b.action !== 'drop' && b.action !== 'delay' && !(Number.isInteger(b.code) && b.code >= 400 && b.code < 600)) {
        throw new HttpError(400, { error: 'code must be a 4xx or 5xx integer (or action drop/delay)' });
      }
      const f = { ...b, id: ++faultSeq, fired: 0 };
      faults.push(f);
      sendJson(res, 200, { id: f.id });
    },
    'GET /smtp/faults': async (req, res) => sendJson(res, 200, { faults }),
    'DELETE /smtp/faults': async (req, res) => { faults = []; sendJson(res, 200, { ok: true }); },
  };
  const admin = common.createFake({
    name: 'smtp', admin: adminRoutes,
    handle: async () => { throw new HttpError(404, { error: 'the SMTP fake serves only /__admin on its HTTP port' }); },
    onReset: () => { messages = []; sessions = []; faults = []; },
  });

  return {
    server, admin, port: null, adminPort: null,
    get messages() { return messages; },
    async listen(port, adminPort, host) {
      const h = host || '127.0.0.1';
      this.adminPort = await admin.listen(adminPort || 0, h);
      this.port = await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port || 0, h, () => resolve(server.address().port));
      });
      return this.port;
    },
    async close() {
      for (const s of conns) s.destroy();
      await new Promise((r) => server.close(() => r()));
      await admin.close();
    },
  };
}

module.exports = { createSmtpFake, parseMessage };

if (require.main === module) {
  let args;
  try {
    args = common.parseArgs(process.argv.slice(2), {
      port: 0, 'admin-port': 0, host: '127.0.0.1', 'max-size': 10 * 1024 * 1024,
      hostname: 'fake-smtp.local', 'require-auth': false, verbose: false,
    });
  } catch (e) {
    process.stderr.write(`smtp fake: ${e.message}\n`);
    process.exit(2);
  }
  if (args.verbose) common.setVerbose(true);
  const fake = createSmtpFake({ maxSize: args['max-size'], hostname: args.hostname, requireAuth: args['require-auth'] });
  fake.listen(args.port, args['admin-port'], args.host).then(() => {
    process.stdout.write(`admin listening on ${args.host}:${fake.adminPort}\n`);
    process.stdout.write(`listening on ${args.host}:${fake.port}\n`);
    const stop = () => { fake.close().then(() => process.exit(0)); setTimeout(() => process.exit(0), 500).unref(); };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  }).catch((e) => { process.stderr.write(`smtp fake: ${e.message}\n`); process.exit(1); });
}
