#!/usr/bin/env node
'use strict';
/*
 * Fake of Google OAuth 2.0 + OpenID Connect + Drive v3 on one port, at Google's own
 * paths (see docs/fakes.md). Start: tests/fakes/run google --port 0 [options].
 *
 *   --port P              0 picks one; prints "listening on 127.0.0.1:PORT"
 *   --client-id ID --client-secret S   register this OAuth client (with no
 *                         registered client at all, any client_id/secret is accepted)
 *   --redirect-uri U      allowed redirect URI(s) for --client-id, comma-separated
 *                         (default: any)
 *   --expires-in N        access token lifetime in seconds (default 3599)
 *   --default-user EMAIL  who consents when there is no login_hint
 *   --data-dir DIR        back each user's Drive with DIR/<email>/ (google-disk.js)
 *   --verbose             log requests on stderr
 *
 * id_token: a real RS256 JWT signed with a key generated at start-up; its public key
 * is served at /oauth2/v3/certs. iss is "https://accounts.google.com", aud the client_id.
 */
const crypto = require('node:crypto');
const {
  createFake, HttpError, makeRouter, parseArgs, runMain, readForm, readJson, sendJson,
} = require('./lib/common');
const { DriveStore, driveError, FOLDER, normTime } = require('./lib/google-drive');
const { addDriveRoutes, uploadAdmin } = require('./lib/google-drive-routes');
const { createPush } = require('./lib/google-push');

const ALL_SCOPES = 'openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/drive';
const DRIVE_SCOPE = /^https:\/\/www\.googleapis\.com\/auth\/drive(\.file|\.readonly|\.appdata|\.metadata(\.readonly)?)?$/;

const oauthError = (status, error, desc) => new HttpError(status, { error, error_description: desc });
const rand = (n) => crypto.randomBytes(n).toString('base64url');
const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));
const SCOPE_TEXT = {
  openid: 'Associate you with your personal info on Google',
  email: 'See your primary Google Account email address',
  profile: 'See your personal info, including any personal info you have made publicly available',
  'https://www.googleapis.com/auth/userinfo.email': 'See your primary Google Account email address',
  'https://www.googleapis.com/auth/userinfo.profile': 'See your personal info, including any personal info you have made publicly available',
  'https://www.googleapis.com/auth/drive': 'See, edit, create, and delete all of your Google Drive files',
  'https://www.googleapis.com/auth/drive.file': 'See, edit, create, and delete only the specific Google Drive files you use with this app',
  'https://www.googleapis.com/auth/drive.readonly': 'See and download all your Google Drive files',
};

