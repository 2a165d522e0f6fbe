'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Readable } = require('node:stream');
const { parseQuery, compileQuery } = require('../lib/google-query');
const { createGoogleFake } = require('../google');

// Starts the fake through tests/fakes/run on port 0, as other suites will.
function startFake(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(__dirname, '..', 'run'), ['google', '--port', '0', ...(args || [])], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ child, base: `http://127.0.0.1:${m[1]}`, port: Number(m[1]) });
    });
    child.on('exit', (c) => reject(new Error(`fake exited ${c}`)));
  });
}

let fake; let base;
test.before(async () => { fake = await startFake(['--client-id', 'cid', '--client-secret', 'csecret', '--redirect-uri', 'http://app.local/cb']); base = fake.base; });
test.after(() => { fake.child.kill('SIGTERM'); });

const admin = async (method, p, body) => {
  const r = await fetch(`${base}/__admin${p}`, { method, body: body && JSON.stringify(body) });
  return r.json();
};
const user = (email) => admin('POST', '/users', { email, client_id: 'cid' });
const api = (tok, method, p, body, headers) => fetch(`${base}${p}`, {
  method, headers: { Authorization: `Bearer ${tok}`, ...(body && typeof body === 'object' && !Buffer.isBuffer(body) ? { 'Content-Type': 'application/json' } : {}), ...(headers || {}) },
  body: body && typeof body === 'object' && !Buffer.isBuffer(body) ? JSON.stringify(body) : body,
});

function driveClient(tok) {
  const { google } = require('googleapis');
  const auth = new google.auth.OAuth2('cid', 'csecret');
  auth.setCredentials({ access_token: tok });
  return google.drive({ version: 'v3', auth, rootUrl: `${base}/` });
}

test('q parser: table', () => {
  const f = {
    name: "Bob's HelloWorld.png", mimeType: 'image/png', parents: ['P1'], trashed: false, starred: false,
    modifiedTime: '2024-05-02T00:00:00.000Z', createdTime: '2024-01-01T00:00:00.000Z',
    appProperties: { ca_job_id: 'j1', 'x\\y': "it's" }, properties: {},
  };
  const cases = [
    ["'P1' in parents", true], ["'P2' in parents", false], ['trashed = false', true], ['trashed = true', false],
    ["mimeType contains 'image/'", true], ["mimeType != 'image/png'", false], ["mimeType = 'image/png'", true],
    ["name = 'Bob\\'s HelloWorld.png'", true], ["name contains 'bob'", true], ["name contains 'Hello'", true],
    ["name contains 'World'", false], ["modifiedTime > '2024-05-01T12:00:00Z'", true],
    ["modifiedTime >= '2024-05-02T00:00:00Z'", true], ["modifiedTime < '2024-05-02T00:00:00Z'", false],
    ["modifiedTime <= '2024-05-02'", true], ["modifiedTime = '2024-05-02T00:00:00.000Z'", true],
    ["createdTime < '2024-02-01T00:00:00+01:00'", true],
    ["appProperties has { key='ca_job_id' and value='j1' }", true],
    ["appProperties has { key='ca_job_id' and value='j2' }", false],
    ["appProperties has { key='x\\\\y' and value='it\\'s' }", true],
    ["not trashed = true and ('P2' in parents or 'P1' in parents)", true],
    ["'P2' in parents or 'P1' in parents and trashed = true", false],
    ["NOT (mimeType contains 'video/') AND trashed = FALSE", true],
  ];
  for (const [q, want] of cases) assert.equal(compileQuery(q)(f), want, q);
  const bad = ["'P1' in parent", "name = bob", 'trashed = maybe', "name contains 'x", "'a\\x' in parents",
    "modifiedTime > 'yesterday'", "(trashed = true", 'trashed = true)', "size > '3'", "name < 'a'",
    "appProperties has { key='a' }", 'and trashed = true', '', "trashed = true 'x'"];
  for (const q of bad) assert.throws(() => parseQuery(q), undefined, q);
});

