// The jobs page's second slice, the notices and the settings of issue 16 in
// headless chromium against the real stack: a completed photo's before/after
// thumbnails load; a free user over the limit sees the photos waiting for the
// monthly limit (in the list, the filter and the usage page with the period's
// end); the date filter narrows the list and pages through archived history;
// a notice shows with an unread badge in the nav and marking it read clears
// it; a hidden tab asks nothing; an e-mail kind turned off stays off after a
// reload; a revoked Drive shows the reconnect button, which signs in again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { perFile, until, axe } from '../lib/stack.mjs';

const EMAIL = 'jo@example.com';
const ROOT = process.env.CA_ROOT || path.resolve('../..');
let stack;
let browser;
let page;
let me;

perFile({
  prepare: () => {
    fs.mkdirSync(path.join(stack.drive(EMAIL), 'Inbox'), { recursive: true });
  },
  started: (x) => ({ stack, browser, page } = x),
});

const apiGet = async (p) => (await page.request.get(`${stack.url}${p}`)).json();
const inbox = () => path.join(stack.drive(EMAIL), 'Inbox');
const badge = () => page.locator('#unread');

test('a user signs in and watches a folder', async () => {
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(EMAIL)}`);
  await until(() => /#\/setup$/.test(page.url()), 15000, 'onboarding');
  await page.getByRole('button', { name: 'Watch Inbox' }).click();
  await page.locator('#watching', { hasText: 'Watching Inbox' }).waitFor();
  me = await apiGet('/api/me');
  assert.ok(me.watched_folder_id);
});

test('a completed photo shows its before and after thumbnails; a missing one shows no broken image', async () => {
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.getByText('No jobs yet.').waitFor();
  fs.copyFileSync(path.join(ROOT, 'tests/fixtures/coffee.png'), path.join(inbox(), 'coffee.png'));
  const row = page.locator('li.job', { hasText: 'coffee.png' });
  await row.locator('.status', { hasText: 'completed' }).waitFor({ timeout: 60000 });
  const before_ = row.getByRole('img', { name: 'Before: coffee.png' });
  const after_ = row.getByRole('img', { name: 'After: coffee.png' });
  await until(async () => (await before_.count()) && (await after_.count())
    && (await before_.evaluate((i) => i.complete && i.naturalWidth > 0))
    && (await after_.evaluate((i) => i.complete && i.naturalWidth > 0)), 20000, 'both thumbnails to load');
  const srcs = await row.locator('.thumbs img').evaluateAll((imgs) => imgs.map((i) => new URL(i.src).pathname));
  const job = (await apiGet('/api/jobs?status=completed')).jobs[0];
  assert.deepEqual(srcs, [`/api/jobs/${job.id}/thumbnail/before.jpg`, `/api/jobs/${job.id}/thumbnail/after.jpg`]);
  // A completed job whose thumbnails are gone (404): no image at all, not a
  // broken one.
  stack.psql(`INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      completed_at, processing_time_ms) VALUES ('${me.id}', 'completed', 'gone-nothumb', 'nothumb.jpg',
      '${me.watched_folder_id}', 'portrait_pro', now() AT TIME ZONE 'UTC', 1200)`);
  const bare = page.locator('li.job', { hasText: 'nothumb.jpg' });
  await bare.waitFor({ timeout: 10000 });
  await until(async () => (await bare.locator('img').count()) === 0, 10000, 'the broken thumbnails to go');
  assert.equal(await bare.locator('.thumbs').isVisible(), false);
});

test('a free user over the limit sees the waiting photos, their filter and count, and the period end', async () => {
  // The period's ten images are used: new photos wait for the monthly limit.
  stack.psql(`UPDATE usage_tracking SET images_processed = 10 WHERE user_id = '${me.id}'`);
  assert.equal((await apiGet('/api/usage')).remaining, 0);
  for (const name of ['wait1.png', 'wait2.png']) {
    fs.copyFileSync(path.join(ROOT, 'tests/fixtures/coffee.png'), path.join(inbox(), name));
  }
  for (const name of ['wait1.png', 'wait2.png']) {
    const row = page.locator('li.job', { hasText: name });
    await row.locator('.status', { hasText: 'Waiting for your monthly limit' }).waitFor({ timeout: 60000 });
    assert.match(await row.locator('.reason').textContent(), /over your plan's monthly limit.*processed by itself/);
    assert.equal(await row.locator('img').count(), 0);
  }
  await page.getByLabel('Status').selectOption({ label: 'waiting for monthly limit' });
  await until(async () => (await page.locator('li.job').count()) === 2, 10000, 'only the waiting photos');
  assert.deepEqual(await page.locator('li.job').evaluateAll((l) => l.map((li) => li.dataset.waiting)), ['quota', 'quota']);
  await page.getByLabel('Status').selectOption('');

  await page.getByRole('link', { name: 'Usage & plan' }).click();
  const waiting = page.locator('#waiting-count');
  await waiting.waitFor();
  assert.match(await waiting.textContent(), /^2 photos are waiting for your monthly limit\./);
  // a free period ends with the calendar month (UTC)
  const now = new Date();
  const last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0));
  const lastText = last.toLocaleDateString('en-US', { year: 'numeric', month: 'long', day: 'numeric', timeZone: 'UTC' });
  assert.ok((await page.locator('#usage-period').textContent()).includes(`It ends on ${lastText}`),
    await page.locator('#usage-period').textContent());
});

test('a notice shows with an unread badge; marking read clears it', async () => {
  // the photos waiting raised a quota_waiting notice; one more, of a batch of failures
  stack.psql(`INSERT INTO notices (user_id, kind, cause_key, title, message, data, created_at)
    VALUES ('${me.id}', 'jobs_failed', 'test-batch', 'Some photos failed', 'Two photos could not be edited.',
    '{"count": 2}', (now() AT TIME ZONE 'UTC') - interval '1 day')`);
  const list = await apiGet('/api/notifications');
  const unread = list.unread_count; // the usage one(s) of reaching the limit besides
  assert.ok(unread >= 2, JSON.stringify(list));
  assert.ok(list.notifications.some((n) => n.kind === 'quota_waiting' && !n.read_at), 'a quota_waiting notice');
  // the badge follows within its 10 s cycle, without a navigation
  await until(async () => (await badge().isVisible()) && (await badge().textContent()) === String(unread), 15000, `the badge to say ${unread}`);
  assert.equal(await page.getByRole('link', { name: `Notices, ${unread} unread` }).count(), 1);
  await page.getByRole('link', { name: /^Notices/ }).click();
  await until(() => /#\/notices$/.test(page.url()), 5000, 'the notices page');
  const items = page.locator('li.notice-item');
  await items.first().waitFor();
  // unread first, then newest: the older jobs_failed one is still among the unread
  const kinds = await items.evaluateAll((l) => l.map((li) => li.dataset.kind));
  assert.equal(kinds.length, list.notifications.length);
  assert.ok(kinds.includes('quota_waiting'));
  assert.equal(kinds.indexOf('jobs_failed'), unread - 1, kinds.join(' '));
  assert.equal(await page.locator('li.notice-item.unread').count(), unread);
  await page.locator('#unread-count', { hasText: `${unread} unread` }).waitFor();
  await page.getByRole('button', { name: 'Mark read: Some photos failed' }).click();
  await page.locator('#unread-count', { hasText: `${unread - 1} unread` }).waitFor();
  await until(async () => (await badge().textContent()) === String(unread - 1), 5000, `the badge to say ${unread - 1}`);
  assert.equal((await apiGet('/api/notifications')).unread_count, unread - 1);
  await page.getByRole('button', { name: 'Mark all read' }).click();
  await page.locator('#unread-count', { hasText: 'All read.' }).waitFor();
  await until(async () => !(await badge().isVisible()), 5000, 'the badge to go');
  assert.equal((await apiGet('/api/notifications')).unread_count, 0);
  // after a reload: read, and no badge
  await page.reload();
  await page.locator('#unread-count', { hasText: 'All read.' }).waitFor();
  assert.equal(await page.locator('li.notice-item.unread').count(), 0);
  assert.equal(await badge().isVisible(), false);
  // older notices page in through next_cursor
  stack.psql(`INSERT INTO notices (user_id, kind, cause_key, title, message, created_at, read_at)
    SELECT '${me.id}', 'jobs_failed', 'old-' || i, 'Old batch ' || i, 'Photos failed.',
      timestamp '2021-01-01' - make_interval(days => i), timestamp '2021-01-02' FROM generate_series(1, 25) i`);
  const total = list.notifications.length + 25; // the jobs_failed one above is in list already
  await page.reload();
  await until(async () => (await items.count()) === 20, 10000, 'a first page of 20');
  await page.getByRole('button', { name: 'Older notices' }).click();
  await until(async () => (await items.count()) === total, 10000, `all ${total} notices`);
  assert.equal(await page.getByRole('button', { name: 'Older notices' }).isVisible(), false);
  const ids = await items.evaluateAll((l) => l.map((li) => li.dataset.id));
  assert.equal(new Set(ids).size, total, 'no notice twice');
  assert.equal(await items.last().locator('.title').textContent(), 'Old batch 25');
});

test('a hidden tab asks the server nothing; visible again, it asks at once', async () => {
  await page.goto(`${stack.url}/#/jobs`);
  await page.locator('li.job').first().waitFor();
  const asked = [];
  const onReq = (r) => { if (/\/api\/(notifications|jobs)/.test(r.url())) asked.push(r.url()); };
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  const visible = () => page.evaluate(() => {
    delete document.hidden;
    delete document.visibilityState;
    document.dispatchEvent(new Event('visibilitychange'));
  });
  try {
    await page.waitForTimeout(500); // a request already in flight
    page.on('request', onReq);
    await page.waitForTimeout(11000); // longer than the badge's cycle, five of the list's
    assert.deepEqual(asked, []);
  } finally {
    await visible(); // the next tests need a visible tab, whatever happened
  }
  await until(() => asked.some((u) => /\/api\/notifications/.test(u)) && asked.some((u) => /\/api\/jobs/.test(u)), 3000, 'both to ask again');
  page.off('request', onReq);
});

