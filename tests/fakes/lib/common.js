'use strict';
/*
 * Shared machinery for the local fakes of external services (Google, Stripe,
 * ComfyUI, SMTP's HTTP side). node:http only, no framework.
 *
 * EXPORTED API
 *
 *   createFake({ name, handle, admin, onReset, errorBody, bodyLimit, quiet })
 *       Builds an http.Server wrapped with: request recording, fault injection,
 *       the shared /__admin routes, and error handling. Returns
 *       { server, listen(port, host) -> Promise<port>, close() -> Promise,
 *         port, requests, faults }.
 *     name       'google', 'stripe', ...: used in log lines.
 *     handle     async (req, res, ctx) for every non-admin request. ctx is
 *                { url (URL), path, query (URLSearchParams), seq, note(obj) }.
 *                Throw an HttpError to answer with an error; any other
 *                exception becomes a 500 built by errorBody.
 *     admin      { 'POST /users': async (req, res, ctx) => ..., ... }: extra
 *                routes under /__admin (key is "METHOD /subpath", exact match;
 *                a trailing '*' matches a prefix). Not recorded, never faulted.
 *     onReset    () => void: called by POST /__admin/reset (after the shared
 *                state, request log and faults, is cleared).
 *     errorBody  (status, reason, message, ctx) -> object: the service's own error
 *                JSON shape (ctx.path lets one fake use two shapes); used for injected 'status' faults and HttpError
 *                without an explicit body. Default {error:{code,message,reason}}.
 *
 *   Shared admin routes (every fake gets these):
 *     GET    /__admin/requests?since=N  -> {requests:[{seq,time,method,path,
 *            query,status,duration_ms,fault?,note?}], next}
 *            (seq starts at 1; pass next back as since to get only newer ones)
 *     DELETE /__admin/requests           clear the log
 *     POST   /__admin/faults  body: one fault (see below) -> {id}
 *     GET    /__admin/faults            -> {faults:[...]}
 *     DELETE /__admin/faults            remove all faults
 *     POST   /__admin/reset             clear log + faults, then onReset()
 *     GET    /__admin/health            -> {ok:true,name}
 *
 *   A fault:
 *     { match: { method?: 'GET', path?: '/drive/v3/files' (prefix),
 *                path_regex?: '^/drive/v3/files/[^/]+$' },
 *       count?: N        fire on the next N matching requests, then vanish
 *       fraction?: p     fire on each matching request with probability p
 *                        (deterministic PRNG, seed?: integer, default 1)
 *       (neither: fires on every match until DELETE /__admin/faults)
 *       action: 'status' | 'delay' | 'drop' | 'slow_body',
 *       status?: 503, reason?: 'backendError', message?: '...',
 *       body?: {...}     overrides errorBody(status, reason, message)
 *       headers?: {...}, retry_after?: seconds (Retry-After header; 429 and
 *                        503 get 'Retry-After: 1' unless retry_after is given)
 *       delay_ms?: 1000  'delay': wait, then handle normally
 *       when?: 'before'|'after'  'drop': destroy the socket before handling
 *                        (default) or after the handler ran (the change was
 *                        applied but the client never hears back)
 *       chunk_bytes?: 16, interval_ms?: 50  'slow_body': real response,
 *                        trickled out in small chunks }
 *     The first matching fault wins. Faults match non-admin requests only.
 *
 *   HttpError(status, body?, headers?)   throw from handlers; body: object
 *       (sent as JSON), string, or undefined (errorBody(status) is used).
 *   readBody(req, limit=bodyLimit) -> Promise<Buffer>; rejects HttpError 413
 *   readJson(req, limit) -> Promise<object|null>; HttpError 400 on bad JSON
 *   readForm(req, limit) -> Promise<URLSearchParams> (x-www-form-urlencoded)
 *   sendJson(res, status, obj, headers?)
 *   sendText(res, status, text, headers?)
 *   makeRouter() -> { add(method, pattern, fn), dispatch(req, res, ctx) }
 *       pattern '/drive/v3/files/:id' (':name' = one segment) or a RegExp;
 *       fn(req, res, ctx) with ctx.params; dispatch returns false when
 *       nothing matched (handler should then 404).
 *   parseArgs(argv, spec) -> object. spec: { port: 0, 'client-id': '',
 *       verbose: false, ... }; '--key value', '--key=value', booleans as
 *       '--flag'. Unknown options throw.
 *   runMain(fake, args)  listen on args.port/args.host, print
 *       'listening on 127.0.0.1:PORT' on stdout, close on SIGTERM/SIGINT.
 *   log(name, ...msg)   stderr, only when FAKE_VERBOSE=1 or --verbose.
 *   mulberry32(seed) -> () => float in [0,1)
 */