test('files.list with q across pages (googleapis), fields, orderBy, bad q is 400', async () => {
  const u = await user('pager@example.com');
  const drive = driveClient(u.access_token);
  const folder = (await drive.files.create({ requestBody: { name: 'In', mimeType: 'application/vnd.google-apps.folder' }, fields: 'id' })).data;
  for (let i = 0; i < 5; i++) await drive.files.create({ requestBody: { name: `f${i}.txt`, parents: [folder.id] } });
  await drive.files.create({ requestBody: { name: 'elsewhere.txt' } });
  const names = []; let pageToken; let pages = 0;
  do {
    const r = await drive.files.list({ q: `'${folder.id}' in parents and trashed = false`, pageSize: 2, pageToken, orderBy: 'name desc', fields: 'nextPageToken,files(id,name,parents)' });
    names.push(...r.data.files.map((x) => x.name));
    for (const x of r.data.files) assert.deepEqual(x.parents, [folder.id]);
    pageToken = r.data.nextPageToken; pages++;
  } while (pageToken);
  assert.equal(pages, 3);
  assert.deepEqual(names, ['f4.txt', 'f3.txt', 'f2.txt', 'f1.txt', 'f0.txt']);
  const r = await api(u.access_token, 'GET', `/drive/v3/files?q=${encodeURIComponent("name = 'x")}`);
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.errors[0].location, 'q');
  assert.equal((await api(u.access_token, 'GET', '/drive/v3/files?pageSize=1001')).status, 400);
  assert.equal((await api(u.access_token, 'GET', '/drive/v3/files?fields=files(nosuch)')).status, 400);
});

test('multipart upload with appProperties, find by appProperties, download byte for byte, Range', async () => {
  const u = await user('up@example.com');
  const drive = driveClient(u.access_token);
  const bytes = crypto.randomBytes(70000);
  const created = await drive.files.create({
    requestBody: { name: 'out.png', appProperties: { ca_job_id: 'job-42' }, modifiedTime: '2020-01-02T03:04:05.678Z' },
    media: { mimeType: 'image/png', body: Readable.from([bytes]) },
    fields: 'id,name,mimeType,size,md5Checksum,appProperties,modifiedTime,webViewLink',
  }, { rootUrl: `${base}/` });
  const f = created.data;
  assert.equal(f.mimeType, 'image/png');
  assert.equal(f.size, String(bytes.length));
  assert.equal(f.md5Checksum, crypto.createHash('md5').update(bytes).digest('hex'));
  assert.equal(f.modifiedTime, '2020-01-02T03:04:05.678Z');
  assert.match(f.webViewLink, /drive\.google\.com\/file\/d\//);
  const reqs = await admin('GET', '/requests');
  assert.ok(reqs.requests.some((r) => r.path === '/upload/drive/v3/files' && r.query.uploadType === 'multipart'));
  const found = await drive.files.list({ q: "appProperties has { key='ca_job_id' and value='job-42' }", fields: 'files(id,appProperties)' });
  assert.deepEqual(found.data.files, [{ id: f.id, appProperties: { ca_job_id: 'job-42' } }]);
  const dl = await drive.files.get({ fileId: f.id, alt: 'media' }, { responseType: 'arraybuffer' });
  assert.ok(Buffer.from(dl.data).equals(bytes));
  const part = await api(u.access_token, 'GET', `/drive/v3/files/${f.id}?alt=media`, undefined, { Range: 'bytes=10-19' });
  assert.equal(part.status, 206);
  assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(10, 20)));
  // media upload guesses the type from the name? no name -> Content-Type is used
  const m = await api(u.access_token, 'POST', '/upload/drive/v3/files?uploadType=media&fields=name,mimeType', Buffer.from('hi'), { 'Content-Type': 'text/plain' });
  assert.deepEqual(await m.json(), { name: 'Untitled', mimeType: 'text/plain' });
});

