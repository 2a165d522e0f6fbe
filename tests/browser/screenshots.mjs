// Screenshots of every dashboard page at desktop (1280x800) and phone
// (390x844) size, for the README's gallery (docs/img/). Not a test (tests/run
// only runs tests/browser/test/*.test.mjs): run it by hand after a change to
// the pages, from the top of the checkout, with the project built (make):
//
//     node tests/browser/screenshots.mjs [OUTDIR]     (default docs/img)
//
// It starts the real stack (tests/browser/lib/stack.mjs, as the browser tests
// do), signs a user in through the fake Google, makes realistic content
// (a watched folder whose photos are processed, one photo waiting for the
// monthly limit, a failed one, notices, a preset of the user's own, past
// periods of usage, analytics rows for the admin charts; the user is an
// administrator) and saves <page>-desktop.png (the viewport) and
// <page>-phone.png (the full page; its first two screens, or one, if the full
// page would be over 300 KB) for each page; it says so if the pages logged console errors.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStack, launch, until } from './lib/stack.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.resolve(process.argv[2] || path.join(ROOT, 'docs/img'));
const EMAIL = 'alex@example.com';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const MAX_BYTES = 300 * 1024;

const node = (class_type, inputs) => ({ class_type, inputs });
const INVERT = {
  1: node('LoadImage', { image: 'x.png' }),
  2: node('ImageInvert', { image: ['1', 0] }),
  3: node('SaveImage', { images: ['2', 0], filename_prefix: 'p' }),
};

// Other users, their jobs, subscriptions over the last six months: the
// admin charts' default range (the last 12 months) has something to draw.
const ADMIN_SEED = `
INSERT INTO users (google_id, email, created_at)
 SELECT 'seed-' || g, 'seed' || g || '@example.com',
        date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => g % 6) + make_interval(days => g % 20)
 FROM generate_series(1, 40) g;
INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, processing_time_ms, created_at, completed_at)
 SELECT u.id, 'seed-' || u.email || '-' || m || '-' || k, 'photo.jpg', 'seed-folder',
        (ARRAY['portrait_pro', 'product_clean', 'landscape_vivid'])[1 + (k % 3)], 'completed',
        400 + (k * 137) % 1800,
        date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m) + make_interval(days => k),
        date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m) + make_interval(days => k)
 FROM users u, generate_series(0, 5) m, generate_series(1, 3) k
 WHERE u.email LIKE 'seed%' AND u.created_at <= date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m) + interval '1 month'
   AND (hashtext(u.email || m) % 3) <> 0;
INSERT INTO subscriptions (user_id, tier, status, monthly_limit, created_at)
 SELECT id, CASE WHEN hashtext(email) % 3 = 0 THEN 'studio' ELSE 'creator' END, 'active',
        CASE WHEN hashtext(email) % 3 = 0 THEN 500 ELSE 100 END, created_at + interval '2 days'
 FROM users WHERE email LIKE 'seed%' AND hashtext(email) % 2 = 0;
`;