const http = require('node:http');

let verbose = process.env.FAKE_VERBOSE === '1';
function setVerbose(v) { verbose = !!v; }
function log(name, ...msg) {
  if (verbose) process.stderr.write(`[fake-${name}] ${msg.join(' ')}\n`);
}

class HttpError extends Error {
  constructor(status, body, headers) {
    super(typeof body === 'string' ? body : `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers || {};
  }
}

function sendJson(res, status, obj, headers) {
  const data = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=UTF-8',
    'Content-Length': data.length,
    ...(headers || {}),
  });
  res.end(data);
}

function sendText(res, status, text, headers) {
  const data = Buffer.from(String(text));
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=UTF-8',
    'Content-Length': data.length,
    ...(headers || {}),
  });
  res.end(data);
}

const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;

function readBody(req, limit) {
  const cap = limit || req._fakeBodyLimit || DEFAULT_BODY_LIMIT;
  if (req._fakeBody) return Promise.resolve(req._fakeBody);
  return new Promise((resolve, reject) => {
    const chunks = [];
    let total = 0;
    let failed = false;
    req.on('data', (c) => {
      if (failed) return;
      total += c.length;
      if (total > cap) {
        failed = true;
        reject(new HttpError(413, `request body larger than ${cap} bytes`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (failed) return;
      req._fakeBody = Buffer.concat(chunks);
      resolve(req._fakeBody);
    });
    req.on('error', (e) => { if (!failed) { failed = true; reject(e); } });
  });
}

async function readJson(req, limit) {
  const buf = await readBody(req, limit);
  if (buf.length === 0) return null;
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `invalid JSON body: ${e.message}`);
  }
}

async function readForm(req, limit) {
  const buf = await readBody(req, limit);
  return new URLSearchParams(buf.toString('utf8'));
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeRouter() {
  const routes = [];
  function compile(pattern) {
    if (pattern instanceof RegExp) return { re: pattern, names: null };
    const names = [];
    const src = pattern.split('/').map((seg) => {
      if (seg.startsWith(':')) { names.push(seg.slice(1)); return '([^/]+)'; }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }).join('/');
    return { re: new RegExp(`^${src}$`), names };
  }
  return {
    add(method, pattern, fn) { routes.push({ method, ...compile(pattern), fn }); return this; },
    async dispatch(req, res, ctx) {
      for (const r of routes) {
        if (r.method !== '*' && r.method !== req.method) continue;
        const m = r.re.exec(ctx.path);
        if (!m) continue;
        const params = {};
        if (r.names) r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
        else Object.assign(params, m.groups || {}, { match: m });
        ctx.params = params;
        await r.fn(req, res, ctx);
        return true;
      }
      return false;
    },
  };
}

function parseArgs(argv, spec) {
  const out = { ...spec };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument: ${a}`);
    a = a.slice(2);
    let val;
    const eq = a.indexOf('=');
    if (eq >= 0) { val = a.slice(eq + 1); a = a.slice(0, eq); }
    if (!(a in spec)) throw new Error(`unknown option --${a}`);
    if (typeof spec[a] === 'boolean') {
      out[a] = val === undefined ? true : val !== 'false' && val !== '0';
      continue;
    }
    if (val === undefined) {
      if (i + 1 >= argv.length) throw new Error(`--${a} needs a value`);
      val = argv[++i];
    }
    out[a] = typeof spec[a] === 'number' ? Number(val) : val;
  }
  return out;
}

function defaultErrorBody(status, reason, message) {
  return { error: { code: status, message: message || http.STATUS_CODES[status] || 'error', reason: reason || 'error' } };
}