test('move, rename, trash, delete show up in changes.list; sharing; other user gets 404', async () => {
  const u = await user('mover@example.com');
  const other = await user('other@example.com');
  const tok = u.access_token;
  const mk = async (body) => (await api(tok, 'POST', '/drive/v3/files?fields=id', body)).json();
  const a = await mk({ name: 'A', mimeType: 'application/vnd.google-apps.folder' });
  const b = await mk({ name: 'B', mimeType: 'application/vnd.google-apps.folder' });
  const file = await mk({ name: 'x.jpg', parents: [a.id] });
  const gone = await mk({ name: 'gone.txt' });
  const start = (await (await api(tok, 'GET', '/drive/v3/changes/startPageToken')).json()).startPageToken;
  const drive = driveClient(tok);
  await drive.files.update({ fileId: file.id, addParents: b.id, removeParents: a.id, requestBody: { name: 'y.jpg' } });
  assert.equal((await api(tok, 'PATCH', `/drive/v3/files/${file.id}`, { parents: [a.id] })).status, 403);
  assert.equal((await api(tok, 'PATCH', `/drive/v3/files/${file.id}?addParents=${a.id}`, {})).status, 403); // two parents
  await api(tok, 'PATCH', `/drive/v3/files/${a.id}`, { trashed: true });
  assert.equal((await api(tok, 'DELETE', `/drive/v3/files/${gone.id}`)).status, 204);
  const all = []; let pageToken = start; let newStart;
  while (pageToken) {
    const r = (await drive.changes.list({ pageToken, pageSize: 1, fields: 'nextPageToken,newStartPageToken,changes(changeType,removed,fileId,file(name,parents,trashed))' })).data;
    all.push(...r.changes); pageToken = r.nextPageToken; newStart = r.newStartPageToken;
  }
  assert.ok(newStart);
  const by = Object.fromEntries(all.map((c) => [c.fileId, c]));
  assert.deepEqual(by[file.id], { changeType: 'file', removed: false, fileId: file.id, file: { name: 'y.jpg', parents: [b.id], trashed: false } });
  assert.equal(by[a.id].file.trashed, true);
  assert.equal(by[a.id].removed, false);
  assert.deepEqual(by[gone.id], { changeType: 'file', removed: true, fileId: gone.id });
  const after = (await drive.changes.list({ pageToken: newStart })).data;
  assert.deepEqual(after.changes, []);
  // the other user: no change, 404 on my file; after sharing, read ok, write 403
  const oc = await (await api(other.access_token, 'GET', `/drive/v3/changes?pageToken=${start}`)).json();
  assert.equal(oc.changes.length, 0);
  const r404 = await api(other.access_token, 'GET', `/drive/v3/files/${file.id}`);
  assert.equal(r404.status, 404);
  assert.equal((await r404.json()).error.errors[0].reason, 'notFound');
  const perm = await (await api(tok, 'POST', `/drive/v3/files/${file.id}/permissions`, { type: 'anyone', role: 'reader' })).json();
  assert.deepEqual(perm, { kind: 'drive#permission', id: 'anyoneWithLink', type: 'anyone', role: 'reader', allowFileDiscovery: false });
  assert.equal((await api(other.access_token, 'GET', `/drive/v3/files/${file.id}`)).status, 200);
  const w = await api(other.access_token, 'PATCH', `/drive/v3/files/${file.id}`, { name: 'z' });
  assert.equal(w.status, 403);
  assert.equal((await w.json()).error.errors[0].reason, 'insufficientFilePermissions');
  const meta = await (await api(tok, 'GET', `/drive/v3/files/${file.id}?fields=shared,webContentLink`)).json();
  assert.equal(meta.shared, true);
  assert.match(meta.webContentLink, /export=download/);
});

test('resumable upload in chunks with 308 and status query', async () => {
  const u = await user('resume@example.com');
  const data = crypto.randomBytes(256 * 1024 + 1000);
  const init = await api(u.access_token, 'POST', '/upload/drive/v3/files?uploadType=resumable&fields=id,name,size,md5Checksum', { name: 'big.bin' },
    { 'X-Upload-Content-Type': 'application/octet-stream', 'X-Upload-Content-Length': String(data.length) });
  assert.equal(init.status, 200);
  const loc = init.headers.get('location');
  assert.match(loc, /upload_id=/);
  const small = await fetch(loc, { method: 'PUT', body: data.subarray(0, 1000), headers: { 'Content-Range': `bytes 0-999/${data.length}` } });
  assert.equal(small.status, 400); // non-final chunk below 256 KiB
  const c1 = await fetch(loc, { method: 'PUT', body: data.subarray(0, 262144), headers: { 'Content-Range': `bytes 0-262143/${data.length}` } });
  assert.equal(c1.status, 308);
  assert.equal(c1.headers.get('range'), 'bytes=0-262143');
  const q = await fetch(loc, { method: 'PUT', headers: { 'Content-Range': `bytes */${data.length}` } });
  assert.equal(q.status, 308);
  assert.equal(q.headers.get('range'), 'bytes=0-262143');
  const c2 = await fetch(loc, { method: 'PUT', body: data.subarray(262144), headers: { 'Content-Range': `bytes 262144-${data.length - 1}/${data.length}` } });
  assert.equal(c2.status, 200);
  const f = await c2.json();
  assert.equal(f.size, String(data.length));
  assert.equal(f.md5Checksum, crypto.createHash('md5').update(data).digest('hex'));
});

