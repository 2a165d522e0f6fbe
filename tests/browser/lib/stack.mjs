// The real stack for a browser test file, started once per file through
// deploy/local/run.sh (the script behind `make run`): PostgreSQL, Redis, the
// fakes of Google (Drive backed by a folder), Stripe and SMTP, and the four
// daemons, on free ports in a fresh temporary folder. And a headless Debian
// chromium driven by playwright-core, with a fresh profile.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';

const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const ROOT = process.env.CA_ROOT || path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

// startStack(): resolves to {url, var, gw, stripe, smtpAdmin, google, log(), stop()}
// once every daemon answers /readyz. url is PUBLIC_URL (http://localhost:PORT).
export async function startStack(extraEnv = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-browser-'));
  fs.chmodSync(dir, 0o755);
  const ports = {};
  for (const v of ['PG', 'REDIS', 'GATEWAY', 'BILLING', 'POLLER', 'WORKER', 'GOOGLE', 'STRIPE', 'SMTP', 'SMTP_ADMIN']) {
    ports[v] = await freePort();
  }
  const env = { ...process.env, CA_VAR: dir, CA_RUN_NO_DEMO: '1', POLL_INTERVAL_SECONDS: '1', RETENTION_AT: 'off', ...extraEnv };
  delete env.DATABASE_URL; delete env.REDIS_URL; delete env.PORT;
  for (const [k, v] of Object.entries(ports)) env[`CA_${k}_PORT`] = String(v);
  const logFile = path.join(dir, 'run.log');
  const out = fs.openSync(logFile, 'a');
  // Its own process group: a signal to ours (tests/run's timeout signals its
  // whole group) must not interrupt run.sh's orderly stop; this process
  // passes SIGTERM on to it instead.
  const child = spawn(path.join(ROOT, 'deploy/local/run.sh'), [], { env, stdio: ['ignore', out, out], detached: true });
  fs.closeSync(out);
  let exited = null;
  const done = new Promise((resolve) => child.on('exit', (code, sig) => { exited = code ?? sig; resolve(); }));
  // However this process ends (tests/run's timeout sends SIGTERM), run.sh is
  // told to stop, and it stops everything it started.
  let told = false; // run.sh gets one SIGTERM: it then stops everything in order
  const kill = () => { if (exited === null && !told) { told = true; child.kill('SIGTERM'); } };
  process.once('exit', kill);
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT']) {
    // on, not once: under node --test the signal comes twice (to the process
    // group, and from the runner), and a second one must not kill us mid-stop
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      kill();
      done.then(() => {
        if (!process.env.CA_BROWSER_KEEP) fs.rmSync(dir, { recursive: true, force: true });
        process.exit(1);
      });
    });
  }
  const log = () => strip(fs.readFileSync(logFile, 'utf8'));
  const deadline = Date.now() + 120000;
  while (!/\[run\] dashboard: /.test(log())) {
    if (exited !== null || Date.now() > deadline) {
      const text = log();
      kill();
      await done;
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`the stack did not come up (exit ${exited}):\n${text.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url: `http://localhost:${ports.GATEWAY}`,
    var: dir,
    google: `http://127.0.0.1:${ports.GOOGLE}`,
    stripe: `http://127.0.0.1:${ports.STRIPE}`,
    smtpAdmin: `http://127.0.0.1:${ports.SMTP_ADMIN}`,
    // the database as its owner (tests arrange rows the UI cannot make quickly)
    psql(sql) {
      return execFileSync('psql', ['-qtA', `postgresql://postgres@127.0.0.1:${ports.PG}/creator_automation`, '-c', sql], { encoding: 'utf8' }).trim();
    },
    drive: (email) => path.join(dir, 'drive', email),
    log,
    async stop() {
      kill();
      await done;
      if (process.env.CA_BROWSER_KEEP) { console.log(`# kept ${dir}`); return; }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// launch(origin): a headless chromium with a fresh profile. Collects the
// console errors and page errors of the pages of origin (the dashboard's; not
// those of the fakes' pages) in .errors: each test file asserts none.
export async function launch(origin, viewport = { width: 1280, height: 900 }) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  const watch = (page) => {
    page.on('console', (m) => {
      if (m.type() !== 'error' || !page.url().startsWith(origin)) return;
      // The one expected failed load: the signed-out probe of GET /api/me
      // (401 is how the API says "no session"; the page then shows the landing).
      const at = m.location() ? m.location().url : '';
      if (/status of 401/.test(m.text()) && /\/api\/me$/.test(at)) return;
      // A system preset's preview still rendering: 503 preview_pending, and the
      // landing page asks again (docs/api-gateway.md, previews).
      // A cancelled sign-in: the gateway's "Sign-in cancelled" page is a 400.
      if (/status of 400/.test(m.text()) && /\/auth\/google\/callback\?.*error=access_denied/.test(at)) return;
      if (/status of 503/.test(m.text()) && /\/api\/presets\/[0-9a-f-]+\/preview\/(before|after)\.jpg(\?try=\d+)?$/.test(at)) return;
      errors.push(`console: ${m.text()} (${at})`);
    });
    page.on('pageerror', (e) => { if (page.url().startsWith(origin)) errors.push(`pageerror: ${e.message}`); });
  };
  context.on('page', watch);
  context.pages().forEach(watch);
  const page = context.pages()[0] || await context.newPage();
  return {
    context, page, errors,
    async close() { await context.close(); fs.rmSync(profile, { recursive: true, force: true }); },
  };
}

// Polls fn until it returns a truthy value (or throws after ms).
// One stack and one browser for a test file: the stack (with extra env) is
// started before the file's first test, prepare(stack) runs (Drive folders,
// seeded rows), then the browser; all stop after the last test, and the
// stack's log is printed when a test failed. started({stack, browser, page})
// hands them to the file (called once the stack is up, again with the browser).
export function perFile({ env = {}, prepare, started }) {
  let stack;
  let browser;
  before(async () => {
    stack = await startStack(env);
    started({ stack });
    if (prepare) await prepare(stack);
    browser = await launch(stack.url);
    started({ stack, browser, page: browser.page });
  });
  after(async () => {
    if (browser) await browser.close();
    if (stack) {
      if (process.exitCode) console.log(stack.log().slice(-3000));
      await stack.stop();
    }
  });
}

export async function until(fn, ms = 15000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// axe(page): axe-core's WCAG 2 A/AA rules on the page as it is; returns the
// serious and critical violations as short strings (rule: target). axe is
// evaluated through the DevTools protocol, which the page's CSP does not
// govern, so the page under test keeps its policy.
export async function axe(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  const res = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  return res.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}
