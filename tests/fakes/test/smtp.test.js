'use strict';
// Tests of the SMTP fake over raw sockets, and of its HTTP admin port.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { createSmtpFake, parseMessage } = require('../smtp');

// A line-oriented SMTP client: send() writes, reply() reads one full reply.
function smtpConnect(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const waiting = [];
    const replies = [];
    const pump = () => {
      for (;;) {
        // a full reply ends with a line "NNN text" (space after the code)
        const m = /^((?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n)/.exec(buf);
        if (!m) break;
        buf = buf.slice(m[1].length);
        const lines = m[1].trimEnd().split('\r\n');
        replies.push({ code: Number(lines[0].slice(0, 3)), lines: lines.map((l) => l.slice(4)) });
      }
      while (waiting.length && replies.length) waiting.shift()(replies.shift());
    };
    sock.setEncoding('utf8');
    sock.on('data', (d) => { buf += d; pump(); });
    sock.on('error', reject);
    const c = {
      sock,
      closed: new Promise((r) => sock.on('close', r)),
      send(s) { sock.write(s); },
      reply(ms) {
        return new Promise((res, rej) => {
          const t = setTimeout(() => rej(new Error(`no reply; buffer=${JSON.stringify(buf)}`)), ms || 3000);
          waiting.push((r) => { clearTimeout(t); res(r); });
          pump();
        });
      },
      async cmd(s) { c.send(`${s}\r\n`); return c.reply(); },
    };
    sock.on('connect', () => resolve(c));
  });
}

let fake;
const adminUrl = (p) => `http://127.0.0.1:${fake.adminPort}/__admin${p}`;
const adminJson = async (p, method, body) => (await fetch(adminUrl(p), { method: method || 'GET', body: body ? JSON.stringify(body) : undefined })).json();

test.before(async () => {
  fake = createSmtpFake({ maxSize: 4096 });
  await fake.listen(0, 0);
});
test.after(async () => { await fake.close(); });
test.beforeEach(async () => { await fetch(adminUrl('/reset'), { method: 'POST' }); });

async function greet(c) {
  const g = await c.reply();
  assert.equal(g.code, 220);
  const e = await c.cmd('EHLO client.test');
  assert.equal(e.code, 250);
  return e;
}

