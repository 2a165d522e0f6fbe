'use strict';
/*
 * HTTP routes of Drive v3 (/drive/v3/...) and its upload endpoint
 * (/upload/drive/v3/...) for the Google fake. State lives in google-drive.js.
 * addDriveRoutes(router, store, auth): auth(req, {write}) -> user or throws 401/403.
 */
const crypto = require('node:crypto');
const {
  driveError, invalidParam, FOLDER, KNOWN_FILE_FIELDS, ORDER_KEYS, RESUMABLE_CHUNK,
  compileQuery, QueryError, parseFields, applyFields, FieldsError, readBody, readJson, sendJson, HttpError,
} = require('./google-drive');

const DEFAULT_FILE_FIELDS = parseFields('kind,id,name,mimeType');

// Drive documents uploadType=media and multipart for files of 5 MB or less;
// larger ones must be resumable. The fake refuses them with 413 (the HTTP
// status for a body over a server's limit; the reference gives no exact body).
const ONE_REQUEST_MAX = 5 * 1024 * 1024;
const SESSION_LIFETIME_MS = 7 * 24 * 3600 * 1000; // resumable sessions: about a week
function tooLargeForOneRequest(n, kind) {
  if (n > ONE_REQUEST_MAX) {
    throw driveError(413, 'uploadTooLarge', `Media of ${n} bytes is over the ${ONE_REQUEST_MAX}-byte limit of uploadType=${kind}; use uploadType=resumable.`);
  }
}

// Admin routes for resumable sessions (merged into google.js's admin table).
// Session URIs are capabilities: the list shows their upload_id, nothing else.
function uploadAdmin(store, readJsonBody, send) {
  return {
    'GET /uploads': async (req, res) => {
      const list = [...store().sessions.values()].map((x) => ({
        upload_id: x.id, name: x.meta && x.meta.name, total: x.total, received: x.received,
        done: x.done, expired: x.expired || Date.now() >= x.expiresAt, puts: x.puts,
      }));
      send(res, 200, { uploads: list });
    },
    // {upload_id?}: that session (else every one) answers 404 from now on
    'POST /uploads/expire': async (req, res) => {
      const b = (await readJsonBody(req)) || {};
      let n = 0;
      for (const x of store().sessions.values()) if (!b.upload_id || x.id === b.upload_id) { x.expired = true; n++; }
      send(res, 200, { expired: n });
    },
    // {keep_bytes, count?}: the next count (default 1) chunk PUTs keep their
    // first keep_bytes bytes, then the connection is cut mid-body
    'POST /uploads/drop': async (req, res) => {
      const b = (await readJsonBody(req)) || {};
      if (!Number.isInteger(b.keep_bytes) || b.keep_bytes < 0) throw new HttpError(400, { error: 'keep_bytes required' });
      store().uploadDrops.push({ keep_bytes: b.keep_bytes, count: b.count === undefined ? 1 : Number(b.count) });
      send(res, 200, { ok: true });
    },
  };
}

// Parses `fields`; checks names inside the file resource so typos fail like Drive.
function fieldsTree(ctx, fileKey) {
  const s = ctx.query.get('fields');
  if (!s) return null;
  let tree;
  try { tree = parseFields(s); } catch (e) { throw invalidParam('fields', `Invalid field selection ${s}`); }
  const fileTree = fileKey ? tree[fileKey] : tree;
  const check = (t) => {
    if (!t || t === true) return;
    for (const k of Object.keys(t)) {
      if (k !== '*' && !KNOWN_FILE_FIELDS.has(k)) throw invalidParam('fields', `Invalid field selection ${k}`);
    }
  };
  if (fileKey === 'changes' && fileTree && fileTree !== true) check(fileTree.file);
  else check(fileTree);
  return tree;
}

function fileOut(store, f, user, ctx) {
  const tree = fieldsTree(ctx, null);
  return applyFields(store.resource(f, user), tree || DEFAULT_FILE_FIELDS);
}

function pageSizeOf(ctx) {
  const v = ctx.query.get('pageSize');
  if (v === null) return 100;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1000) {
    throw invalidParam('pageSize', `Invalid value '${v}'. Values must be within the range: [1, 1000]`);
  }
  return n;
}

