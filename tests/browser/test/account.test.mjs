// The dashboard's account side in headless chromium against the real stack:
// a failed photo shows a readable reason, cancel and retry, paging, the
// settings (sharing, e-mail, export), upgrade through Stripe Checkout on the
// fake with the plan card changing after the signed webhook, manage billing,
// sign out, and the deletion of the account signing the user out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { perFile, until, axe } from '../lib/stack.mjs';

const EMAIL = 'erin@example.com';
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

test('a user signs in and watches a folder', async () => {
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(EMAIL)}`);
  await until(() => /#\/setup$/.test(page.url()), 15000, 'onboarding');
  await page.getByRole('button', { name: 'Watch Inbox' }).click();
  await page.locator('#watching', { hasText: 'Watching Inbox' }).waitFor();
  me = await apiGet('/api/me');
  assert.ok(me.watched_folder_id);
});

test('a failed photo shows a readable reason; retry queues it again', async () => {
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.getByText('No jobs yet.').waitFor();
  fs.writeFileSync(path.join(stack.drive(EMAIL), 'Inbox', 'broken.jpg'), 'this is not a photo at all'.repeat(20));
  const row = page.locator('li.job', { hasText: 'broken.jpg' });
  await row.locator('.status', { hasText: 'failed' }).waitFor({ timeout: 60000 });
  const reason = await row.locator('.reason').textContent();
  assert.match(reason, /not a photo we can read/);
  const job = (await apiGet('/api/jobs?status=failed')).jobs[0];
  assert.equal(job.error_code, 'unsupported_image');
  await row.getByRole('button', { name: 'Retry broken.jpg' }).click();
  await page.getByText('broken.jpg is queued again.').waitFor();
  // queued again (the API says so), then failed again, without a reload
  await until(async () => {
    const j = await apiGet(`/api/jobs/${job.id}`);
    return j.status !== 'failed' || j.completed_at !== job.completed_at;
  }, 30000, 'the retried job');
  await row.locator('.status', { hasText: 'failed' }).waitFor({ timeout: 60000 });
});

test('a running job can be cancelled, then retried', async () => {
  // A job the worker holds (lease far ahead): the UI offers Cancel.
  const running = (name) => stack.psql(`INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      started_at, lease_expires_at, attempt)
    VALUES ('${me.id}', 'processing', 'gone-${name}', '${name}', '${me.watched_folder_id}', 'portrait_pro',
      now() AT TIME ZONE 'UTC', (now() AT TIME ZONE 'UTC') + interval '1 hour', 1) RETURNING id`).split('\n')[0];
  const beach = running('beach.jpg');
  const id = running('holiday.jpg');
  const row = page.locator('li.job', { hasText: 'holiday.jpg' });
  await page.getByLabel('Status').selectOption('processing');
  await row.locator('.status', { hasText: 'processing' }).waitFor({ timeout: 10000 });
  await page.locator('li.job', { hasText: 'beach.jpg' }).waitFor();
  assert.equal(await page.locator('li.job').count(), 2, 'only the processing jobs');
  // cancelled elsewhere (another tab, the API): it leaves the filtered list
  const r = await page.request.post(`${stack.url}/api/jobs/${beach}/cancel`, { headers: { 'X-CSRF-Token': me.csrf_token } });
  assert.equal(r.status(), 200);
  await until(async () => (await page.locator('li.job', { hasText: 'beach.jpg' }).count()) === 0, 5000, 'beach.jpg to leave the processing filter');
  assert.equal(await row.getByRole('button', { name: 'Retry holiday.jpg' }).isVisible(), false);
  await row.getByRole('button', { name: 'Cancel holiday.jpg' }).click();
  await page.getByText('holiday.jpg is cancelled.').waitFor();
  assert.equal((await apiGet(`/api/jobs/${id}`)).status, 'cancelled');
  // no longer processing: it leaves the filtered list at the next refresh
  await until(async () => (await row.count()) === 0, 5000, 'the cancelled job to leave the processing filter');
  await page.getByText('No processing jobs.').waitFor();
  await page.getByLabel('Status').selectOption('cancelled');
  await row.locator('.status', { hasText: 'cancelled' }).waitFor();
  assert.equal(await row.getByRole('button', { name: 'Cancel holiday.jpg' }).isVisible(), false);
  // Retried, the worker finds the file gone from Drive: the reason says so.
  await row.getByRole('button', { name: 'Retry holiday.jpg' }).click();
  await page.getByLabel('Status').selectOption('');
  await row.locator('.status', { hasText: 'failed' }).waitFor({ timeout: 60000 });
  assert.match(await row.locator('.reason').textContent(), /removed from Drive/);
});

test('older jobs page in through next_cursor', async () => {
  // 30 finished jobs from last week, older than the ones above
  stack.psql(`INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      created_at, completed_at, processing_time_ms)
    SELECT '${me.id}', 'completed', 'old-' || i, 'old-' || lpad(i::text, 2, '0') || '.jpg', '${me.watched_folder_id}',
      'portrait_pro', (now() AT TIME ZONE 'UTC') - interval '7 days' - i * interval '1 minute',
      (now() AT TIME ZONE 'UTC') - interval '7 days', 1000 + i
    FROM generate_series(1, 30) i`);
  await page.reload();
  const rows = page.locator('li.job');
  await page.locator('li.job', { hasText: 'old-17.jpg' }).waitFor();
  assert.equal(await rows.count(), 20, 'the first page: the 3 jobs above and old-01 .. old-17');
  assert.equal(await page.locator('li.job', { hasText: 'old-18.jpg' }).count(), 0);
  await page.getByRole('button', { name: 'Older jobs' }).click();
  await page.locator('li.job', { hasText: 'old-30.jpg' }).waitFor();
  assert.equal(await rows.count(), 33, 'both pages, each job once');
  assert.equal(await page.getByRole('button', { name: 'Older jobs' }).isVisible(), false, 'no third page');
  // the next poll keeps the older page
  await page.waitForTimeout(2500);
  assert.equal(await rows.count(), 33);
  const names = await rows.locator('.name').allTextContents();
  assert.deepEqual(names.slice(-3), ['old-28.jpg', 'old-29.jpg', 'old-30.jpg'], 'newest first');
});

test('settings: sharing and e-mail are saved, the export downloads', async () => {
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByRole('heading', { name: 'Preferences' }).waitFor();
  await page.getByLabel(/^Private/).check();
  await page.getByText('Saved: sharing private.').waitFor();
  await page.getByLabel('E-mail me about my photos').uncheck();
  await page.getByText('Saved: e-mails off.').waitFor();
  const after_ = await apiGet('/api/me');
  assert.equal(after_.share_outputs, 'private');
  assert.equal(after_.email_notifications, false);
  // a reload shows what was saved
  await page.reload();
  await page.getByRole('heading', { name: 'Preferences' }).waitFor();
  assert.equal(await page.getByLabel(/^Private/).isChecked(), true);
  assert.equal(await page.getByLabel('E-mail me about my photos').isChecked(), false);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Export my data' }).click(),
  ]);
  assert.match(download.suggestedFilename(), /^creator-automation-export-\d{4}-\d{2}-\d{2}\.json$/);
  const data = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  assert.equal(data.export.format, 'creator-automation-export');
  assert.equal(data.profile.email, EMAIL);
  assert.ok(data.jobs.some((j) => j.drive_file_name === 'broken.jpg'));
});

test('upgrade goes through Checkout on the Stripe fake; the plan card changes after the webhook', async () => {
  await page.getByRole('link', { name: 'Usage & plan' }).click();
  await page.locator('#plan-name', { hasText: 'Free' }).waitFor();
  const visited = [];
  const onReq = (r) => { if (r.isNavigationRequest()) visited.push(r.url()); };
  page.on('request', onReq);
  await page.getByRole('button', { name: /Upgrade to Creator/ }).click();
  await page.locator('#plan-name', { hasText: 'Creator' }).waitFor({ timeout: 30000 });
  await page.getByText('Your plan is now Creator.').waitFor();
  page.off('request', onReq);
  assert.ok(visited.some((u) => u.startsWith(`${stack.stripe}/checkout/`)), `through Checkout: ${visited.join(' ')}`);
  assert.match(page.url(), /\/#\/usage$/);
  assert.match(await page.locator('#usage-count').textContent(), /of 100 images used/);
  assert.equal((await apiGet('/api/me')).tier, 'creator');
  // overage so far and its cost, for creator: 3 images past the 100, $1.50
  const month = (await apiGet('/api/usage')).month;
  assert.match(month, /^\d{4}-\d{2}-\d{2}$/);
  stack.psql(`INSERT INTO usage_tracking (user_id, month, tier, monthly_limit, images_processed, images_overage, overage_charged_cents)
    SELECT id, '${month}', 'creator', 100, 103, 3, 150 FROM users WHERE email = '${EMAIL}'
    ON CONFLICT (user_id, month) DO UPDATE SET images_processed = 103, images_overage = 3, overage_charged_cents = 150`);
  await page.reload();
  await page.locator('#overage', { hasText: 'Overage: 3 images, $1.50 so far.' }).waitFor();
  // Manage billing opens the Stripe Portal
  await page.getByRole('button', { name: 'Manage billing' }).click();
  await until(() => page.url().startsWith(`${stack.stripe}/billing_portal/`), 15000, 'the portal');
  // back to the dashboard by address: goBack raced the portal page's own load
  // ("Not attached to an active page") once in a loaded run
  await page.waitForLoadState('load');
  await page.goto(`${stack.url}/#/usage`);
  await page.locator('#plan-name', { hasText: 'Creator' }).waitFor();
});

