// The admin page and the landing page's preset examples, in headless chromium
// against the real stack (one stack for the file): the landing page shows the
// three system presets' before/after previews (rendered by the worker, asked
// for again while pending); an administrator (ADMIN_EMAILS) sees the four
// analytics charts drawn as SVG with the figures of rows seeded through SQL,
// for the date range chosen; a non-admin has no admin link and is told no.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { perFile, launch, until, axe } from '../lib/stack.mjs';

const ADMIN = 'boss@example.com';
const USER = 'plain.user@example.com';
let stack;
let browser;
let page;

// The rows of tests/integration/test_gateway_admin.c (its figures are
// checked exactly there): four users in January–February 2024, their jobs,
// subscriptions and overage.
const SEED = `
INSERT INTO users (id, google_id, email, created_at) VALUES
 ('aaaaaaaa-0000-0000-0000-00000000000a', 'ga', 'a@seed.test', '2024-01-05 10:00'),
 ('bbbbbbbb-0000-0000-0000-00000000000b', 'gb', 'b@seed.test', '2024-01-20 10:00'),
 ('cccccccc-0000-0000-0000-00000000000c', 'gc', 'c@seed.test', '2024-01-31 23:59:59'),
 ('dddddddd-0000-0000-0000-00000000000d', 'gd', 'd@seed.test', '2024-02-01 00:00');
INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, processing_time_ms, created_at)
 SELECT 'aaaaaaaa-0000-0000-0000-00000000000a', 'fa' || g, 'a.jpg', 'fold', 'portrait_pro', 'completed', g * 100,
        timestamp '2024-01-10' + g * interval '1 hour' FROM generate_series(1, 10) g;
INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, processing_time_ms, created_at) VALUES
 ('aaaaaaaa-0000-0000-0000-00000000000a', 'fa-feb', 'a.jpg', 'fold', 'product_clean', 'completed', 300, '2024-02-15'),
 ('bbbbbbbb-0000-0000-0000-00000000000b', 'fb', 'b.jpg', 'fold', 'product_clean', 'completed', 200, '2024-01-31 23:59:59'),
 ('cccccccc-0000-0000-0000-00000000000c', 'fc1', 'c.jpg', 'fold', 'portrait_pro', 'failed', 50, '2024-01-31 12:00'),
 ('cccccccc-0000-0000-0000-00000000000c', 'fc2', 'c.jpg', 'fold', 'portrait_pro', 'failed', 50, '2024-03-02');
INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, processing_time_ms, created_at) VALUES
 ('dddddddd-0000-0000-0000-00000000000d', 'fd', 'd.jpg', 'fold', 'landscape_vivid', 'completed', 400, '2024-03-20');
INSERT INTO subscriptions (user_id, tier, status, monthly_limit, created_at) VALUES
 ('aaaaaaaa-0000-0000-0000-00000000000a', 'creator', 'active', 100, '2024-01-06'),
 ('bbbbbbbb-0000-0000-0000-00000000000b', 'creator', 'active', 100, '2024-03-01'),
 ('cccccccc-0000-0000-0000-00000000000c', 'studio', 'active', 500, '2024-02-01'),
 ('dddddddd-0000-0000-0000-00000000000d', 'studio', 'cancelled', 500, '2024-02-02');
INSERT INTO usage_tracking (user_id, month, tier, monthly_limit, images_processed, images_overage, overage_charged_cents) VALUES
 ('aaaaaaaa-0000-0000-0000-00000000000a', '2024-02-01', 'creator', 100, 103, 3, 150);
`;

perFile({
  env: { ADMIN_EMAILS: `someone@example.com, ${ADMIN}` },
  prepare: () => {
    stack.psql(SEED);
  },
  started: (x) => ({ stack, browser, page } = x),
});

const noHorizontalScroll = (p) => p.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);