test('the date filter narrows the list and pages through archived history', async () => {
  // 22 archived jobs (finished long ago) and a live one, all in May 2020
  stack.psql(`INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      status, created_at, completed_at, processing_time_ms)
    SELECT '${me.id}', 'old-' || i, 'may-' || lpad(i::text, 2, '0') || '.jpg', '${me.watched_folder_id}', 'portrait_pro',
      'completed', timestamp '2020-05-10 12:00' - make_interval(mins => i), timestamp '2020-05-10 12:30', 900
    FROM generate_series(1, 22) i`);
  stack.psql(`INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      created_at, completed_at, error_code) VALUES ('${me.id}', 'failed', 'old-live', 'may-live.jpg',
      '${me.watched_folder_id}', 'portrait_pro', '2020-05-20 12:00', '2020-05-20 12:01', 'unsupported_image')`);
  await page.goto(`${stack.url}/#/jobs`);
  await page.locator('li.job', { hasText: 'coffee.png' }).waitFor();
  await page.getByLabel('From').fill('2020-05-01');
  await page.getByLabel('To').fill('2020-05-31');
  await until(async () => (await page.locator('li.job', { hasText: 'coffee.png' }).count()) === 0
    && (await page.locator('li.job').count()) === 20, 10000, 'only May 2020, a page of 20');
  assert.equal(await page.locator('li.job').first().locator('.name').textContent(), 'may-live.jpg');
  await page.getByRole('button', { name: 'Older jobs' }).click();
  await until(async () => (await page.locator('li.job').count()) === 23, 10000, 'the archived rest');
  assert.equal(await page.getByRole('button', { name: 'Older jobs' }).isVisible(), false, 'no third page');
  const names = await page.locator('li.job .name').allTextContents();
  assert.ok(names.every((n) => /^may-/.test(n)), names.join(' '));
  // still live: the filtered first page is polled, the older page stays
  await page.waitForTimeout(2500);
  assert.equal(await page.locator('li.job').count(), 23);
  // one day only
  await page.getByLabel('From').fill('2020-05-20');
  await until(async () => (await page.locator('li.job').count()) === 1, 10000, 'the one job of May 20-31');
  await page.getByLabel('To').fill('2020-05-19');
  await page.locator('#error', { hasText: '"From" date is after the "To" date' }).waitFor();
  await page.getByLabel('From').fill('2020-06-01');
  await page.getByLabel('To').fill('2020-06-30');
  await page.getByText('No jobs in these dates.').waitFor();
  await page.getByLabel('From').fill('');
  await page.getByLabel('To').fill('');
  await page.locator('li.job', { hasText: 'coffee.png' }).waitFor();
});

