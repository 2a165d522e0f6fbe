// The dashboard in headless chromium against the real stack (one stack and one
// browser for the whole file; the tests run in order, as a newcomer would):
// sign in through the fake Google, onboarding picks a folder and a preset, a
// photo dropped into the fake Drive turns completed in the list without a
// reload, the usage page counts it, the CSP header is there, no console
// errors, and a 390 px viewport has no horizontal scroll.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { perFile, until, axe } from '../lib/stack.mjs';

const EMAIL = 'test.user@example.com'; // the Google fake's default user
let stack;
let browser;
let page;

perFile({
  prepare: () => {
    // The user's Drive, on disk behind the fake: Photos/Inbox and a decoy.
    const drive = stack.drive(EMAIL);
    fs.mkdirSync(path.join(drive, 'Photos', 'Inbox'), { recursive: true });
    fs.mkdirSync(path.join(drive, 'Photos', 'Archive'), { recursive: true });
    fs.mkdirSync(path.join(drive, 'Receipts'), { recursive: true });
  },
  started: (x) => ({ stack, browser, page } = x),
});

const noHorizontalScroll = () => page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);

test('the landing page carries a strict CSP and says what the product does', async () => {
  const res = await page.goto(stack.url + '/');
  assert.equal(res.status(), 200);
  const csp = res.headers()['content-security-policy'];
  assert.ok(csp, 'Content-Security-Policy header');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https:|http:/);
  await page.getByRole('heading', { level: 1 }).waitFor();
  assert.match(await page.textContent('h1'), /edited/);
  const signin = page.getByRole('link', { name: 'Sign in with Google' });
  assert.equal(await signin.getAttribute('href'), '/auth/google/login');
});

test('Cancel on the consent page: not signed in, told why', async () => {
  await page.getByRole('link', { name: 'Sign in with Google' }).click();
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.getByText('You did not allow Creator Automation to use your Google account').waitFor();
  assert.equal((await page.request.get(`${stack.url}/api/me`)).status(), 401);
  await page.goto(stack.url + '/');
  await page.getByRole('link', { name: 'Sign in with Google' }).waitFor();
});