const stack = await startStack({ ADMIN_EMAILS: EMAIL });
let browser;
try {
  fs.mkdirSync(OUT, { recursive: true });
  const drive = stack.drive(EMAIL);
  for (const d of ['Inbox', 'Clients', 'Travel 2026', 'Family']) fs.mkdirSync(path.join(drive, d), { recursive: true });
  stack.psql(ADMIN_SEED);

  browser = await launch(stack.url, DESKTOP);
  const { page } = browser;
  const apiGet = async (p) => (await page.request.get(`${stack.url}${p}`)).json();
  const settle = async () => {
    await page.waitForLoadState('networkidle').catch(() => {});
    await until(() => page.evaluate(() => [...document.images].every((i) => i.complete)), 60000, 'the images');
    await page.waitForTimeout(400);
  };
  // Both sizes of the page as it is now; ready() waits for its content.
  const shoot = async (name, ready) => {
    for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      await page.setViewportSize(viewport);
      if (ready) await ready();
      await settle();
      const file = path.join(OUT, `${name}-${size}.png`);
      await page.screenshot({ path: file, fullPage: size === 'phone' });
      // a long page's full height can be heavy: then two screens' worth, or one
      if (fs.statSync(file).size > MAX_BYTES) {
        await page.screenshot({ path: file, fullPage: true, clip: { x: 0, y: 0, width: viewport.width, height: 2 * viewport.height } });
      }
      if (fs.statSync(file).size > MAX_BYTES) await page.screenshot({ path: file });
      console.log(`${path.relative(ROOT, file)} ${fs.statSync(file).size} bytes`);
    }
    await page.setViewportSize(DESKTOP);
  };

  // ---- signed out: the landing page with the system presets' previews ----
  await page.goto(stack.url + '/');
  await shoot('landing', () => until(async () => {
    const w = await page.locator('#preset-examples img').evaluateAll((imgs) => imgs.map((i) => (i.complete ? i.naturalWidth : 0)));
    return w.length === 6 && w.every((x) => x > 0);
  }, 120000, 'six preset previews'));

  // ---- onboarding ----
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(EMAIL)}`);
  await until(() => /#\/setup$/.test(page.url()), 15000, 'onboarding');
  await page.getByRole('button', { name: 'Watch Inbox' }).waitFor();
  await shoot('setup');
  await page.getByRole('button', { name: 'Watch Inbox' }).click();
  await page.locator('#watching', { hasText: 'Watching Inbox' }).waitFor();
  await page.getByLabel(/^product_clean/).check();
  await page.getByRole('button', { name: 'Use this preset' }).click();
  await page.getByText('New photos will be edited with product_clean.').waitFor();
  const me = await apiGet('/api/me');

  // ---- content: photos processed, one waiting, one failed ----
  const inbox = path.join(drive, 'Inbox');
  const photos = ['coffee.png', 'chelsea.png', 'astronaut.png'];
  for (const name of photos) fs.copyFileSync(path.join(ROOT, 'tests/fixtures', name), path.join(inbox, name));
  await until(async () => (await apiGet('/api/jobs?status=completed')).jobs.length >= photos.length, 120000, 'the photos processed');
  stack.psql(`INSERT INTO jobs (user_id, status, drive_file_id, drive_file_name, drive_folder_id, preset_name,
      created_at, completed_at, error_code) VALUES ('${me.id}', 'failed', 'shots-failed', 'scan-0042.tif',
      '${me.watched_folder_id}', 'product_clean', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', 'unsupported_image')`);
  await new Promise((r) => setTimeout(r, 1100)); // the waiting photo comes after it, newest first
  // the free plan's ten images are used: the next photo waits for the limit
  stack.psql(`UPDATE usage_tracking SET images_processed = 10 WHERE user_id = '${me.id}'`);
  fs.copyFileSync(path.join(ROOT, 'tests/fixtures/coffee.png'), path.join(inbox, 'coffee-2.png'));
  await until(async () => (await apiGet('/api/jobs?waiting_for=quota')).jobs.length >= 1, 60000, 'a photo waiting');
  // past periods for the usage history
  stack.psql(`INSERT INTO usage_tracking (user_id, month, tier, monthly_limit, images_processed)
    SELECT '${me.id}', (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m))::date, 'free', 10, 4 + m
    FROM generate_series(1, 3) m ON CONFLICT DO NOTHING`);
  stack.psql(`INSERT INTO notices (user_id, kind, cause_key, title, message, data, created_at)
    VALUES ('${me.id}', 'jobs_failed', 'shots-batch', 'A photo failed', 'scan-0042.tif could not be edited: the file is not an image we can read.',
    '{"count": 1}', (now() AT TIME ZONE 'UTC') - interval '2 minutes')`);

  // a preset of the user's own
  const made = await page.request.post(`${stack.url}/api/presets`, { headers: { 'X-CSRF-Token': me.csrf_token },
    data: { name: 'Night Invert', description: 'Inverts the colours: film negatives scanned as photos.', workflow_json: INVERT } });
  if (made.status() !== 201) throw new Error(`POST /api/presets: ${made.status()} ${await made.text()}`);

  // ---- the signed-in pages ----
  await page.goto(`${stack.url}/#/jobs`);
  await shoot('jobs', async () => {
    await page.locator('li.job', { hasText: 'coffee-2.png' }).waitFor({ timeout: 30000 });
    await until(async () => (await page.locator('li.job .thumbs img').evaluateAll((imgs) => imgs.filter((i) => i.complete && i.naturalWidth > 0).length)) >= 6,
      30000, 'the thumbnails');
  });
  await page.goto(`${stack.url}/#/usage`);
  await shoot('usage', () => page.locator('#usage-count').waitFor());
  await page.goto(`${stack.url}/#/presets`);
  await shoot('presets', async () => {
    await page.locator('#own-presets li.preset', { hasText: 'Night Invert' }).waitFor();
    await until(async () => {
      const w = await page.locator('#system-presets img, #own-presets img').evaluateAll((imgs) => imgs.map((i) => (i.complete ? i.naturalWidth : 0)));
      return w.length >= 8 && w.every((x) => x > 0);
    }, 120000, 'the preset previews');
  });
  await page.goto(`${stack.url}/#/notices`);
  await shoot('notices', () => page.locator('li.notice-item').first().waitFor());
  await page.goto(`${stack.url}/#/settings`);
  await shoot('settings', () => page.locator('#drive-state').waitFor());
  await page.goto(`${stack.url}/#/admin`);
  await shoot('admin', () => until(async () => (await page.locator('#admin-charts svg').count()) === 4, 30000, 'four charts'));

  if (browser.errors.length) console.log(`# console errors:\n${browser.errors.join('\n')}`);
} catch (e) {
  console.error(e);
  console.error(stack.log().slice(-3000));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  await stack.stop();
}
