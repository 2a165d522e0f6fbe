#!/usr/bin/env node
'use strict';
/*
 * Posts one signed Stripe webhook event to a URL, the way Stripe would.
 *
 *   node tests/fakes/stripe-send-event.js --url U --secret whsec_...
 *        (--fixture NAME_OR_PATH | --type EVENT_TYPE)
 *        [--timestamp UNIX] [--wrong-secret] [--id evt_...]
 *        [--set path=value ...] [--legacy]
 *
 * The Stripe-Signature header is made by the OFFICIAL npm `stripe` library
 * (stripe.webhooks.generateTestHeaderString), never by our own HMAC code.
 *
 * --type T        loads fixtures/stripe/T.json (T.legacy.json with --legacy)
 * --fixture F     a fixture name (as for --type) or a path to a JSON file
 * --id            event id (default: a fresh evt_... so each send is a new event;
 *                 pass the same --id twice to test duplicate delivery)
 * --set a.b.c=v   sets a field after loading (v is parsed as JSON when it
 *                 parses, else taken as a string); data.object.items.data.0.price.id=x
 * --timestamp     the signature's t= (default now); old values test tolerance
 * --wrong-secret  signs with a different secret than --secret
 *
 * Prints "status N" and then the response body; exits 0 on 2xx, 1 otherwise.
 * Also usable as a module: const { sendEvent, signPayload, loadFixture } = require(...)
 */
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');
const Stripe = require('stripe');

const FIXTURE_DIR = path.join(__dirname, 'fixtures', 'stripe');
const stripeLib = new Stripe('sk_test_signing_only');

function randomId(prefix, n = 24) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.randomBytes(n);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[bytes[i] % alphabet.length];
  return `${prefix}_${s}`;
}

function listFixtures() {
  return fs.readdirSync(FIXTURE_DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

function loadFixture(nameOrPath, legacy) {
  let file = nameOrPath;
  if (!fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    const base = nameOrPath.replace(/\.json$/, '');
    file = path.join(FIXTURE_DIR, `${base}${legacy ? '.legacy' : ''}.json`);
    if (!fs.existsSync(file)) {
      throw new Error(`no fixture ${base}${legacy ? '.legacy' : ''}; have: ${listFixtures().join(', ')}`);
    }
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function parseSetValue(v) {
  try { return JSON.parse(v); } catch (_) { return v; }
}

// setPath(obj, 'data.object.items.data.0.price.id', 'price_x')
function setPath(obj, dotted, value) {
  const parts = dotted.split('.');
  let cur = obj;
  for (let i = 0; i < parts.length - 1; i++) {
    const k = parts[i];
    if (cur[k] === undefined || cur[k] === null || typeof cur[k] !== 'object') {
      cur[k] = /^\d+$/.test(parts[i + 1]) ? [] : {};
    }
    cur = cur[k];
  }
  cur[parts[parts.length - 1]] = value;
  return obj;
}

// Signs exactly `payload` (a string) with the official library.
function signPayload(payload, secret, timestamp) {
  const opts = { payload, secret };
  if (timestamp !== undefined && timestamp !== null) opts.timestamp = Number(timestamp);
  return stripeLib.webhooks.generateTestHeaderString(opts);
}

function buildEvent(opts) {
  let event;
  if (opts.event) event = JSON.parse(JSON.stringify(opts.event));
  else if (opts.fixture) event = loadFixture(opts.fixture, opts.legacy);
  else if (opts.type) event = loadFixture(opts.type, opts.legacy);
  else throw new Error('need event, fixture or type');
  if (!opts.event) {
    event.id = opts.id || randomId('evt', 24);
    event.created = Math.floor(Date.now() / 1000);
  } else if (opts.id) {
    event.id = opts.id;
  }
  for (const [k, v] of Object.entries(opts.set || {})) setPath(event, k, v);
  return event;
}

function post(url, body, headers, timeoutMs) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, {
      method: 'POST',
      headers: { ...headers, 'Content-Length': Buffer.byteLength(body) },
      timeout: timeoutMs || 30000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs || 30000} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/*
 * sendEvent({ url, secret, event | fixture | type, legacy, id, set: {path: value},
 *             timestamp, wrongSecret, timeoutMs })
 *   -> { status, body, headers, payload, signature, event }
 */
async function sendEvent(opts) {
  if (!opts.url) throw new Error('url is required');
  if (!opts.secret) throw new Error('secret is required');
  const event = buildEvent(opts);
  const payload = JSON.stringify(event, null, 2);
  const secret = opts.wrongSecret ? `${opts.secret}_wrong` : opts.secret;
  const signature = signPayload(payload, secret, opts.timestamp);
  const res = await post(opts.url, payload, {
    'Content-Type': 'application/json; charset=utf-8',
    'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
    'Stripe-Signature': signature,
  }, opts.timeoutMs);
  return { ...res, payload, signature, event };
}

function parseCli(argv) {
  const o = { set: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--url': o.url = next(); break;
      case '--secret': o.secret = next(); break;
      case '--fixture': o.fixture = next(); break;
      case '--type': o.type = next(); break;
      case '--timestamp': o.timestamp = Number(next()); break;
      case '--wrong-secret': o.wrongSecret = true; break;
      case '--legacy': o.legacy = true; break;
      case '--id': o.id = next(); break;
      case '--set': {
        const kv = next();
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new Error(`--set wants path=value, got ${kv}`);
        o.set[kv.slice(0, eq)] = parseSetValue(kv.slice(eq + 1));
        break;
      }
      case '--list': o.list = true; break;
      case '-h': case '--help': o.help = true; break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  return o;
}

async function main() {
  let o;
  try { o = parseCli(process.argv.slice(2)); } catch (e) {
    process.stderr.write(`stripe-send-event: ${e.message}\n`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write('usage: stripe-send-event.js --url U --secret S (--fixture F | --type T) [--timestamp N] [--wrong-secret] [--id evt_x] [--set path=value ...] [--legacy] | --list\n');
    return;
  }
  if (o.list) { process.stdout.write(`${listFixtures().join('\n')}\n`); return; }
  if (!o.url || !o.secret || (!o.fixture && !o.type)) {
    process.stderr.write('stripe-send-event: --url, --secret and --fixture or --type are required\n');
    process.exit(2);
  }
  try {
    const r = await sendEvent(o);
    process.stdout.write(`status ${r.status}\n${r.body}${r.body.endsWith('\n') || r.body === '' ? '' : '\n'}`);
    process.exit(r.status >= 200 && r.status < 300 ? 0 : 1);
  } catch (e) {
    process.stderr.write(`stripe-send-event: ${e.message}\n`);
    process.exit(1);
  }
}

module.exports = { sendEvent, signPayload, buildEvent, loadFixture, listFixtures, setPath, randomId, FIXTURE_DIR };

if (require.main === module) main();