function comparator(orderBy) {
  const keys = (orderBy || '').split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const [k, dir, ...rest] = s.split(/\s+/);
    if (!ORDER_KEYS.has(k) || rest.length || (dir && dir.toLowerCase() !== 'desc' && dir.toLowerCase() !== 'asc')) {
      throw driveError(400, 'invalid', `Invalid field selection ${s}`, { location: 'orderBy', locationType: 'parameter' });
    }
    return { k, desc: !!dir && dir.toLowerCase() === 'desc' };
  });
  const val = (f, k) => {
    switch (k) {
      case 'folder': return f.mimeType === FOLDER ? 0 : 1; // folders first
      case 'name': case 'name_natural': return f.name.toLowerCase();
      case 'starred': return f.starred ? 0 : 1;
      case 'quotaBytesUsed': return f.content ? f.content.length : 0;
      case 'createdTime': return f.createdTime;
      default: return f.modifiedTime; // modifiedTime, recency, *ByMeTime
    }
  };
  return (a, b) => {
    for (const { k, desc } of keys) {
      const x = val(a, k); const y = val(b, k);
      if (x < y) return desc ? 1 : -1;
      if (x > y) return desc ? -1 : 1;
    }
    // Drive's default order is unspecified; the fake uses createdTime, then id.
    return a.createdTime < b.createdTime ? -1 : a.createdTime > b.createdTime ? 1 : (a.id < b.id ? -1 : 1);
  };
}

// Opaque page tokens: offset plus a hash of the query they belong to.
function makeToken(offset, key) { return Buffer.from(JSON.stringify({ o: offset, k: key })).toString('base64url'); }
function readToken(tok, key) {
  try {
    const t = JSON.parse(Buffer.from(tok, 'base64url').toString());
    if (t.k === key && Number.isInteger(t.o) && t.o >= 0) return t.o;
  } catch (e) { /* fall through */ }
  throw invalidParam('pageToken');
}

function parseMultipart(buf, contentType) {
  const m = /boundary="?([^";]+)"?/i.exec(contentType || '');
  if (!m) throw driveError(400, 'badContent', 'Missing multipart boundary.');
  const delim = Buffer.from(`--${m[1]}`);
  const parts = [];
  let pos = buf.indexOf(delim);
  while (pos >= 0) {
    let start = pos + delim.length;
    if (buf.slice(start, start + 2).toString() === '--') break;
    if (buf[start] === 13) start++;
    if (buf[start] === 10) start++;
    const next = buf.indexOf(delim, start);
    if (next < 0) break;
    let end = next;
    if (buf[end - 1] === 10) end--;
    if (buf[end - 1] === 13) end--;
    const part = buf.slice(start, end);
    let sep = part.indexOf('\r\n\r\n'); let sepLen = 4;
    if (sep < 0) { sep = part.indexOf('\n\n'); sepLen = 2; }
    const headers = {};
    const head = sep < 0 ? '' : part.slice(0, sep).toString();
    for (const line of head.split(/\r?\n/)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    parts.push({ headers, body: sep < 0 ? part : part.slice(sep + sepLen) });
    pos = next;
  }
  if (parts.length !== 2) throw driveError(400, 'badContent', `Expected 2 parts in the multipart body, got ${parts.length}.`);
  let meta;
  try { meta = JSON.parse(parts[0].body.toString('utf8') || '{}'); } catch (e) { throw driveError(400, 'parseError', 'Parse Error'); }
  return { meta, content: parts[1].body, contentType: parts[1].headers['content-type'] };
}