test('sign out ends the session; signing in again comes back to the jobs', async () => {
  await page.goto(`${stack.url}/#/jobs`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You are signed out.').waitFor();
  await page.getByRole('link', { name: 'Sign in with Google' }).waitFor();
  assert.equal((await page.request.get(`${stack.url}/api/me`)).status(), 401);
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(EMAIL)}`);
  await until(() => /#\/jobs$/.test(page.url()), 15000, 'the jobs page (a folder is watched)');
  await page.locator('li.job').first().waitFor();
});

test('deleting the account needs the e-mail and signs out', async () => {
  await page.goto(`${stack.url}/#/settings`);
  const confirm = page.getByLabel(/Type your e-mail/);
  await confirm.fill('someone.else@example.com');
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await page.getByText('Type your e-mail address exactly to confirm.').waitFor();
  assert.equal((await page.request.get(`${stack.url}/api/me`)).status(), 200, 'nothing deleted yet');
  await confirm.fill(EMAIL.toUpperCase());
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await page.getByText('Your account is deleted.').waitFor({ timeout: 30000 });
  await page.getByRole('link', { name: 'Sign in with Google' }).waitFor();
  assert.equal((await page.request.get(`${stack.url}/api/me`)).status(), 401);
  assert.equal(stack.psql(`SELECT count(*) FROM users WHERE email = '${EMAIL}'`), '0');
});

test('the signed-out landing page passes axe-core at desktop and phone size', async () => {
  for (const viewport of [{ width: 1280, height: 900 }, { width: 390, height: 844 }]) {
    await page.setViewportSize(viewport);
    await page.goto(`${stack.url}/`);
    await page.getByRole('link', { name: 'Sign in with Google' }).waitFor();
    assert.deepEqual(await axe(page), [], `${viewport.width}px`);
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth), `${viewport.width}px: no horizontal scroll`);
  }
});

test('no console errors on any page', () => {
  assert.deepEqual(browser.errors, []);
});