test('the landing page shows the three system presets before and after', async () => {
  const pending = [];
  const onRes = (r) => { if (/\/preview\/(before|after)\.jpg/.test(r.url()) && r.status() === 503) pending.push(r.url()); };
  page.on('response', onRes);
  await page.goto(stack.url + '/');
  const cards = page.locator('#preset-examples li.preset-card');
  await until(async () => (await cards.count()) === 3, 15000, 'three preset cards');
  assert.deepEqual(await cards.evaluateAll((els) => els.map((e) => e.dataset.preset)),
    ['landscape_vivid', 'portrait_pro', 'product_clean']);
  // each card: a before and an after image, decoded (the worker renders them)
  await until(async () => {
    const widths = await page.locator('#preset-examples img').evaluateAll((imgs) => imgs.map((i) => (i.complete ? i.naturalWidth : 0)));
    return widths.length === 6 && widths.every((w) => w > 0);
  }, 90000, 'six decoded preview images');
  const srcs = await page.locator('#preset-examples img').evaluateAll((imgs) => imgs.map((i) => new URL(i.src).pathname));
  assert.equal(srcs.filter((s) => /^\/api\/presets\/[0-9a-f-]{36}\/preview\/before\.jpg$/.test(s)).length, 3, srcs.join(' '));
  assert.equal(srcs.filter((s) => /^\/api\/presets\/[0-9a-f-]{36}\/preview\/after\.jpg$/.test(s)).length, 3, srcs.join(' '));
  for (const alt of await page.locator('#preset-examples img').evaluateAll((imgs) => imgs.map((i) => i.alt))) {
    assert.match(alt, /(before|after)$/);
  }
  page.off('response', onRes);
  if (pending.length) console.log(`# ${pending.length} preview answer(s) were 503 preview_pending, then retried`);
  assert.deepEqual(await axe(page), []);
  assert.deepEqual(browser.errors, []);
});