// The consent page: a form back to the same endpoint with every parameter,
// the account's e-mail (login_hint) and the decision (ca_consent).
function consentPage(res, q, appName, defaultUser) {
  const hidden = [...q.entries()].filter(([k]) => k !== 'login_hint' && k !== 'ca_consent')
    .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('');
  const scopes = (q.get('scope') || '').split(/\s+/).filter(Boolean)
    .map((sc) => `<li>${esc(SCOPE_TEXT[sc] || sc)}</li>`).join('');
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - Google Accounts (fake)</title></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 2rem auto; padding: 0 1rem">
<h1>Sign in with Google</h1>
<p>This is the local fake of Google. Choose the account to continue to <strong>${esc(appName)}</strong>.</p>
<form method="get" action="/o/oauth2/v2/auth">${hidden}
<p><label for="email">Email</label><br>
<input id="email" name="login_hint" type="email" required autocomplete="email" value="${esc(defaultUser)}" style="width: 100%"></p>
<p>${esc(appName)} wants to access your Google Account:</p>
<ul>${scopes}</ul>
<p><button type="submit" name="ca_consent" value="allow">Allow</button>
<button type="submit" name="ca_consent" value="deny" formnovalidate>Cancel</button></p>
</form></body></html>`);
}

function createGoogleFake(options) {
  const opt = {
    'client-id': '', 'client-secret': '', 'redirect-uri': '', 'expires-in': 3599,
    'default-user': 'test.user@example.com', 'data-dir': '', ...(options || {}),
  };
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = rand(8);
  let st;
  // Drive push notifications: changes.watch, channels.stop, the messages.
  const push = createPush(new Proxy({}, { get: (_, k) => st.drive[k] }), (req) => driveAuth(req));

  function freshState() {
    st = {
      users: new Map(), // email -> user
      clients: new Map(), // client_id -> {secret, redirect_uris|null}
      codes: new Map(), accessTokens: new Map(), refreshTokens: new Map(),
      grants: new Set(), // `${sub}|${client}`: consent already given (no new refresh token without prompt=consent)
      denyNext: 0,
    };
    if (opt['client-id']) {
      st.clients.set(opt['client-id'], {
        secret: opt['client-secret'], redirect_uris: opt['redirect-uri'] ? opt['redirect-uri'].split(',') : null,
      });
    }
    st.drive = new DriveStore({
      bySub: (sub) => [...st.users.values()].find((u) => u.sub === sub),
      byEmail: (email) => st.users.get(String(email).toLowerCase()),
    });
    st.drive.onChange = (sub) => push.onChange(sub); // push notifications (lib/google-push.js)
    if (opt['data-dir']) {
      const { DiskBacking } = require('./lib/google-disk');
      st.drive.disk = new DiskBacking(opt['data-dir'], st.drive, { ensureUser });
      st.drive.disk.scan();
    }
  }

  // A user's sub is derived from the email, so it is stable across restarts.
  function ensureUser(email, extra) {
    email = String(email).trim().toLowerCase();
    let u = st.users.get(email);
    if (!u) {
      const digits = BigInt(`0x${crypto.createHash('sha256').update(email).digest('hex').slice(0, 16)}`).toString().padStart(20, '0').slice(0, 20);
      const local = email.split('@')[0];
      const words = local.split(/[._+-]+/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1));
      u = {
        email, sub: `1${digits}`, name: words.join(' ') || local, given_name: words[0] || local,
        family_name: words.slice(1).join(' ') || undefined, email_verified: true,
        picture: `https://lh3.googleusercontent.com/a/fake-${digits.slice(0, 12)}=s96-c`,
      };
      st.users.set(email, u);
    }
    if (extra) Object.assign(u, extra);
    st.drive.ensureRoot(u, st.drive.disk ? st.drive.disk.idFor(email) : undefined);
    if (st.drive.disk) st.drive.disk.ensureUserDir(u);
    return u;
  }

  function issueTokens(user, clientId, scope, withRefresh, fromRefresh) {
    const access = `ya29.fake-${rand(24)}`;
    const expiresIn = Number(opt['expires-in']);
    let refresh = fromRefresh;
    if (withRefresh) {
      refresh = `1//fake-${rand(24)}`;
      st.refreshTokens.set(refresh, { sub: user.sub, clientId, scope, revoked: false });
    }
    st.accessTokens.set(access, { sub: user.sub, clientId, scope, expiresAt: Date.now() + expiresIn * 1000, refresh, revoked: false });
    const out = { access_token: access, expires_in: expiresIn, scope, token_type: 'Bearer' };
    if (withRefresh) out.refresh_token = refresh;
    if (scope.split(' ').includes('openid')) out.id_token = idToken(user, clientId, scope);
    return out;
  }

  function idToken(user, aud, scope) {
    const now = Math.floor(Date.now() / 1000);
    const sc = scope.split(' ');
    const claims = { iss: 'https://accounts.google.com', azp: aud, aud, sub: user.sub, iat: now, exp: now + 3600 };
    if (sc.some((s) => s === 'email' || s.endsWith('userinfo.email'))) Object.assign(claims, { email: user.email, email_verified: user.email_verified !== false });
    if (sc.some((s) => s === 'profile' || s.endsWith('userinfo.profile'))) {
      Object.assign(claims, { name: user.name, picture: user.picture, given_name: user.given_name, family_name: user.family_name });
    }
    const signing = `${b64url({ alg: 'RS256', kid, typ: 'JWT' })}.${b64url(claims)}`;
    return `${signing}.${crypto.sign('sha256', Buffer.from(signing), privateKey).toString('base64url')}`;
  }

  // Bearer token -> user; Drive-shaped 401/403 errors.
  function driveAuth(req, o) {
    const h = req.headers.authorization || '';
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    const authErr = (msg) => driveError(401, m ? 'authError' : 'required', msg, { location: 'Authorization', locationType: 'header' });
    if (!m) throw authErr('Login Required.');
    const t = st.accessTokens.get(m[1]);
    if (!t || t.revoked || t.expiresAt <= Date.now()) {
      const e = authErr('Invalid Credentials');
      e.headers = { 'WWW-Authenticate': 'Bearer realm="https://accounts.google.com/", error="invalid_token"' };
      throw e;
    }
    const scopes = t.scope.split(' ');
    const drive = scopes.filter((s) => DRIVE_SCOPE.test(s));
    if (!drive.length || (o && o.write && drive.every((s) => /readonly/.test(s)))) {
      throw driveError(403, 'insufficientPermissions', 'Request had insufficient authentication scopes.');
    }
    const user = [...st.users.values()].find((u) => u.sub === t.sub);
    if (st.drive.disk) st.drive.disk.scan();
    // The caller is the user as seen through this app's grant (lib/google-drive.js
    // "Scopes"): what the token's scopes let this OAuth client see and change.
    return Object.create(user, { grant: { value: grantOf(scopes, t.clientId) } });
  }

  // drive: every file; drive.readonly / drive.metadata(.readonly): see every file;
  // drive.file: see and change only the files this client created.
  function grantOf(scopes, clientId) {
    const has = (s) => scopes.includes(`https://www.googleapis.com/auth/${s}`);
    const full = has('drive');
    return {
      clientId, full, readAll: full || has('drive.readonly') || has('drive.metadata') || has('drive.metadata.readonly'),
      perFile: has('drive.file'),
    };
  }

  function clientAuth(req, form) {
    let id = form.get('client_id'); let secret = form.get('client_secret');
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization || '');
    if (basic) {
      const [u, ...p] = Buffer.from(basic[1], 'base64').toString().split(':');
      id = decodeURIComponent(u); secret = decodeURIComponent(p.join(':'));
    }
    if (!id) throw oauthError(400, 'invalid_request', 'Could not determine client ID from request.');
    if (st.clients.size) {
      const c = st.clients.get(id);
      if (!c) throw oauthError(401, 'invalid_client', 'The OAuth client was not found.');
      if (c.secret !== secret) throw oauthError(401, 'invalid_client', 'Unauthorized');
    }
    return id;
  }

  const router = makeRouter();

  router.add('GET', '/.well-known/openid-configuration', async (req, res) => {
    const base = `http://${req.headers.host}`;
    sendJson(res, 200, {
      issuer: 'https://accounts.google.com', authorization_endpoint: `${base}/o/oauth2/v2/auth`,
      token_endpoint: `${base}/token`, userinfo_endpoint: `${base}/v1/userinfo`,
      revocation_endpoint: `${base}/revoke`, jwks_uri: `${base}/oauth2/v3/certs`,
      response_types_supported: ['code'], subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'], code_challenge_methods_supported: ['plain', 'S256'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
    });
  });

  router.add('GET', '/oauth2/v3/certs', async (req, res) => {
    sendJson(res, 200, { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] });
  });

  // Consent happens at once. Bad client_id / redirect_uri: an error page (Google does
  // not redirect to an unverified URI); user-level outcomes go back to redirect_uri.
  const authorize = async (req, res, ctx) => {
    const q = ctx.query;
    const page = (status, error, desc) => {
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<html><body><h1>Error ${status}: ${error}</h1><p>${desc}</p></body></html>`);
    };
    const clientId = q.get('client_id'); const redirectUri = q.get('redirect_uri');
    if (!clientId) return page(400, 'invalid_request', 'Missing required parameter: client_id');
    const client = st.clients.get(clientId);
    if (st.clients.size && !client) return page(401, 'invalid_client', 'The OAuth client was not found.');
    if (!redirectUri) return page(400, 'invalid_request', 'Missing required parameter: redirect_uri');
    if (client && client.redirect_uris && !client.redirect_uris.includes(redirectUri)) {
      return page(400, 'redirect_uri_mismatch', `redirect_uri ${redirectUri} is not registered for this client.`);
    }
    if (q.get('response_type') !== 'code') return page(400, 'unsupported_response_type', 'Only response_type=code is supported.');
    if (!q.get('scope')) return page(400, 'invalid_request', 'Missing required parameter: scope');
    const method = q.get('code_challenge_method') || (q.get('code_challenge') ? 'plain' : null);
    if (method && !['plain', 'S256'].includes(method)) return page(400, 'invalid_request', 'Invalid code_challenge_method.');
    const back = new URL(redirectUri);
    if (q.get('state') !== null) back.searchParams.set('state', q.get('state'));
    // A browser with no login_hint gets the consent page (Google's account
    // chooser and consent screen in one): the account's e-mail, what the app
    // asks for, Allow / Cancel. Programs (no text/html in Accept) and a
    // login_hint go straight on, as before.
    const decision = q.get('ca_consent');
    if (!decision && !q.get('login_hint') && /text\/html/.test(req.headers.accept || '')) {
      return consentPage(res, q, (client && client.name) || clientId, opt['default-user']);
    }
    if (decision === 'deny') {
      back.searchParams.set('error', 'access_denied');
      res.writeHead(302, { Location: back.toString() }); res.end(); return;
    }
    const hint = q.get('login_hint') || opt['default-user'];
    if (st.denyNext > 0 || /^deny[@+]/i.test(hint)) {
      if (st.denyNext > 0) st.denyNext--;
      back.searchParams.set('error', 'access_denied');
      res.writeHead(302, { Location: back.toString() }); res.end(); return;
    }
    const user = /^\d+$/.test(hint) ? ([...st.users.values()].find((u) => u.sub === hint) || ensureUser(opt['default-user'])) : ensureUser(hint);
    const grantKey = `${user.sub}|${clientId}`;
    const consentShown = !st.grants.has(grantKey) || /\bconsent\b/.test(q.get('prompt') || '');
    st.grants.add(grantKey);
    const code = `4/0fake-${rand(30)}`;
    st.codes.set(code, {
      sub: user.sub, clientId, redirectUri, scope: q.get('scope'), challenge: q.get('code_challenge'), method,
      offline: q.get('access_type') === 'offline' && consentShown, expiresAt: Date.now() + 600000, used: false,
    });
    back.searchParams.set('code', code);
    back.searchParams.set('scope', q.get('scope'));
    back.searchParams.set('authuser', '0');
    back.searchParams.set('prompt', consentShown ? 'consent' : 'none');
    res.writeHead(302, { Location: back.toString() }); res.end();
  };
  router.add('GET', '/o/oauth2/v2/auth', authorize);
  router.add('GET', '/o/oauth2/auth', authorize);

  const token = async (req, res) => {
    const form = await readForm(req, 1 << 20);
    const grant = form.get('grant_type');
    const clientId = clientAuth(req, form);
    if (grant === 'authorization_code') {
      const c = st.codes.get(form.get('code') || '');
      if (!c) throw oauthError(400, 'invalid_grant', 'Malformed auth code.');
      if (c.used || c.expiresAt <= Date.now()) throw oauthError(400, 'invalid_grant', 'Bad Request');
      if (c.clientId !== clientId) throw oauthError(400, 'invalid_grant', 'Bad Request');
      if (form.get('redirect_uri') !== c.redirectUri) throw oauthError(400, 'redirect_uri_mismatch', 'Bad Request');
      if (c.challenge) {
        const v = form.get('code_verifier');
        if (!v) throw oauthError(400, 'invalid_grant', 'Missing code verifier.');
        const got = c.method === 'S256' ? crypto.createHash('sha256').update(v).digest('base64url') : v;
        if (got !== c.challenge) throw oauthError(400, 'invalid_grant', 'Invalid code verifier.');
      }
      c.used = true; // one-time, even if a later check fails the client must start over
      const user = [...st.users.values()].find((u) => u.sub === c.sub);
      return sendJson(res, 200, issueTokens(user, clientId, c.scope, c.offline), { 'Cache-Control': 'no-store' });
    }
    if (grant === 'refresh_token') {
      const r = st.refreshTokens.get(form.get('refresh_token') || '');
      if (!r || r.revoked || r.clientId !== clientId) throw oauthError(400, 'invalid_grant', 'Token has been expired or revoked.');
      const user = [...st.users.values()].find((u) => u.sub === r.sub);
      let scope = r.scope;
      if (form.get('scope')) {
        const want = form.get('scope').split(' ');
        if (want.some((s) => !r.scope.split(' ').includes(s))) throw oauthError(400, 'invalid_scope', 'Some requested scopes were invalid.');
        scope = want.join(' ');
      }
      return sendJson(res, 200, issueTokens(user, clientId, scope, false, form.get('refresh_token')), { 'Cache-Control': 'no-store' });
    }
    if (!grant) throw oauthError(400, 'invalid_request', 'Missing required parameter: grant_type');
    throw oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${grant}`);
  };
  router.add('POST', '/token', token);
  router.add('POST', '/oauth2/v4/token', token);

  // Revoking an access token also revokes its refresh token, as Google does.
  function revokeToken(t) {
    const r = st.refreshTokens.get(t);
    const a = st.accessTokens.get(t);
    if (!r && !a) return false;
    const rt = r ? t : a.refresh;
    if (rt && st.refreshTokens.has(rt)) st.refreshTokens.get(rt).revoked = true;
    if (a) a.revoked = true;
    for (const x of st.accessTokens.values()) if (rt && x.refresh === rt) x.revoked = true;
    return true;
  }
  router.add('POST', '/revoke', async (req, res, ctx) => {
    const form = await readForm(req, 1 << 20);
    const t = ctx.query.get('token') || form.get('token');
    // A token that is unknown, expired or already revoked is refused with 400
    // invalid_token, as Google does (the grant is gone either way).
    const r = t && st.refreshTokens.get(t);
    const a = t && st.accessTokens.get(t);
    const live = r ? !r.revoked : (a && !a.revoked && a.expiresAt > Date.now());
    if (!live || !revokeToken(t)) throw oauthError(400, 'invalid_token', 'Token expired or revoked');
    sendJson(res, 200, {});
  });

  const userinfo = async (req, res) => {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || '');
    const t = m && st.accessTokens.get(m[1]);
    if (!t || t.revoked || t.expiresAt <= Date.now()) {
      throw new HttpError(401, { error: 'invalid_request', error_description: 'Invalid Credentials' },
        { 'WWW-Authenticate': 'Bearer realm="https://accounts.google.com/", error="invalid_token"' });
    }
    const u = [...st.users.values()].find((x) => x.sub === t.sub);
    const sc = t.scope.split(' ');
    const out = { sub: u.sub };
    if (sc.some((s) => s === 'profile' || s.endsWith('userinfo.profile'))) {
      Object.assign(out, { name: u.name, given_name: u.given_name, family_name: u.family_name, picture: u.picture });
    }
    if (sc.some((s) => s === 'email' || s.endsWith('userinfo.email'))) Object.assign(out, { email: u.email, email_verified: u.email_verified !== false });
    if (u.hd) out.hd = u.hd;
    sendJson(res, 200, out);
  };
  router.add('GET', '/v1/userinfo', userinfo);
  router.add('GET', '/oauth2/v3/userinfo', userinfo);

  // The Drive state is replaced on /__admin/reset, so routes see it through a proxy.
  const driveProxy = new Proxy({}, {
    get: (_, k) => { const v = st.drive[k]; return typeof v === 'function' ? v.bind(st.drive) : v; },
  });
  addDriveRoutes(router, driveProxy, driveAuth);
  push.addRoutes(router);

  // ---- admin -------------------------------------------------------------
  const admin = {
    ...push.admin,
    'POST /users': async (req, res) => {
      const b = (await readJson(req)) || {};
      if (!b.email) throw new HttpError(400, { error: 'email required' });
      const extra = {};
      if (b.name) extra.name = b.name;
      if (b.email_verified !== undefined) extra.email_verified = b.email_verified !== false;
      const u = ensureUser(b.email, Object.keys(extra).length ? extra : undefined);
      const clientId = b.client_id || opt['client-id'] || 'fake-admin-client';
      st.grants.add(`${u.sub}|${clientId}`);
      const t = issueTokens(u, clientId, b.scope || ALL_SCOPES, true);
      sendJson(res, 200, { sub: u.sub, email: u.email, name: u.name, picture: u.picture, root_id: u.rootId, ...t });
    },
    'POST /clients': async (req, res) => {
      const b = (await readJson(req)) || {};
      if (!b.client_id) throw new HttpError(400, { error: 'client_id required' });
      st.clients.set(b.client_id, { secret: b.client_secret || '', redirect_uris: b.redirect_uris || null });
      sendJson(res, 200, { ok: true });
    },
    'POST /files': async (req, res) => {
      const b = (await readJson(req)) || {};
      const u = st.users.get(String(b.email || '').toLowerCase());
      if (!u) throw new HttpError(400, { error: 'unknown user; POST /__admin/users first' });
      const meta = { ...b };
      for (const k of ['email', 'content_base64', 'content', 'trashed']) delete meta[k];
      if (b.folder) { meta.mimeType = FOLDER; delete meta.folder; }
      const content = b.content_base64 !== undefined ? Buffer.from(b.content_base64, 'base64')
        : b.content !== undefined ? Buffer.from(String(b.content)) : null;
      const f = st.drive.createFile(u, meta, content);
      if (b.trashed) st.drive.updateFile(u, f, { trashed: true });
      if (b.modifiedTime) f.modifiedTime = normTime(b.modifiedTime, 'modifiedTime');
      sendJson(res, 200, st.drive.resource(f, u));
    },
    'POST /deny': async (req, res) => {
      const b = (await readJson(req)) || {};
      st.denyNext = b.count === undefined ? 1 : Number(b.count);
      sendJson(res, 200, { ok: true });
    },
    'POST /revoke': async (req, res) => {
      const b = (await readJson(req)) || {};
      let n = 0;
      if (b.refresh_token || b.access_token) n += revokeToken(b.refresh_token || b.access_token) ? 1 : 0;
      if (b.email) {
        const u = st.users.get(String(b.email).toLowerCase());
        for (const [t, r] of st.refreshTokens) if (u && r.sub === u.sub && !r.revoked) { revokeToken(t); n++; }
        for (const a of st.accessTokens.values()) if (u && a.sub === u.sub) a.revoked = true;
      }
      sendJson(res, 200, { revoked: n });
    },
    'POST /expire': async (req, res) => {
      const b = (await readJson(req)) || {};
      let n = 0;
      const u = b.email && st.users.get(String(b.email).toLowerCase());
      for (const [t, a] of st.accessTokens) {
        if (t === b.access_token || (u && a.sub === u.sub)) { a.expiresAt = Date.now() - 1; n++; }
      }
      sendJson(res, 200, { expired: n });
    },
    ...uploadAdmin(() => st.drive, readJson, sendJson), // resumable sessions: list, expire, drop
    'GET /state': async (req, res) => {
      sendJson(res, 200, {
        users: [...st.users.values()],
        files: [...st.drive.files.values()].map((f) => ({ ...f, content: undefined, size: f.content ? f.content.length : undefined })),
        changeSeq: st.drive.changeSeq,
      });
    },
  };

  freshState();
  const fake = createFake({
    name: 'google',
    errorBody: (status, reason, message, ctx) => {
      if (ctx && /^\/(token|revoke|o\/oauth2|oauth2\/v4)/.test(ctx.path)) {
        return { error: reason || (status >= 500 ? 'server_error' : 'invalid_request'), error_description: message || 'Error' };
      }
      const defaults = {
        400: ['badRequest', 'Bad Request'], 401: ['authError', 'Invalid Credentials'],
        403: ['userRateLimitExceeded', 'User Rate Limit Exceeded'], 404: ['notFound', 'Not Found'],
        429: ['rateLimitExceeded', 'Rate Limit Exceeded'], 500: ['backendError', 'Backend Error'],
        502: ['backendError', 'Bad Gateway'], 503: ['backendError', 'Service Unavailable'], 504: ['backendError', 'Gateway Timeout'],
      };
      const d = defaults[status] || ['error', 'Error'];
      return driveError(status, reason || d[0], message || d[1]).body;
    },
    handle: async (req, res, ctx) => {
      if (!(await router.dispatch(req, res, ctx))) {
        throw driveError(404, 'notFound', `Not Found: ${req.method} ${ctx.path}`);
      }
    },
    admin,
    onReset: () => { if (st.drive.disk) st.drive.disk.stop(); push.reset(); freshState(); },
  });
  fake.state = () => st;
  fake.ensureUser = ensureUser;
  const close = fake.close;
  fake.close = () => { if (st.drive.disk) st.drive.disk.stop(); return close(); };
  return fake;
}

module.exports = { createGoogleFake };

if (require.main === module) {
  let args;
  try {
    args = parseArgs(process.argv.slice(2), {
      port: 0, host: '127.0.0.1', verbose: false, 'client-id': '', 'client-secret': '', 'redirect-uri': '',
      'expires-in': 3599, 'default-user': 'test.user@example.com', 'data-dir': '',
    });
  } catch (e) {
    process.stderr.write(`google fake: ${e.message}\n`);
    process.exit(2);
  }
  runMain(createGoogleFake(args), args);
}