test('OAuth code flow with PKCE, replay, refresh, revoke, deny, userinfo', async () => {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const authorize = async (extra) => {
    const u = new URL(`${base}/o/oauth2/v2/auth`);
    const p = { client_id: 'cid', redirect_uri: 'http://app.local/cb', response_type: 'code', scope: 'openid email profile https://www.googleapis.com/auth/drive.file', state: 'st8', access_type: 'offline', code_challenge: challenge, code_challenge_method: 'S256', login_hint: 'flow@example.com', ...extra };
    for (const [k, v] of Object.entries(p)) u.searchParams.set(k, v);
    const r = await fetch(u, { redirect: 'manual' });
    return r;
  };
  const tokenReq = (form, headers) => fetch(`${base}/token`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...(headers || {}) }, body: new URLSearchParams(form) });
  let r = await authorize({});
  assert.equal(r.status, 302);
  const cb = new URL(r.headers.get('location'));
  assert.equal(cb.origin + cb.pathname, 'http://app.local/cb');
  assert.equal(cb.searchParams.get('state'), 'st8');
  const code = cb.searchParams.get('code');
  const form = { grant_type: 'authorization_code', code, redirect_uri: 'http://app.local/cb', client_id: 'cid', client_secret: 'csecret' };
  r = await tokenReq({ ...form, code_verifier: 'wrong' });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error, 'invalid_grant');
  // a failed exchange burns the code only when it succeeds; get a fresh one for clarity
  const code2 = new URL((await authorize({ prompt: 'consent' })).headers.get('location')).searchParams.get('code');
  r = await tokenReq({ grant_type: 'authorization_code', code: code2, redirect_uri: 'http://app.local/cb', code_verifier: verifier },
    { Authorization: `Basic ${Buffer.from('cid:csecret').toString('base64')}` });
  assert.equal(r.status, 200);
  const tok = await r.json();
  assert.ok(tok.access_token && tok.refresh_token && tok.id_token);
  assert.equal(tok.expires_in, 3599);
  const claims = JSON.parse(Buffer.from(tok.id_token.split('.')[1], 'base64url').toString());
  assert.equal(claims.email, 'flow@example.com');
  assert.equal(claims.aud, 'cid');
  r = await tokenReq({ grant_type: 'authorization_code', code: code2, redirect_uri: 'http://app.local/cb', code_verifier: verifier, client_id: 'cid', client_secret: 'csecret' });
  assert.deepEqual(await r.json(), { error: 'invalid_grant', error_description: 'Bad Request' });
  r = await tokenReq({ ...form, client_secret: 'nope', code_verifier: verifier });
  assert.equal(r.status, 401);
  const ui = await (await fetch(`${base}/v1/userinfo`, { headers: { Authorization: `Bearer ${tok.access_token}` } })).json();
  assert.equal(ui.email, 'flow@example.com');
  assert.equal(ui.sub, claims.sub);
  // googleapis' OAuth2 client refreshes against the fake's token endpoint
  const { google } = require('googleapis');
  const oc = new google.auth.OAuth2({ clientId: 'cid', clientSecret: 'csecret', endpoints: { oauth2TokenUrl: `${base}/token` } });
  oc.setCredentials({ refresh_token: tok.refresh_token });
  const fresh = await oc.getAccessToken();
  assert.match(fresh.token, /^ya29\./);
  assert.notEqual(fresh.token, tok.access_token);
  await admin('POST', '/revoke', { refresh_token: tok.refresh_token });
  r = await tokenReq({ grant_type: 'refresh_token', refresh_token: tok.refresh_token, client_id: 'cid', client_secret: 'csecret' });
  assert.deepEqual(await r.json(), { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' });
  assert.equal((await fetch(`${base}/v1/userinfo`, { headers: { Authorization: `Bearer ${tok.access_token}` } })).status, 401);
  r = await authorize({ login_hint: 'deny@example.com' });
  assert.equal(new URL(r.headers.get('location')).searchParams.get('error'), 'access_denied');
  await admin('POST', '/deny', {});
  r = await authorize({});
  assert.equal(new URL(r.headers.get('location')).searchParams.get('error'), 'access_denied');
  r = await authorize({ redirect_uri: 'http://evil.local/cb' });
  assert.equal(r.status, 400);
});