function addDriveRoutes(router, store, auth) {
  const D = '/drive/v3';
  const U = '/upload/drive/v3';

  router.add('GET', `${D}/about`, async (req, res, ctx) => {
    const user = auth(req);
    const about = {
      kind: 'drive#about',
      user: { kind: 'drive#user', displayName: user.name, emailAddress: user.email, me: true, permissionId: user.sub, photoLink: user.picture },
      storageQuota: { limit: '16106127360', usage: '0', usageInDrive: '0', usageInDriveTrash: '0' },
    };
    const t = ctx.query.get('fields');
    if (!t) throw driveError(400, 'required', "The 'fields' parameter is required for this method.", { location: 'fields', locationType: 'parameter' });
    sendJson(res, 200, applyFields(about, parseFields(t)));
  });

  router.add('GET', `${D}/files`, async (req, res, ctx) => {
    const user = auth(req);
    let pred;
    try { pred = compileQuery(ctx.query.get('q')); } catch (e) {
      if (e instanceof QueryError) throw invalidParam('q');
      throw e;
    }
    const tree = fieldsTree(ctx, 'files');
    const pageSize = pageSizeOf(ctx);
    const orderBy = ctx.query.get('orderBy') || '';
    const cmp = comparator(orderBy);
    const key = crypto.createHash('sha1').update(`${user.sub}|${ctx.query.get('q')}|${orderBy}`).digest('hex').slice(0, 12);
    const offset = ctx.query.get('pageToken') ? readToken(ctx.query.get('pageToken'), key) : 0;
    const all = [...store.files.values()]
      .filter((f) => !f.isRoot && (f.ownerSub === user.sub || f.permissions.some((p) => p.type === 'user' && p.emailAddress === user.email)))
      .filter((f) => store.appSees(f, user))
      .filter((f) => pred(store.queryView(f, user)))
      .sort(cmp);
    const page = all.slice(offset, offset + pageSize);
    const out = { kind: 'drive#fileList', incompleteSearch: false, files: page.map((f) => store.resource(f, user)) };
    if (offset + pageSize < all.length) out.nextPageToken = makeToken(offset + pageSize, key);
    if (!tree) {
      out.files = applyFields(out.files, DEFAULT_FILE_FIELDS);
      return sendJson(res, 200, out);
    }
    sendJson(res, 200, applyFields(out, tree));
  });

  router.add('POST', `${D}/files`, async (req, res, ctx) => {
    const user = auth(req, { write: true });
    const meta = (await readJson(req)) || {};
    const f = store.createFile(user, meta, null);
    sendJson(res, 200, fileOut(store, f, user, ctx));
  });

  router.add('DELETE', `${D}/files/trash`, async (req, res) => {
    const user = auth(req, { write: true });
    for (const f of [...store.files.values()]) {
      if (f.ownerSub === user.sub && f.explicitlyTrashed && store.files.has(f.id)) store.deleteFile(f);
    }
    res.writeHead(204); res.end();
  });

  router.add('GET', `${D}/files/:id`, async (req, res, ctx) => {
    const user = auth(req);
    const f = store.getFor(user, ctx.params.id, 'read');
    if (ctx.query.get('alt') !== 'media') return sendJson(res, 200, fileOut(store, f, user, ctx));
    if (f.mimeType === FOLDER || f.mimeType.startsWith('application/vnd.google-apps.')) {
      throw driveError(403, 'fileNotDownloadable', 'Only files with binary content can be downloaded. Use Export with Docs Editors files.',
        { location: 'alt', locationType: 'parameter' });
    }
    const data = store.disk ? store.disk.content(f) : f.content;
    const headers = { 'Content-Type': f.mimeType, 'Accept-Ranges': 'bytes', ETag: `"${f.md5}"` };
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
    if (range && data.length > 0 && (range[1] !== '' || range[2] !== '')) {
      let a; let b;
      if (range[1] === '') { a = Math.max(0, data.length - Number(range[2])); b = data.length - 1; } else {
        a = Number(range[1]); b = range[2] === '' ? data.length - 1 : Math.min(Number(range[2]), data.length - 1);
      }
      if (a >= data.length || a > b) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` }); res.end(); return;
      }
      res.writeHead(206, { ...headers, 'Content-Range': `bytes ${a}-${b}/${data.length}`, 'Content-Length': b - a + 1 });
      res.end(data.subarray(a, b + 1));
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': data.length });
    res.end(data);
  });

  router.add('PATCH', `${D}/files/:id`, async (req, res, ctx) => {
    const user = auth(req, { write: true });
    const f = store.getFor(user, ctx.params.id, 'write');
    const meta = (await readJson(req)) || {};
    const owns = f.ownerSub === user.sub;
    if (!owns && (meta.trashed !== undefined || ctx.query.get('addParents') || ctx.query.get('removeParents'))) {
      throw driveError(403, 'insufficientFilePermissions', 'The user does not have sufficient permissions for this file.');
    }
    store.updateFile(user, f, meta, ctx.query.get('addParents'), ctx.query.get('removeParents'));
    sendJson(res, 200, fileOut(store, f, user, ctx));
  });

  router.add('DELETE', `${D}/files/:id`, async (req, res, ctx) => {
    const user = auth(req, { write: true });
    const f = store.getFor(user, ctx.params.id, 'owner');
    if (f.isRoot) throw driveError(403, 'insufficientFilePermissions', 'The user does not have sufficient permissions for this file.');
    store.deleteFile(f);
    res.writeHead(204); res.end();
  });

  router.add('POST', `${D}/files/:id/permissions`, async (req, res, ctx) => {
    const user = auth(req, { write: true });
    const f = store.getFor(user, ctx.params.id, 'write');
    const b = (await readJson(req)) || {};
    const roles = ['reader', 'commenter', 'writer', 'fileOrganizer', 'organizer', 'owner'];
    if (!['anyone', 'user', 'group', 'domain'].includes(b.type)) throw driveError(400, 'required', 'Permission type field required.', { location: 'permission.type', locationType: 'other' });
    if (!roles.includes(b.role)) throw driveError(400, 'required', 'Permission role field required.', { location: 'permission.role', locationType: 'other' });
    if (b.type === 'user' && !b.emailAddress) throw driveError(400, 'invalidSharingRequest', 'Bad Request. User message: "An email address is required."');
    const p = { kind: 'drive#permission', type: b.type, role: b.role };
    if (b.type === 'anyone') {
      p.allowFileDiscovery = b.allowFileDiscovery === true;
      p.id = p.allowFileDiscovery ? 'anyone' : 'anyoneWithLink';
    } else {
      p.emailAddress = b.emailAddress || b.domain;
      const target = b.emailAddress && store.users.byEmail(b.emailAddress);
      p.id = target ? target.sub : crypto.createHash('sha1').update(p.emailAddress).digest('hex').slice(0, 20);
    }
    f.permissions = f.permissions.filter((x) => x.id !== p.id).concat([p]);
    f.version++;
    store.recordChange(f);
    const t = ctx.query.get('fields');
    sendJson(res, 200, t ? applyFields(p, parseFields(t)) : { kind: p.kind, id: p.id, type: p.type, role: p.role, ...(p.type === 'anyone' ? { allowFileDiscovery: p.allowFileDiscovery } : {}) });
  });

  router.add('GET', `${D}/files/:id/permissions`, async (req, res, ctx) => {
    const user = auth(req);
    const f = store.getFor(user, ctx.params.id, 'read');
    const owner = store.users.bySub(f.ownerSub);
    const perms = [{ kind: 'drive#permission', id: owner.sub, type: 'user', role: 'owner', emailAddress: owner.email }, ...f.permissions];
    sendJson(res, 200, { kind: 'drive#permissionList', permissions: perms });
  });

  router.add('GET', `${D}/changes/startPageToken`, async (req, res) => {
    auth(req);
    sendJson(res, 200, { kind: 'drive#startPageToken', startPageToken: store.startPageToken() });
  });

  router.add('GET', `${D}/changes`, async (req, res, ctx) => {
    const user = auth(req);
    const tokStr = ctx.query.get('pageToken');
    if (tokStr === null) throw driveError(400, 'required', 'Required parameter: pageToken', { location: 'pageToken', locationType: 'parameter' });
    const tok = Number(tokStr);
    if (!/^\d+$/.test(tokStr) || tok < 1 || tok > store.changeSeq + 1) throw invalidParam('pageToken');
    const pageSize = pageSizeOf(ctx);
    const includeRemoved = ctx.query.get('includeRemoved') !== 'false';
    const tree = fieldsTree(ctx, 'changes');
    // Drive collapses: a file shows up once, at its latest change since the token.
    const mine = store.changes.filter((c) => c.id >= tok && c.sub === user.sub);
    const last = new Map();
    for (const c of mine) last.set(c.fileId, c);
    let list = mine.filter((c) => last.get(c.fileId) === c);
    list = list.map((c) => {
      const f = store.files.get(c.fileId);
      return { c, f, removed: c.removed || !f };
    }).filter((x) => includeRemoved || !x.removed)
      .filter((x) => !x.f || store.appSees(x.f, user)); // drive.file: only this app's files
    
    const page = list.slice(0, pageSize);
    const out = { kind: 'drive#changeList' };
    if (list.length > pageSize) out.nextPageToken = String(list[pageSize].c.id);
    else out.newStartPageToken = store.startPageToken();
    out.changes = page.map(({ c, f, removed }) => {
      const ch = { kind: 'drive#change', changeType: 'file', type: 'file', time: c.time, removed, fileId: c.fileId };
      if (!removed) ch.file = tree ? store.resource(f, user) : applyFields(store.resource(f, user), DEFAULT_FILE_FIELDS);
      return ch;
    });
    sendJson(res, 200, tree ? applyFields(out, tree) : out);
  });

  // ---- uploads -----------------------------------------------------------
  async function upload(req, res, ctx, fileId) {
    const uploadType = ctx.query.get('uploadType');
    const uploadId = ctx.query.get('upload_id');
    if (uploadId) return resumableChunk(req, res, ctx, uploadId);
    const user = auth(req, { write: true });
    const existing = fileId ? store.getFor(user, fileId, 'write') : null;
    const finish = (meta, content, contentType) => {
      let f;
      if (existing) {
        f = store.updateFile(user, existing, { ...meta, ...(meta.mimeType ? {} : (contentType && existing.mimeType !== contentType ? { mimeType: contentType } : {})) },
          ctx.query.get('addParents'), ctx.query.get('removeParents'), content);
      } else {
        f = store.createFile(user, meta, content, { contentType: meta.mimeType ? undefined : contentType });
      }
      sendJson(res, 200, fileOut(store, f, user, ctx));
    };
    if (uploadType === 'media' || uploadType === null) {
      const body = await readBody(req);
      tooLargeForOneRequest(body.length, 'media');
      const ct = (req.headers['content-type'] || '').split(';')[0] || undefined;
      return finish({}, body, ct === 'application/octet-stream' ? undefined : ct);
    }
    if (uploadType === 'multipart') {
      const body = await readBody(req);
      const mp = parseMultipart(body, req.headers['content-type']);
      tooLargeForOneRequest(mp.content.length, 'multipart');
      return finish(mp.meta, mp.content, mp.contentType && mp.contentType !== 'application/octet-stream' ? mp.contentType.split(';')[0] : undefined);
    }
    if (uploadType === 'resumable') {
      const meta = (await readJson(req)) || {};
      if (!existing) {
        // validate the parents now, as Drive does when the session starts
        for (const p of meta.parents || []) store.parentFolder(user, p);
      }
      const id = crypto.randomBytes(24).toString('base64url');
      const total = req.headers['x-upload-content-length'];
      store.sessions.set(id, {
        id, sub: user.sub, grant: user.grant, meta, fileId: existing && existing.id, chunks: [], received: 0,
        total: total !== undefined ? Number(total) : null, contentType: req.headers['x-upload-content-type'],
        search: new URLSearchParams(ctx.query), done: null,
        created: Date.now(), expiresAt: Date.now() + SESSION_LIFETIME_MS, expired: false, puts: [],
      });
      const q = new URLSearchParams(ctx.query); q.set('upload_id', id);
      const loc = `http://${req.headers.host}${ctx.path}?${q}`;
      res.writeHead(200, { Location: loc, 'X-GUploader-UploadID': id, 'Content-Length': 0 });
      res.end();
      return undefined;
    }
    throw invalidParam('uploadType', `Invalid value for uploadType: ${uploadType}`);
  }

  // PUT <session URI>: the session id is the credential, no Authorization needed.
  async function resumableChunk(req, res, ctx, id) {
    const s = store.sessions.get(id);
    const cr0 = req.headers['content-range'] || '';
    const m0 = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr0);
    ctx.note({ upload_id: id, content_range: cr0 || null, ...(m0 ? { upload_start: Number(m0[1]) } : {}) });
    if (s && !s.expired && Date.now() >= s.expiresAt) s.expired = true; // a week, as at Drive
    if (!s || s.expired) {
      if (s) s.puts.push({ start: m0 ? Number(m0[1]) : null, query: !m0, status: 404 });
      throw driveError(404, 'notFound', 'Upload session not found or expired.');
    }
    const owner = store.users.bySub(s.sub);
    const user = s.grant ? Object.create(owner, { grant: { value: s.grant } }) : owner;
    const drop = m0 && store.uploadDrops.length > 0 ? store.uploadDrops[0] : null;
    if (drop) { // test hook: keep the first keep_bytes of this chunk, then cut the connection
      if (--drop.count <= 0) store.uploadDrops.shift();
      return dropMidChunk(req, s, Number(m0[1]), drop.keep_bytes);
    }
    const body = await readBody(req);
    const respondDone = () => {
      const f = store.files.get(s.done);
      if (!f) throw driveError(404, 'notFound', `File not found: ${s.done}.`);
      sendJson(res, 200, applyFields(store.resource(f, user), s.search.get('fields') ? parseFields(s.search.get('fields')) : DEFAULT_FILE_FIELDS));
    };
    const incomplete = () => {
      const h = { 'Content-Length': 0 };
      if (s.received > 0) h.Range = `bytes=0-${s.received - 1}`;
      res.writeHead(308, h); res.end();
    };
    const put = { start: m0 ? Number(m0[1]) : null, bytes: body.length, query: !m0 };
    s.puts.push(put);
    res.on('finish', () => { put.status = res.statusCode; put.received_after = s.received; });
    const cr = req.headers['content-range'];
    let start = 0; let total = s.total;
    if (cr) {
      const st = /^bytes \*\/(\d+|\*)$/.exec(cr);
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr);
      if (st) { // status query
        if (s.done) return respondDone();
        if (st[1] !== '0' || s.received !== 0) return incomplete();
        total = 0; // 'bytes */0' with no body finishes an empty upload
      } else if (m) {
        start = Number(m[1]);
        if (Number(m[2]) - start + 1 !== body.length) throw driveError(400, 'badRequest', 'Content-Range does not match the body length.');
        if (m[3] !== '*') total = Number(m[3]);
      } else throw driveError(400, 'badRequest', `Invalid Content-Range: ${cr}`);
    } else total = s.received + body.length;
    if (s.done) return respondDone();
    if (start > s.received) {
      throw driveError(400, 'badRequest', `Invalid request. According to the Content-Range header, the upload offset is ${start} byte(s), which exceeds already uploaded size of ${s.received} byte(s).`);
    }
    const fresh = body.subarray(s.received - start); // tolerate overlap with what we already have
    const isLast = total !== null && s.received + fresh.length >= total;
    if (!isLast && body.length % RESUMABLE_CHUNK !== 0 && body.length < RESUMABLE_CHUNK) {
      throw driveError(400, 'badRequest', `Invalid request. The number of bytes uploaded is required to be equal or greater than 262144, except for the final request (it's recommended to be the exact multiple of 262144). The received request contained ${body.length} bytes, which does not meet this requirement.`);
    }
    s.chunks.push(fresh); s.received += fresh.length;
    if (total !== null) s.total = total;
    if (!isLast) return incomplete();
    const content = Buffer.concat(s.chunks);
    let f;
    const ct = s.contentType && s.contentType !== 'application/octet-stream' ? s.contentType : undefined;
    if (s.fileId) {
      const existing = store.getFor(user, s.fileId, 'write');
      f = store.updateFile(user, existing, s.meta, s.search.get('addParents'), s.search.get('removeParents'), content);
    } else f = store.createFile(user, s.meta, content, { contentType: s.meta.mimeType ? undefined : ct });
    s.done = f.id; s.chunks = [];
    return respondDone();
  }

  // Test hook (POST /__admin/uploads/drop): the chunk's first keep bytes are
  // stored, as if Drive persisted them, then the socket is destroyed mid-body.
  function dropMidChunk(req, s, start, keep) {
    return new Promise((resolve) => {
      const chunks = []; let got = 0; let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        const buf = Buffer.concat(chunks).subarray(0, Math.max(0, keep));
        if (start <= s.received && start + buf.length > s.received) {
          const fresh = buf.subarray(s.received - start);
          s.chunks.push(fresh); s.received += fresh.length;
        }
        s.puts.push({ start, bytes: buf.length, query: false, status: 0, dropped: true, received_after: s.received });
        req.socket.destroy();
        resolve();
      };
      req.on('data', (c) => { if (done) return; chunks.push(c); got += c.length; if (got >= keep) finish(); });
      req.on('end', finish);
      req.on('error', finish);
      req.on('close', finish);
    });
  }

  router.add('POST', `${U}/files`, (req, res, ctx) => upload(req, res, ctx, null));
  router.add('PUT', `${U}/files`, (req, res, ctx) => upload(req, res, ctx, null));
  router.add('PATCH', `${U}/files/:id`, (req, res, ctx) => upload(req, res, ctx, ctx.params.id));
  router.add('PUT', `${U}/files/:id`, (req, res, ctx) => upload(req, res, ctx, ctx.params.id));
}

module.exports = { addDriveRoutes, parseMultipart, uploadAdmin, ONE_REQUEST_MAX };
void HttpError;