test('sign in goes through the fake Google and lands on onboarding', async () => {
  const visited = [];
  const onReq = (r) => { if (r.isNavigationRequest()) visited.push(r.url()); };
  page.on('request', onReq);
  await page.getByRole('link', { name: 'Sign in with Google' }).click();
  // the fake Google's consent page: the account, what the app asks for, Allow
  await page.getByRole('heading', { name: 'Sign in with Google' }).waitFor();
  assert.equal(await page.getByLabel('Email').inputValue(), EMAIL);
  await page.getByText('See and download all your Google Drive files').waitFor();
  await page.getByRole('button', { name: 'Allow' }).click();
  await until(() => /#\/setup$/.test(page.url()), 15000, 'the onboarding page');
  page.off('request', onReq);
  assert.ok(visited.some((u) => u.startsWith(`${stack.google}/o/oauth2/v2/auth?`)), `through Google's consent: ${visited.join(' ')}`);
  assert.ok(visited.some((u) => u.startsWith(`${stack.url}/auth/google/callback?`)), 'back through the callback');
  await page.getByText(EMAIL).waitFor();
  await page.getByRole('heading', { name: '1. The Drive folder to watch' }).waitFor();
});

test('onboarding browses into a subfolder, searches, watches it and picks a preset', async () => {
  await page.getByRole('button', { name: 'Open Photos' }).click();
  await page.getByRole('button', { name: 'Watch Archive' }).waitFor();
  await page.getByLabel('Search this folder by name').fill('inb');
  await until(async () => !(await page.getByRole('button', { name: 'Watch Archive' }).isVisible()), 5000, 'the search to hide Archive');
  await page.getByRole('button', { name: 'Watch Inbox' }).click();
  await page.locator('#watching', { hasText: 'Watching Inbox' }).waitFor();
  const processed = page.getByRole('link', { name: 'Processed folder' });
  assert.match(await processed.getAttribute('href'), /folders\/[A-Za-z0-9_-]+$/);
  assert.ok(fs.existsSync(path.join(stack.drive(EMAIL), 'Photos', 'Inbox', 'Processed')), 'Processed made in the Drive');

  // each system preset shows its before/after on the sample photo (the worker's preview lane)
  await until(async () => page.$$eval('#preset-form img', (imgs) => imgs.length >= 6 &&
    imgs.every((i) => i.complete && i.naturalWidth > 0)), 60000, "the presets' before/after previews");
  await page.getByLabel(/landscape_vivid/).check();
  await page.getByRole('button', { name: 'Use this preset' }).click();
  await page.getByText('New photos will be edited with landscape_vivid.').waitFor();
  const me = await (await page.request.get(`${stack.url}/api/me`)).json();
  assert.equal(me.default_preset, 'landscape_vivid');
  assert.ok(me.watched_folder_id);
  await page.getByRole('link', { name: 'See your jobs' }).click();
  // the setup page's message does not follow to the next page
  await until(async () => (await page.locator('#flash').textContent()) === '', 5000, 'the message to clear');
  await until(() => /#\/jobs$/.test(page.url()), 5000, 'the jobs page');
});

test('a photo dropped into the Drive appears and turns completed without a reload', async () => {
  await page.getByText('No jobs yet.').waitFor();
  await page.evaluate(() => { window.__noReload = 1; });
  const inbox = path.join(stack.drive(EMAIL), 'Photos', 'Inbox');
  fs.copyFileSync(path.join(process.env.CA_ROOT || path.resolve('../..'), 'tests/fixtures/coffee.png'), path.join(inbox, 'coffee.png'));
  const row = page.locator('li.job', { hasText: 'coffee.png' });
  await row.waitFor({ timeout: 30000 });
  await row.evaluate((el) => { el.__seen = 1; });
  await row.locator('.status', { hasText: 'completed' }).waitFor({ timeout: 60000 });
  assert.equal(await page.evaluate(() => window.__noReload), 1, 'the page was not reloaded');
  assert.equal(await row.evaluate((el) => el.__seen), 1, 'the row was updated in place');
  assert.match(await row.textContent(), /landscape_vivid/);
  assert.match(await row.textContent(), /processed in \d/);
  await row.getByRole('link', { name: /Open coffee_landscape_vivid/ }).waitFor();
  assert.ok(fs.existsSync(path.join(inbox, 'Processed', 'coffee_landscape_vivid.jpg')));
  // the filter asks the API for that status only
  await page.getByLabel('Status').selectOption('failed');
  await page.getByText('No failed jobs.').waitFor();
  await page.getByLabel('Status').selectOption('completed');
  await row.waitFor();
});

test('the usage page shows the count and the plan', async () => {
  await page.getByRole('link', { name: 'Usage & plan' }).click();
  await until(() => /#\/usage$/.test(page.url()), 5000, 'the usage page');
  const count = page.locator('#usage-count');
  await count.waitFor();
  assert.match(await count.textContent(), /^1 of 10 images used/);
  assert.match(await page.locator('#plan-name').textContent(), /Free/);
  await page.getByRole('button', { name: /Upgrade to Creator/ }).waitFor();
});

test('every control is labelled, and the pages work from the keyboard', async () => {
  for (const route of ['jobs', 'usage', 'setup', 'settings']) {
    await page.goto(`${stack.url}/#/${route}`);
    await page.locator('main h1').waitFor();
    await page.waitForLoadState('networkidle');
    const unlabelled = await page.evaluate(() => {
      const bad = [];
      for (const el of document.querySelectorAll('input, select, textarea')) {
        if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) bad.push(el.outerHTML);
      }
      for (const el of document.querySelectorAll('button, a[href]')) {
        if (!el.hidden && !(el.getAttribute('aria-label') || el.textContent.trim())) bad.push(el.outerHTML);
      }
      return bad;
    });
    assert.deepEqual(unlabelled, [], `#/${route}`);
  }
  // Keyboard only: the first Tab reaches the skip link, which moves the focus
  // to the page's content and stays on the page.
  await page.goto(`${stack.url}/#/setup`);
  await page.reload(); // a fresh load: the focus at the document's start
  await page.getByRole('button', { name: 'Open Photos' }).waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
  assert.match(page.url(), /#\/setup$/);
  // Tab on to "Open Photos" on the folder page; Enter opens it.
  let found = false;
  for (let i = 0; i < 40 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate(() => document.activeElement && document.activeElement.getAttribute('aria-label') === 'Open Photos');
  }
  assert.ok(found, 'Tab reaches "Open Photos"');
  await page.keyboard.press('Enter');
  await page.locator('.crumbs [aria-current="location"]', { hasText: 'Photos' }).waitFor();
  // the jobs filter keeps the focus while the list refreshes
  await page.goto(`${stack.url}/#/jobs`);
  await page.locator('li.job').first().waitFor();
  await page.getByLabel('Status').focus();
  await page.waitForTimeout(2500);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'status-filter');
});

test('every page fits a 390 px wide phone without horizontal scroll', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const route of ['jobs', 'usage', 'setup', 'settings']) {
    await page.goto(`${stack.url}/#/${route}`);
    await page.locator('main h1').waitFor();
    await page.waitForLoadState('networkidle');
    assert.ok(await noHorizontalScroll(), `#/${route} scrolls sideways at 390 px`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('axe-core finds no serious or critical violation, at desktop and phone size', async () => {
  const found = [];
  for (const viewport of [{ width: 1280, height: 900 }, { width: 390, height: 844 }]) {
    await page.setViewportSize(viewport);
    for (const route of ['jobs', 'usage', 'setup', 'settings']) {
      await page.goto(`${stack.url}/#/${route}`);
      await page.locator('main h1').waitFor();
      await page.waitForLoadState('networkidle');
      for (const v of await axe(page)) found.push(`${viewport.width}px #/${route}: ${v}`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  assert.deepEqual(found, []);
});

test('no console errors on any page', () => {
  assert.deepEqual(browser.errors, []);
});