test('consent page: a browser without login_hint chooses the account, Allow gives a code, Cancel access_denied', async () => {
  const u = new URL(`${base}/o/oauth2/v2/auth`);
  const p = { client_id: 'cid', redirect_uri: 'http://app.local/cb', response_type: 'code', scope: 'openid email https://www.googleapis.com/auth/drive', state: 's"<x>', access_type: 'offline' };
  for (const [k, v] of Object.entries(p)) u.searchParams.set(k, v);
  let r = await fetch(u, { redirect: 'manual', headers: { Accept: 'text/html,application/xhtml+xml' } });
  assert.equal(r.status, 200);
  const html = await r.text();
  assert.match(html, /<form method="get" action="\/o\/oauth2\/v2\/auth">/);
  assert.match(html, /See, edit, create, and delete all of your Google Drive files/);
  assert.match(html, /name="state" value="s&quot;&lt;x&gt;"/); // escaped, not markup
  assert.doesNotMatch(html, /s"<x>/);
  // a program (no text/html) goes straight on, as before
  r = await fetch(u, { redirect: 'manual' });
  assert.equal(r.status, 302);
  // Allow with the chosen account: a code for that account
  const allow = new URL(u); allow.searchParams.set('ca_consent', 'allow'); allow.searchParams.set('login_hint', 'chooser@example.com');
  r = await fetch(allow, { redirect: 'manual', headers: { Accept: 'text/html' } });
  assert.equal(r.status, 302);
  let cb = new URL(r.headers.get('location'));
  assert.ok(cb.searchParams.get('code'));
  assert.equal(cb.searchParams.get('state'), 's"<x>');
  r = await fetch(`${base}/token`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: 'http://app.local/cb', client_id: 'cid', client_secret: 'csecret' }) });
  assert.equal(r.status, 200);
  const claims = JSON.parse(Buffer.from((await r.json()).id_token.split('.')[1], 'base64url').toString());
  assert.equal(claims.email, 'chooser@example.com');
  // Cancel: access_denied back to the app
  const deny = new URL(u); deny.searchParams.set('ca_consent', 'deny');
  r = await fetch(deny, { redirect: 'manual', headers: { Accept: 'text/html' } });
  assert.equal(r.status, 302);
  cb = new URL(r.headers.get('location'));
  assert.equal(cb.searchParams.get('error'), 'access_denied');
  assert.equal(cb.searchParams.get('code'), null);
});

test('expired token is 401 authError', async () => {
  const u = await user('exp@example.com');
  assert.equal((await api(u.access_token, 'GET', '/drive/v3/files')).status, 200);
  await admin('POST', '/expire', { access_token: u.access_token });
  const r = await api(u.access_token, 'GET', '/drive/v3/files');
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.errors[0].reason, 'authError');
});

test('faults: status body, 429 Retry-After, delay, drop, slow body, fraction', async () => {
  const u = await user('faults@example.com');
  const list = () => api(u.access_token, 'GET', '/drive/v3/files');
  await admin('POST', '/faults', { match: { path: '/drive/v3/files' }, count: 1, action: 'status', status: 403, reason: 'userRateLimitExceeded' });
  let r = await list();
  assert.equal(r.status, 403);
  const body = await r.json();
  assert.equal(body.error.errors[0].reason, 'userRateLimitExceeded');
  assert.equal(body.error.errors[0].domain, 'usageLimits');
  assert.equal((await list()).status, 200); // count exhausted
  await admin('POST', '/faults', { match: { method: 'GET', path_regex: '^/drive/v3/files$' }, count: 1, action: 'status', status: 429, retry_after: 7 });
  r = await list();
  assert.equal(r.status, 429);
  assert.equal(r.headers.get('retry-after'), '7');
  await admin('POST', '/faults', { count: 1, action: 'delay', delay_ms: 300 });
  let t = Date.now(); r = await list();
  assert.equal(r.status, 200); assert.ok(Date.now() - t >= 290);
  await admin('POST', '/faults', { count: 1, action: 'drop' });
  await assert.rejects(list());
  await admin('POST', '/faults', { count: 1, action: 'slow_body', chunk_bytes: 8, interval_ms: 20 });
  t = Date.now(); r = await list(); const txt = await r.text();
  assert.ok(Date.now() - t >= 20 * (Math.ceil(txt.length / 8) - 1));
  await admin('POST', '/faults', { match: { path: '/drive/v3/files' }, fraction: 0.5, seed: 3, action: 'status', status: 503 });
  const codes = [];
  for (let i = 0; i < 20; i++) codes.push((await list()).status);
  await admin('DELETE', '/faults');
  const n503 = codes.filter((c) => c === 503).length;
  assert.ok(n503 > 2 && n503 < 18, `fraction fired ${n503}/20`);
  assert.equal(codes.filter((c) => c !== 503 && c !== 200).length, 0);
  const log = await admin('GET', '/requests');
  assert.ok(log.requests.some((x) => x.fault === 'drop' && x.status === 0));
});