test('an e-mail kind turned off stays off after a reload', async () => {
  await page.goto(`${stack.url}/#/settings`);
  const kind = page.getByLabel('Photos waiting for my monthly limit');
  await kind.waitFor();
  assert.equal(await kind.isChecked(), true);
  await kind.uncheck();
  await page.getByText('Saved: e-mails about photos waiting for my monthly limit off.').waitFor();
  await page.reload();
  await page.getByLabel('Photos waiting for my monthly limit').waitFor();
  assert.equal(await page.getByLabel('Photos waiting for my monthly limit').isChecked(), false);
  assert.equal(await page.getByLabel('A payment that failed').isChecked(), true);
  const now = await apiGet('/api/me');
  assert.deepEqual(now.email_opt_out, ['quota_waiting']);
  assert.equal(now.email_notifications, true, 'the master switch is untouched');
});

test('a revoked Drive shows why and the reconnect button, which signs in again', async () => {
  stack.psql(`SELECT users_mark_drive_disconnected('${me.id}', 'invalid_grant: Google Drive access was revoked')`);
  await page.goto(`${stack.url}/#/jobs`);
  const banner = page.locator('#drive-off');
  await banner.waitFor();
  assert.match(await banner.textContent(), /Google withdrew our access to your Drive/);
  const button = banner.getByRole('link', { name: 'Reconnect Google Drive' });
  assert.match(await button.getAttribute('href'), /^\/auth\/google\/login\?login_hint=/);
  await page.goto(`${stack.url}/#/settings`);
  await page.locator('#drive-state', { hasText: 'Disconnected' }).waitFor();
  await page.goto(`${stack.url}/#/jobs`);
  await banner.getByRole('link', { name: 'Reconnect Google Drive' }).click();
  await until(() => /#\/jobs$/.test(page.url()) && page.url().startsWith(stack.url), 15000, 'back on the jobs page');
  await page.locator('li.job').first().waitFor();
  assert.equal(await page.locator('#drive-off').count(), 0);
  assert.equal((await apiGet('/api/me')).drive_connected, true);
});

test('the new pages: labelled controls, 390 px without sideways scroll, axe-core clean', async () => {
  const found = [];
  for (const viewport of [{ width: 1280, height: 900 }, { width: 390, height: 844 }]) {
    await page.setViewportSize(viewport);
    for (const route of ['jobs', 'notices', 'usage', 'settings']) {
      await page.goto(`${stack.url}/#/${route}`);
      await page.locator('main h1').waitFor();
      await page.waitForLoadState('networkidle');
      const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map((el) => el.outerHTML));
      assert.deepEqual(unlabelled, [], `#/${route}`);
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth),
        `#/${route} scrolls sideways at ${viewport.width} px`);
      for (const v of await axe(page)) found.push(`${viewport.width}px #/${route}: ${v}`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  assert.deepEqual(found, []);
});

test('no console errors (but the one expected 404 of a thumbnail gone)', () => {
  const others = browser.errors.filter((e) => !/status of 404.*\/thumbnail\/(before|after)\.jpg/.test(e));
  assert.deepEqual(others, []);
});