test('an administrator sees the four charts drawn as SVG with the seeded figures', async () => {
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(ADMIN)}`);
  await until(() => /#\/setup$/.test(page.url()), 15000, 'onboarding');
  const link = page.getByRole('link', { name: 'Admin', exact: true });
  await link.waitFor();
  await link.click();
  await until(() => /#\/admin$/.test(page.url()), 5000, 'the admin page');
  await page.locator('#chart-mau svg').waitFor(); // the default range (last 12 months) first
  await page.getByLabel('From').fill('2024-01-01');
  await page.getByLabel('To').fill('2024-03-31');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.locator('#admin-status', { hasText: 'From 2024-01-01 to 2024-03-31.' }).waitFor();

  const bars = (id) => page.locator(`#${id} svg rect.bar`).evaluateAll((rs) => rs.map((r) => [r.dataset.label, r.getAttribute('class').split(' ')[1], Number(r.dataset.value)]));
  // monthly active users: a completed job in the month
  assert.deepEqual(await bars('chart-mau'), [['2024-01', 'series-0', 2], ['2024-02', 'series-0', 1], ['2024-03', 'series-0', 1]]);
  // retention heatmap: January's cohort 2 of 3, February's 1 of 1, March none
  const cells = await page.locator('#chart-retention svg rect.cell').evaluateAll((rs) => rs.map((r) => r.dataset.value));
  assert.equal(cells.length, 12, 'one row (2024) of twelve months');
  assert.deepEqual(cells.slice(0, 3), ['0.6667', '1', '']);
  assert.match(await page.locator('#chart-retention svg desc').textContent(), /Jan 2024: 67%; Feb 2024: 100%/);
  // revenue by tier per month, stacked: free, creator, studio
  assert.deepEqual(await bars('chart-revenue'), [
    ['2024-01', 'series-0', 0], ['2024-01', 'series-1', 29], ['2024-01', 'series-2', 0],
    ['2024-02', 'series-0', 0], ['2024-02', 'series-1', 29], ['2024-02', 'series-2', 99],
    ['2024-03', 'series-0', 0], ['2024-03', 'series-1', 58], ['2024-03', 'series-2', 99]]);
  // p95 processing time per preset (percentile_cont over the completed jobs)
  assert.deepEqual(await bars('chart-performance'), [
    ['portrait_pro', 'series-0', 955], ['product_clean', 'series-0', 295], ['landscape_vivid', 'series-0', 400]]);

  // accessible: each SVG is an image named by its title, with its values in
  // the description and a table
  for (const id of ['chart-mau', 'chart-retention', 'chart-revenue', 'chart-performance']) {
    const svg = page.locator(`#${id} svg`);
    assert.equal(await svg.getAttribute('role'), 'img');
    const titleId = await svg.getAttribute('aria-labelledby');
    assert.ok(await page.locator(`#${titleId}`).textContent());
    assert.ok((await page.locator(`#${id} table tbody tr`).count()) > 0, `${id} has a table`);
  }
  assert.match(await page.locator('#chart-mau svg desc').textContent(), /2024-01: 2; 2024-02: 1; 2024-03: 1/);
  assert.match(await page.locator('#chart-revenue table').textContent(), /Studio.*\$99/s);
  const sizes = await page.getByRole('img', { name: 'p95 processing time per preset' }).count();
  assert.equal(sizes, 1);

  // a range the routes refuse is not sent
  await page.getByLabel('From').fill('2024-04-01');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.locator('#admin-status', { hasText: 'on or before the end date' }).waitFor();

  assert.deepEqual(await axe(page), []);
  // on a desktop, the charts are drawn 640 units wide and the heatmap has a
  // column a month
  const viewBoxWidth = (id) => page.locator(`#${id} svg`).evaluate((svg) => svg.viewBox.baseVal.width);
  assert.equal(await viewBoxWidth('chart-mau'), 640);
  assert.equal(await page.locator('#chart-retention svg.transposed').count(), 0);

  // on a 390 px phone, the charts are drawn again for that width: their text
  // is as large as on a desktop (12 px, not scaled down to 7), x labels do not
  // overlap, the heatmap turns (months down the side) with the same cells
  await page.setViewportSize({ width: 390, height: 844 });
  await until(async () => (await viewBoxWidth('chart-mau')) < 400, 5000, 'the charts drawn for a phone');
  assert.ok(await noHorizontalScroll(page), 'no sideways scroll at 390 px');
  const textSizes = await page.locator('#admin-charts svg text').evaluateAll((ts) => ts.map((t) => {
    const svg = t.ownerSVGElement;
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    return parseFloat(getComputedStyle(t).fontSize) * scale;
  }));
  assert.ok(textSizes.length > 20, `chart text drawn (${textSizes.length})`);
  assert.ok(Math.min(...textSizes) >= 11, `chart text at 390 px is ${Math.min(...textSizes).toFixed(1)} px at the smallest (>= 11)`);
  for (const id of ['chart-mau', 'chart-revenue', 'chart-performance']) {
    const boxes = await page.locator(`#${id} svg text.xlabel`).evaluateAll((ts) => ts.map((t) => {
      const r = t.getBoundingClientRect();
      return [r.left, r.right];
    }));
    assert.ok(boxes.length > 0, `${id} has x labels`);
    for (let i = 1; i < boxes.length; i++) assert.ok(boxes[i][0] >= boxes[i - 1][1], `${id}: x labels ${i - 1} and ${i} overlap`);
  }
  assert.equal(await page.locator('#chart-retention svg.transposed').count(), 1, 'the heatmap turned');
  const phoneCells = await page.locator('#chart-retention svg rect.cell').evaluateAll((rs) => rs.map((r) => r.dataset.value));
  assert.deepEqual(phoneCells, cells, 'the same twelve cells, month by month');
  assert.deepEqual(await axe(page), []);
  await page.setViewportSize({ width: 1280, height: 900 });
  await until(async () => (await viewBoxWidth('chart-mau')) === 640, 5000, 'the charts drawn for a desktop again');
  assert.equal(await page.locator('#chart-retention svg.transposed').count(), 0);
  assert.deepEqual(browser.errors, []);
});

test('a non-admin has no admin link and the page says not allowed', async () => {
  const other = await launch(stack.url);
  try {
    const p = other.page;
    await p.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(USER)}`);
    await until(() => /#\/setup$/.test(p.url()), 15000, 'onboarding');
    await p.getByText(USER).waitFor();
    assert.equal(await p.getByRole('link', { name: 'Admin', exact: true }).count(), 0, 'no admin link');
    await p.goto(`${stack.url}/#/admin`);
    await p.locator('#not-allowed').waitFor();
    assert.match(await p.locator('#not-allowed').textContent(), /Not allowed/);
    assert.equal(await p.locator('#main svg').count(), 0);
    const res = await p.request.get(`${stack.url}/api/admin/analytics/mau`);
    assert.equal(res.status(), 403);
    assert.deepEqual(await axe(p), []);
    assert.deepEqual(other.errors, []);
  } finally {
    await other.close();
  }
});