test('data-dir: file dropped on disk appears in list and changes; API create appears on disk; ids survive restart', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-drive-'));
  const g = createGoogleFake({ 'data-dir': dir });
  const port = await g.listen(0);
  const b = `http://127.0.0.1:${port}`;
  try {
    const u = await (await fetch(`${b}/__admin/users`, { method: 'POST', body: JSON.stringify({ email: 'disk@example.com' }) })).json();
    const call = (m, p, body) => fetch(`${b}${p}`, { method: m, headers: { Authorization: `Bearer ${u.access_token}` }, body: body && JSON.stringify(body) }).then((r) => r.json());
    const start = (await call('GET', '/drive/v3/changes/startPageToken')).startPageToken;
    fs.mkdirSync(path.join(dir, 'disk@example.com', 'Inbox'));
    fs.writeFileSync(path.join(dir, 'disk@example.com', 'Inbox', 'photo.jpg'), 'JPEGDATA');
    const l = await call('GET', `/drive/v3/files?q=${encodeURIComponent("name = 'photo.jpg'")}&fields=files(id,mimeType,size,parents)`);
    assert.equal(l.files.length, 1);
    assert.equal(l.files[0].mimeType, 'image/jpeg');
    assert.equal(l.files[0].size, '8');
    const ch = await call('GET', `/drive/v3/changes?pageToken=${start}&fields=changes(fileId,removed,file(name))`);
    assert.ok(ch.changes.some((c) => c.fileId === l.files[0].id && !c.removed));
    const inbox = l.files[0].parents[0];
    const out = await call('POST', '/drive/v3/files?fields=id', { name: 'Processed', mimeType: 'application/vnd.google-apps.folder', parents: [inbox] });
    const up = await fetch(`${b}/upload/drive/v3/files?uploadType=multipart&fields=id`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${u.access_token}`, 'Content-Type': 'multipart/related; boundary=XX' },
      body: `--XX\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ name: 'out.png', parents: [out.id] })}\r\n--XX\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n--XX--\r\n`,
    }).then((r) => r.json());
    assert.equal(fs.readFileSync(path.join(dir, 'disk@example.com', 'Inbox', 'Processed', 'out.png'), 'utf8'), 'PNGDATA');
    fs.rmSync(path.join(dir, 'disk@example.com', 'Inbox', 'photo.jpg'));
    const ch2 = await call('GET', `/drive/v3/changes?pageToken=${start}&fields=changes(fileId,removed)`);
    assert.ok(ch2.changes.some((c) => c.fileId === l.files[0].id && c.removed));
    await g.close();
    const g2 = createGoogleFake({ 'data-dir': dir });
    const port2 = await g2.listen(0);
    try {
      const u2 = await (await fetch(`http://127.0.0.1:${port2}/__admin/users`, { method: 'POST', body: JSON.stringify({ email: 'disk@example.com' }) })).json();
      const r = await fetch(`http://127.0.0.1:${port2}/drive/v3/files/${up.id}?fields=name,parents`, { headers: { Authorization: `Bearer ${u2.access_token}` } });
      assert.deepEqual(await r.json(), { name: 'out.png', parents: [out.id] });
    } finally { await g2.close(); }
  } finally {
    await g.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scopes: drive.readonly + drive.file reads every file and writes its own; narrower tokens fail as at Google', async () => {
  const S = 'https://www.googleapis.com/auth/';
  const email = 'scoped@example.com';
  const tokenWith = async (scope) => (await admin('POST', '/users', { email, client_id: 'cid', scope })).access_token;
  const narrow = await tokenWith(`openid email ${S}drive.readonly ${S}drive.file`);
  const fileOnly = await tokenWith(`openid ${S}drive.file`);
  const readOnly = await tokenWith(`openid ${S}drive.readonly`);
  const owner = await admin('POST', '/users', { email });
  // the user's own folder and photo, made in the Drive UI (not by the app)
  const inbox = await admin('POST', '/files', { email, name: 'Inbox', folder: true, parents: [owner.root_id] });
  const photo = await admin('POST', '/files', { email, name: 'a.jpg', mimeType: 'image/jpeg', parents: [inbox.id], content: 'jpeg' });

  // readonly + file: list, download, make Processed in the user's folder, upload, share the upload
  const drive = driveClient(narrow);
  const listed = await drive.files.list({ q: `'${inbox.id}' in parents and trashed = false`, fields: 'files(id,isAppAuthorized)' });
  assert.deepEqual(listed.data.files, [{ id: photo.id, isAppAuthorized: false }]);
  const dl = await drive.files.get({ fileId: photo.id, alt: 'media' }, { responseType: 'arraybuffer' });
  assert.equal(Buffer.from(dl.data).toString(), 'jpeg');
  const processed = await drive.files.create({ requestBody: { name: 'Processed', mimeType: 'application/vnd.google-apps.folder', parents: [inbox.id] }, fields: 'id,isAppAuthorized' });
  assert.equal(processed.data.isAppAuthorized, true);
  const out = await drive.files.create({
    requestBody: { name: 'a_out.jpg', parents: [processed.data.id] },
    media: { mimeType: 'image/jpeg', body: Readable.from([Buffer.from('out')]) }, fields: 'id',
  }, { rootUrl: `${base}/` });
  const perm = await drive.permissions.create({ fileId: out.data.id, requestBody: { type: 'anyone', role: 'reader' } });
  assert.equal(perm.data.id, 'anyoneWithLink');
  // ... but cannot change or share what the user made
  await assert.rejects(drive.files.update({ fileId: photo.id, requestBody: { name: 'b.jpg' } }), (e) => {
    assert.equal(e.response.status, 403);
    assert.equal(e.response.data.error.errors[0].reason, 'appNotAuthorizedToFile');
    return true;
  });
  await assert.rejects(drive.permissions.create({ fileId: photo.id, requestBody: { type: 'anyone', role: 'reader' } }),
    (e) => e.response.status === 403 && e.response.data.error.errors[0].reason === 'appNotAuthorizedToFile');

  // drive.file alone: the user's folder and photo do not exist for the app; its own upload does
  const f = driveClient(fileOnly);
  const seen = await f.files.list({ q: `'${inbox.id}' in parents`, fields: 'files(id)' });
  assert.deepEqual(seen.data.files, [{ id: processed.data.id }]); // not the photo: only what the app made
  await assert.rejects(f.files.get({ fileId: photo.id, alt: 'media' }), (e) => e.response.status === 404 && e.response.data.error.errors[0].reason === 'notFound');
  const mine = await f.files.list({ q: `'${processed.data.id}' in parents`, fields: 'files(id)' });
  assert.deepEqual(mine.data.files, [{ id: out.data.id }]);
  await assert.rejects(f.files.create({ requestBody: { name: 'P2', mimeType: 'application/vnd.google-apps.folder', parents: [inbox.id] } }),
    (e) => e.response.status === 404);
  const start = await f.changes.getStartPageToken();
  await admin('POST', '/files', { email, name: 'later.jpg', mimeType: 'image/jpeg', parents: [inbox.id], content: 'x' });
  const ch = await f.changes.list({ pageToken: start.data.startPageToken });
  assert.deepEqual(ch.data.changes, []);

  // drive.readonly alone: reads, but every write is Google's scope error
  const r = driveClient(readOnly);
  assert.equal((await r.files.list({ q: `'${inbox.id}' in parents and name = 'a.jpg'`, fields: 'files(id)' })).data.files.length, 1);
  await assert.rejects(r.files.create({ requestBody: { name: 'P3', mimeType: 'application/vnd.google-apps.folder', parents: [inbox.id] } }), (e) => {
    assert.equal(e.response.status, 403);
    assert.deepEqual(e.response.data.error.errors.map((x) => x.reason), ['insufficientPermissions']);
    assert.equal(e.response.data.error.message, 'Request had insufficient authentication scopes.');
    return true;
  });
});