// Buffers whatever the handler writes and trickles it out afterwards.
function installSlowBody(res, chunkBytes, intervalMs) {
  const chunks = [];
  const origWrite = res.write.bind(res);
  const origEnd = res.end.bind(res);
  res.write = (c, enc) => { if (c) chunks.push(Buffer.from(c, enc)); return true; };
  res.end = (c, enc, cb) => {
    if (typeof c === 'function') { cb = c; c = undefined; }
    if (c) chunks.push(Buffer.from(c, typeof enc === 'string' ? enc : undefined));
    const all = Buffer.concat(chunks);
    if (!res.headersSent && !res.hasHeader('content-length')) res.setHeader('Content-Length', all.length);
    res.flushHeaders();
    let off = 0;
    const tick = () => {
      if (res.destroyed) return;
      if (off >= all.length) { origEnd(cb); return; }
      origWrite(all.subarray(off, off + chunkBytes));
      off += chunkBytes;
      setTimeout(tick, intervalMs);
    };
    tick();
    return res;
  };
}

function createFake(opts) {
  const name = opts.name || 'fake';
  const errorBody = opts.errorBody || defaultErrorBody;
  const adminRoutes = opts.admin || {};
  const state = { requests: [], seq: 0, faults: [], faultSeq: 0 };

  function findFault(method, path) {
    for (const f of state.faults) {
      const m = f.match || {};
      if (m.method && m.method.toUpperCase() !== method) continue;
      if (m.path && !path.startsWith(m.path)) continue;
      if (f._re && !f._re.test(path)) continue;
      if (f.fraction !== undefined && !(f._rng() < f.fraction)) continue;
      if (f.count !== undefined) {
        f.count -= 1;
        if (f.count <= 0) state.faults.splice(state.faults.indexOf(f), 1);
      }
      f.fired = (f.fired || 0) + 1;
      return f;
    }
    return null;
  }

  function addFault(f) {
    if (!f || typeof f !== 'object') throw new HttpError(400, 'fault must be an object');
    const actions = ['status', 'delay', 'drop', 'slow_body'];
    if (!actions.includes(f.action)) throw new HttpError(400, `action must be one of ${actions.join(', ')}`);
    if (f.action === 'status' && !Number.isInteger(f.status)) throw new HttpError(400, 'status fault needs an integer status');
    const fault = { ...f, id: ++state.faultSeq, fired: 0 };
    if (f.match && f.match.path_regex) fault._re = new RegExp(f.match.path_regex);
    if (f.fraction !== undefined) fault._rng = mulberry32(f.seed || 1);
    state.faults.push(fault);
    return fault;
  }

  function publicFault(f) { const { _re, _rng, ...rest } = f; return rest; }

  async function handleAdmin(req, res, ctx) {
    const sub = ctx.path.slice('/__admin'.length) || '/';
    const key = `${req.method} ${sub}`;
    if (key === 'GET /requests') {
      const since = Number(ctx.query.get('since') || 0);
      return sendJson(res, 200, { requests: state.requests.filter((r) => r.seq > since), next: state.seq });
    }
    if (key === 'DELETE /requests') { state.requests = []; return sendJson(res, 200, { ok: true }); }
    if (key === 'POST /faults') {
      const f = addFault(await readJson(req));
      return sendJson(res, 200, { id: f.id });
    }
    if (key === 'GET /faults') return sendJson(res, 200, { faults: state.faults.map(publicFault) });
    if (key === 'DELETE /faults') { state.faults = []; return sendJson(res, 200, { ok: true }); }
    if (key === 'GET /health') return sendJson(res, 200, { ok: true, name });
    if (key === 'POST /reset') {
      state.requests = []; state.faults = [];
      if (opts.onReset) await opts.onReset();
      return sendJson(res, 200, { ok: true });
    }
    let fn = adminRoutes[key];
    if (!fn) {
      for (const k of Object.keys(adminRoutes)) {
        if (k.endsWith('*') && key.startsWith(k.slice(0, -1))) { fn = adminRoutes[k]; break; }
      }
    }
    if (!fn) throw new HttpError(404, { error: `no admin route ${key}` });
    ctx.adminPath = sub;
    return fn(req, res, ctx);
  }

  function sendHttpError(res, e, ctx) {
    if (res.headersSent) { res.destroy(); return; }
    let body = e.body;
    if (body === undefined || typeof body === 'string') body = errorBody(e.status, undefined, body, ctx);
    sendJson(res, e.status, body, e.headers);
  }

  const server = http.createServer(async (req, res) => {
    const started = Date.now();
    const url = new URL(req.url, 'http://fake.local');
    const ctx = { url, path: url.pathname, query: url.searchParams, note: null };
    req._fakeBodyLimit = opts.bodyLimit;
    if (ctx.path.startsWith('/__admin')) {
      try { await handleAdmin(req, res, ctx); } catch (e) {
        if (e instanceof HttpError) {
          sendJson(res, e.status, typeof e.body === 'object' ? e.body : { error: e.message });
        } else { sendJson(res, 500, { error: String(e && e.stack || e) }); }
      }
      return;
    }
    const rec = {
      seq: ++state.seq, time: new Date(started).toISOString(), method: req.method,
      path: ctx.path, query: Object.fromEntries(url.searchParams), status: null, duration_ms: null,
    };
    state.requests.push(rec);
    ctx.seq = rec.seq;
    ctx.note = (obj) => { rec.note = { ...(rec.note || {}), ...obj }; };
    res.on('finish', () => { rec.status = res.statusCode; rec.duration_ms = Date.now() - started; });
    res.on('close', () => { if (rec.status === null) { rec.status = 0; rec.duration_ms = Date.now() - started; } });

    const fault = findFault(req.method, ctx.path);
    if (fault) {
      rec.fault = fault.action;
      log(name, `fault ${fault.action} on ${req.method} ${ctx.path}`);
      if (fault.action === 'drop' && fault.when !== 'after') { req.socket.destroy(); return; }
      if (fault.action === 'delay') await new Promise((r) => setTimeout(r, fault.delay_ms || 1000));
      if (fault.action === 'status') {
        req.resume();
        const headers = { ...(fault.headers || {}) };
        if (fault.retry_after !== undefined) headers['Retry-After'] = String(fault.retry_after);
        else if (fault.status === 429 || fault.status === 503) headers['Retry-After'] = '1';
        const body = fault.body !== undefined ? fault.body : errorBody(fault.status, fault.reason, fault.message, ctx);
        return sendJson(res, fault.status, body, headers);
      }
      if (fault.action === 'slow_body') installSlowBody(res, fault.chunk_bytes || 16, fault.interval_ms || 50);
      if (fault.action === 'drop') {
        // when:'after': let the handler do its work, then cut the line instead of answering.
        res.writeHead = () => res; res.write = () => true;
        res.end = () => { req.socket.destroy(); return res; };
      }
    }
    try {
      await opts.handle(req, res, ctx);
    } catch (e) {
      if (e instanceof HttpError) sendHttpError(res, e, ctx);
      else {
        log(name, `handler error: ${e && e.stack}`);
        sendHttpError(res, new HttpError(500, errorBody(500, 'backendError', String(e && e.message), ctx)), ctx);
      }
    }
    log(name, `${req.method} ${req.url} -> ${res.statusCode}`);
  });

  const fake = {
    server,
    port: null,
    get requests() { return state.requests; },
    get faults() { return state.faults; },
    addFault,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port || 0, host || '127.0.0.1', () => {
          fake.port = server.address().port;
          resolve(fake.port);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        if (server.closeAllConnections) server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
  return fake;
}

async function runMain(fake, args) {
  if (args.verbose) setVerbose(true);
  const host = args.host || '127.0.0.1';
  const port = await fake.listen(args.port || 0, host);
  process.stdout.write(`listening on ${host}:${port}\n`);
  const stop = () => { fake.close().then(() => process.exit(0)); setTimeout(() => process.exit(0), 500).unref(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

module.exports = {
  createFake, HttpError, readBody, readJson, readForm, sendJson, sendText,
  makeRouter, parseArgs, runMain, log, setVerbose, mulberry32,
};