test('a dot-stuffed message is received intact and readable from admin', async () => {
  const c = await smtpConnect(fake.port);
  const ehlo = await greet(c);
  assert.ok(ehlo.lines.includes('SIZE 4096'));
  assert.ok(ehlo.lines.includes('8BITMIME'));
  assert.ok(ehlo.lines.includes('PIPELINING'));
  assert.equal((await c.cmd('MAIL FROM:<noreply@creator.test>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<alice@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<bob@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const body = [
    'From: Creator <noreply@creator.test>',
    'To: alice@example.com, bob@example.com',
    'Subject: Your job is done',
    '  (folded subject)',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Hello,',
    '..a line that starts with a dot',
    '...two dots',
    '.',
  ];
  // Stuffed as a client must: a leading '.' is doubled; the final '.' alone ends DATA.
  c.send(`${body.join('\r\n')}\r\n`);
  const done = await c.reply();
  assert.equal(done.code, 250);
  assert.match(done.lines[0], /queued as [0-9A-F]+/);
  assert.equal((await c.cmd('QUIT')).code, 221);
  await c.closed;
  const { messages } = await adminJson('/messages');
  assert.equal(messages.length, 1);
  const m = messages[0];
  assert.equal(m.from, 'noreply@creator.test');
  assert.deepEqual(m.to, ['alice@example.com', 'bob@example.com']);
  assert.equal(m.helo, 'client.test');
  assert.ok(!Number.isNaN(Date.parse(m.received_at)));
  assert.equal(m.headers.subject, 'Your job is done (folded subject)');
  assert.equal(m.headers['content-type'], 'text/plain; charset=utf-8');
  assert.equal(m.body, 'Hello,\r\n.a line that starts with a dot\r\n..two dots\r\n');
  assert.ok(m.data.startsWith('From: Creator <noreply@creator.test>\r\n'));
  const filtered = await adminJson('/messages?to=bob%40example.com');
  assert.equal(filtered.messages.length, 1);
  assert.equal((await adminJson('/messages?to=carol%40example.com')).messages.length, 0);
});

test('pipelined commands, RSET, NOOP, HELO, sequence errors, AUTH', async () => {
  const c = await smtpConnect(fake.port);
  assert.equal((await c.reply()).code, 220);
  assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 503); // before HELO
  assert.equal((await c.cmd('HELO plain.test')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 503);
  assert.equal((await c.cmd('RCPT TO:<x@y>')).code, 503);
  assert.equal((await c.cmd('NOOP')).code, 250);
  assert.equal((await c.cmd('BOGUS')).code, 502);
  assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 250);
  assert.equal((await c.cmd('RSET')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 503); // RSET dropped the transaction
  const auth = Buffer.from('\0smtp-user\0secret').toString('base64');
  assert.equal((await c.cmd(`AUTH PLAIN ${auth}`)).code, 235);
  // All of a transaction in one write (PIPELINING).
  c.send('MAIL FROM:<p@q>\r\nRCPT TO:<r@s>\r\nDATA\r\n');
  assert.deepEqual([(await c.reply()).code, (await c.reply()).code, (await c.reply()).code], [250, 250, 354]);
  c.send('Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal((await c.reply()).code, 221);
  const { messages } = await adminJson('/messages');
  assert.equal(messages.length, 1);
  assert.equal(messages[0].auth_user, 'smtp-user');
  assert.equal(messages[0].headers.subject, 'piped');
  const { sessions } = await adminJson('/sessions');
  assert.ok(sessions.at(-1).transcript.includes('C: AUTH PLAIN ***'));
  // AUTH LOGIN
  const d = await smtpConnect(fake.port);
  await greet(d);
  assert.equal((await d.cmd('AUTH LOGIN')).code, 334);
  assert.equal((await d.cmd(Buffer.from('u2').toString('base64'))).code, 334);
  assert.equal((await d.cmd(Buffer.from('pw').toString('base64'))).code, 235);
  d.sock.destroy();
});

test('messages over the size limit get 552 and are not stored', async () => {
  const c = await smtpConnect(fake.port);
  await greet(c);
  assert.equal((await c.cmd('MAIL FROM:<a@b> SIZE=999999')).code, 552);
  assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<c@d>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(`Subject: big\r\n\r\n${'x'.repeat(70)}\r\n`.repeat(80));
  c.send('.\r\n');
  const r = await c.reply();
  assert.equal(r.code, 552);
  // The session continues: a small message still goes through.
  assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<c@d>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  assert.equal((await c.cmd('Subject: small\r\n\r\nok\r\n.')).code, 250);
  const { messages } = await adminJson('/messages');
  assert.deepEqual(messages.map((m) => m.headers.subject), ['small']);
  c.sock.destroy();
});

test('injected faults: 451 for the next N transactions, 554 on RCPT, refused connection', async () => {
  let f = await adminJson('/smtp/faults', 'POST', { stage: 'data_end', code: 451, count: 2 });
  assert.ok(f.id);
  const send = async (c, subject) => {
    assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<c@d>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    return c.cmd(`Subject: ${subject}\r\n\r\nhi\r\n.`);
  };
  const c = await smtpConnect(fake.port);
  await greet(c);
  const r1 = await send(c, 'one');
  assert.equal(r1.code, 451);
  assert.match(r1.lines[0], /^4\.3\.0/);
  assert.equal((await send(c, 'two')).code, 451);
  assert.equal((await send(c, 'three')).code, 250);
  assert.deepEqual((await adminJson('/messages')).messages.map((m) => m.headers.subject), ['three']);
  assert.deepEqual((await adminJson('/smtp/faults')).faults, []);
  // 554 at RCPT with a custom text
  await adminJson('/smtp/faults', 'POST', { stage: 'rcpt', code: 554, message: '5.7.1 Relay access denied', count: 1 });
  assert.equal((await c.cmd('MAIL FROM:<a@b>')).code, 250);
  const rr = await c.cmd('RCPT TO:<c@d>');
  assert.equal(rr.code, 554);
  assert.equal(rr.lines[0], '5.7.1 Relay access denied');
  assert.equal((await c.cmd('RSET')).code, 250);
  c.sock.destroy();
  // A refused connection: 421 greeting, then the server closes.
  await adminJson('/smtp/faults', 'POST', { stage: 'connect', code: 421, message: '4.3.2 Service shutting down', count: 1 });
  const d = await smtpConnect(fake.port);
  const g = await d.reply();
  assert.equal(g.code, 421);
  await d.closed;
  const e = await smtpConnect(fake.port);
  assert.equal((await e.reply()).code, 220);
  e.sock.destroy();
  // Bad fault specs are refused.
  const bad = await fetch(adminUrl('/smtp/faults'), { method: 'POST', body: JSON.stringify({ stage: 'nope', code: 451 }) });
  assert.equal(bad.status, 400);
});

test('parseMessage splits headers and body and unfolds headers', () => {
  const cases = [
    ['A: 1\r\nB: 2\r\n\r\nbody\r\n', { a: '1', b: '2' }, 'body\r\n'],
    ['Subject: x\r\n y\r\n\r\n', { subject: 'x y' }, ''],
    ['Received: a\r\nReceived: b\r\n\r\nz', { received: ['a', 'b'] }, 'z'],
    ['No-Body: 1', { 'no-body': '1' }, ''],
  ];
  for (const [input, headers, body] of cases) {
    const p = parseMessage(input);
    assert.deepEqual(p.headers, headers, input);
    assert.equal(p.body, body, input);
  }
});

test('tests/fakes/run smtp prints the admin port and the SMTP port', async () => {
  const child = spawn(path.join(__dirname, '..', 'run'), ['smtp', '--port', '0', '--admin-port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const ports = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const a = /^admin listening on 127\.0\.0\.1:(\d+)$/m.exec(out);
        const s = /^listening on 127\.0\.0\.1:(\d+)$/m.exec(out);
        if (a && s) resolve({ admin: Number(a[1]), smtp: Number(s[1]) });
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const c = await smtpConnect(ports.smtp);
    assert.equal((await c.reply()).code, 220);
    c.sock.destroy();
    const r = await fetch(`http://127.0.0.1:${ports.admin}/__admin/messages`);
    assert.deepEqual(await r.json(), { messages: [] });
  } finally { child.kill('SIGTERM'); }
});