test('POST /revoke as Google answers it: googleapis revokeToken, form body, already revoked → 400 invalid_token', async () => {
  const { google } = require('googleapis');
  const oc = new google.auth.OAuth2({ clientId: 'cid', clientSecret: 'csecret', endpoints: { oauth2RevokeUrl: `${base}/revoke`, oauth2TokenUrl: `${base}/token` } });
  const refresh = (rt) => fetch(`${base}/token`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, client_id: 'cid', client_secret: 'csecret' }) });
  // the refresh token, in the query (googleapis): the grant ends, access tokens too
  const u1 = await user('revoke1@example.com');
  const res = await oc.revokeToken(u1.refresh_token);
  assert.equal(res.status, 200);
  assert.deepEqual(res.data, {});
  assert.equal((await refresh(u1.refresh_token)).status, 400);
  assert.equal((await fetch(`${base}/v1/userinfo`, { headers: { Authorization: `Bearer ${u1.access_token}` } })).status, 401);
  // again: 400 invalid_token, which googleapis raises
  await assert.rejects(oc.revokeToken(u1.refresh_token), (e) => e.response && e.response.status === 400 && e.response.data.error === 'invalid_token');
  // an unknown token
  const r = await fetch(`${base}/revoke`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'token=nope' });
  assert.equal(r.status, 400);
  assert.deepEqual(await r.json(), { error: 'invalid_token', error_description: 'Token expired or revoked' });
  // the access token, in a form body (what the gateway sends): its refresh token dies too
  const u2 = await user('revoke2@example.com');
  const r2 = await fetch(`${base}/revoke`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: u2.access_token }) });
  assert.equal(r2.status, 200);
  const dead = await refresh(u2.refresh_token);
  assert.equal(dead.status, 400);
  assert.equal((await dead.json()).error, 'invalid_grant');
  assert.equal((await fetch(`${base}/revoke`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: u2.refresh_token }) })).status, 400);
});

test('uploads over 5 MB: multipart and media refused with 413; googleapis sends multipart for any size', async () => {
  const u = await user('bigup@example.com');
  const drive = driveClient(u.access_token);
  const big = crypto.randomBytes(5 * 1024 * 1024 + 1);
  const since = (await admin('GET', '/requests')).next;
  // googleapis (188) picks uploadType by one rule: requestBody + media → multipart,
  // media alone → media; never resumable. Over 5 MB Drive documents neither.
  await assert.rejects(drive.files.create({
    requestBody: { name: 'big.png' }, media: { mimeType: 'image/png', body: Readable.from([big]) }, fields: 'id',
  }, { rootUrl: `${base}/` }), (e) => e.status === 413 && /resumable/.test(e.message));
  await assert.rejects(drive.files.create({ media: { mimeType: 'image/png', body: Readable.from([big]) } }, { rootUrl: `${base}/` }),
    (e) => e.status === 413);
  const reqs = (await admin('GET', `/requests?since=${since}`)).requests;
  assert.deepEqual(reqs.map((r) => [r.query.uploadType, r.status]), [['multipart', 413], ['media', 413]]);
  // exactly 5 MB still goes in one request
  const five = big.subarray(0, 5 * 1024 * 1024);
  const ok = await drive.files.create({ requestBody: { name: 'five.bin' }, media: { body: Readable.from([five]) }, fields: 'size' }, { rootUrl: `${base}/` });
  assert.equal(ok.data.size, String(five.length));
});

test('resumable over 5 MB with the googleapis auth client: chunks, a cut mid-chunk resumed from Drive\'s offset, an expired session', async () => {
  const u = await user('resumable-big@example.com');
  const { google } = require('googleapis');
  const auth = new google.auth.OAuth2('cid', 'csecret');
  auth.setCredentials({ access_token: u.access_token });
  const data = crypto.randomBytes(6 * 1024 * 1024 + 12345);
  const CH = 2 * 1024 * 1024;
  const start = async () => {
    const r = await auth.request({
      url: `${base}/upload/drive/v3/files`, method: 'POST', params: { uploadType: 'resumable', fields: 'id,size,md5Checksum' },
      headers: { 'X-Upload-Content-Type': 'image/png', 'X-Upload-Content-Length': String(data.length) },
      data: { name: 'big.png', appProperties: { ca_job_id: 'job-big' } },
    });
    assert.equal(r.status, 200);
    return r.headers.get ? r.headers.get('location') : r.headers.location;
  };
  const put = (loc, a, b) => fetch(loc, {
    method: 'PUT', body: b === undefined ? undefined : data.subarray(a, b),
    headers: { 'Content-Range': b === undefined ? `bytes */${data.length}` : `bytes ${a}-${b - 1}/${data.length}` },
  });
  let loc = await start();
  let r = await put(loc, 0, CH);
  assert.equal(r.status, 308);
  assert.equal(r.headers.get('range'), `bytes=0-${CH - 1}`);
  // the next chunk is cut after 256 KiB: the status query says so
  await admin('POST', '/uploads/drop', { keep_bytes: 262144 });
  await assert.rejects(put(loc, CH, 2 * CH));
  r = await put(loc);
  assert.equal(r.status, 308);
  assert.equal(r.headers.get('range'), `bytes=0-${CH + 262144 - 1}`);
  r = await put(loc, CH + 262144, data.length);
  assert.equal(r.status, 200);
  const f = await r.json();
  assert.equal(f.size, String(data.length));
  assert.equal(f.md5Checksum, crypto.createHash('md5').update(data).digest('hex'));
  const up = (await admin('GET', '/uploads')).uploads.find((x) => x.done === f.id);
  assert.deepEqual(up.puts.map((p) => [p.start, p.status]), [[0, 308], [CH, 0], [null, 308], [CH + 262144, 200]]);
  // a status query after the end answers the file again (no second file)
  r = await put(loc);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).id, f.id);
  // an expired session: 404 on a chunk and on a status query
  loc = await start();
  await admin('POST', '/uploads/expire', {});
  assert.equal((await put(loc, 0, CH)).status, 404);
  assert.equal((await put(loc)).status, 404);
  const files = (await driveClient(u.access_token).files.list({ q: "appProperties has { key='ca_job_id' and value='job-big' }", fields: 'files(id)' })).data.files;
  assert.deepEqual(files, [{ id: f.id }]);
});
