// The presets page (#/presets) in headless chromium against the real stack:
// the system presets' previews, a preset made from a workflow file (and an
// invalid one showing the validator's error at its node), the preview of an
// edited graph before it is saved, publishing, a second user finding it in
// the marketplace, rating and adopting it, accepting the author's update, a
// preview on a photo of the watched folder, the default preset chosen here;
// labelled controls, 390 px, axe-core, no unexpected console error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { perFile, until, axe } from '../lib/stack.mjs';

const ADA = 'ada@example.com'; // the author
const BOB = 'bob@example.com'; // the adopter
const ROOT = process.env.CA_ROOT || path.resolve('../..');
const NAME = 'Night Invert';

const node = (class_type, inputs) => ({ class_type, inputs });
const INVERT = {
  1: node('LoadImage', { image: 'x.png' }),
  2: node('ImageInvert', { image: ['1', 0] }),
  3: node('SaveImage', { images: ['2', 0], filename_prefix: 'p' }),
};
// node 2 reads node 9, which does not exist
const BAD = { ...INVERT, 2: node('ImageInvert', { image: ['9', 0] }) };
// the edit: scaled to 64 x 48 before the inversion
const SCALED = {
  1: node('LoadImage', { image: 'x.png' }),
  4: node('ImageScale', { image: ['1', 0], upscale_method: 'bilinear', width: 64, height: 48, crop: 'disabled' }),
  2: node('ImageInvert', { image: ['4', 0] }),
  3: node('SaveImage', { images: ['2', 0], filename_prefix: 'p' }),
};

let stack;
let browser;
let page;

perFile({
  prepare: () => {
    fs.mkdirSync(path.join(stack.drive(ADA), 'Inbox'), { recursive: true });
    fs.mkdirSync(stack.drive(BOB), { recursive: true });
  },
  started: (x) => ({ stack, browser, page } = x),
});

const apiGet = async (p) => (await page.request.get(`${stack.url}${p}`)).json();
const file = (name, graph) => ({ name, mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(graph, null, 1)) });
const loaded = (img) => img.evaluate((el) => el.complete && el.naturalWidth > 0);
const ownPreset = async () => (await apiGet('/api/presets?scope=own')).presets.find((p) => p.name === NAME);

async function signIn(email) {
  // the previews asked for are loaded before the session ends (else their
  // images answer 401)
  await until(() => page.evaluate(() => [...document.images].every((i) => i.complete)
    && !(document.getElementById('preview-queue') || {}).textContent), 30000, 'the previews');
  if (await page.locator('#signout').isVisible().catch(() => false)) {
    await page.locator('#signout').click();
    await page.getByRole('link', { name: 'Sign in with Google' }).waitFor();
  }
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(email)}`);
  await until(() => /#\/(setup|jobs)$/.test(page.url()), 15000, `${email} signed in`);
  await page.getByText(email).waitFor();
  await page.getByRole('link', { name: 'Presets', exact: true }).click();
  await page.getByRole('heading', { name: 'Marketplace' }).waitFor();
}

async function waitPreview(card, what) {
  const before = card.locator('img[alt$=", before"]');
  const after = card.locator('img[alt$=", after"]');
  await until(async () => (await after.isVisible()) && (await loaded(before)) && (await loaded(after)), 30000, `the preview of ${what}`);
  return { before, after };
}

test('the system presets show their before/after previews, and one becomes the default', async () => {
  // Ada watches Inbox, with a photo in it (processed while the tests go on)
  await page.goto(`${stack.url}/auth/google/login?login_hint=${encodeURIComponent(ADA)}`);
  await until(() => /#\/setup$/.test(page.url()), 15000, 'onboarding');
  await page.getByRole('button', { name: 'Watch Inbox' }).click();
  await page.locator('#watching', { hasText: 'Watching Inbox' }).waitFor();
  fs.copyFileSync(path.join(ROOT, 'tests/fixtures/coffee.png'), path.join(stack.drive(ADA), 'Inbox', 'coffee.png'));

  // The worker renders the system previews at start, so they are normally
  // ready: one answer is made 503 preview_pending, as while one renders, and
  // the page must wait Retry-After and ask again.
  const vivid = (await apiGet('/api/presets?scope=system')).presets.find((p) => p.name === 'landscape_vivid');
  let asked = 0;
  await page.route(`**/api/presets/${vivid.id}/preview/after.jpg`, (route) => {
    if (++asked === 1) {
      return route.fulfill({ status: 503, headers: { 'Retry-After': '1', 'Content-Type': 'application/json' },
        body: '{"error":{"code":"preview_pending","message":"the preview is being rendered; retry"}}' });
    }
    return route.continue();
  });
  await page.getByRole('link', { name: 'Presets', exact: true }).click();
  await until(() => /#\/presets$/.test(page.url()), 5000, 'the presets page');
  const cards = page.locator('#system-presets li.preset');
  await until(async () => (await cards.count()) === 3, 10000, 'three system presets');
  for (const name of ['landscape_vivid', 'portrait_pro', 'product_clean']) {
    const card = page.locator('#system-presets li.preset', { hasText: name });
    const { after } = await waitPreview(card, name);
    assert.match(await after.getAttribute('src'), /^\/api\/presets\/[0-9a-f-]{36}\/preview\/after\.jpg$/);
  }
  assert.ok(asked >= 2, `asked again after the 503 (${asked})`);
  await page.unroute(`**/api/presets/${vivid.id}/preview/after.jpg`);
  assert.ok(await page.getByRole('button', { name: 'Use as default: portrait_pro' }).isDisabled(), 'the default of a new user');
  await page.getByRole('button', { name: 'Use as default: product_clean' }).click();
  await page.getByText('New photos will be edited with product_clean.').waitFor();
  assert.equal((await apiGet('/api/me')).default_preset, 'product_clean');
  assert.match(await page.locator('#default-preset').textContent(), /product_clean/);
  assert.ok(await page.getByRole('button', { name: 'Use as default: product_clean' }).isDisabled());
});

test('a preset made from a workflow file; an invalid graph shows the error at its node', async () => {
  await page.getByRole('button', { name: 'New preset' }).click();
  await page.getByLabel('Workflow JSON file (ComfyUI API format)').setInputFiles(file('bad.json', BAD));
  // the file's graph is listed node by node, its name offered as the preset's
  await page.locator('#graph-nodes li[data-node="2"]', { hasText: 'ImageInvert' }).waitFor();
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'bad');
  await page.getByLabel('Name', { exact: true }).fill(NAME);
  await page.getByRole('button', { name: 'Save preset' }).click();
  const bad = page.locator('#graph-nodes li[data-node="2"]');
  await bad.locator('.node-errors').waitFor();
  assert.match(await bad.locator('.node-errors').textContent(), /Linked node does not exist.*'9'/);
  assert.equal(await page.locator('#graph-nodes .node-errors').count(), 1, 'only node 2 has an error');
  assert.match(await page.locator('#graph-errors').textContent(), /errors at node 2/);
  assert.equal(await ownPreset(), undefined, 'nothing saved');
  // a class user presets may not use: the prompt-level error names its node
  await page.getByLabel('Workflow JSON', { exact: true }).fill(JSON.stringify({ ...INVERT, 5: node('KSampler', {}) }));
  await page.getByRole('button', { name: 'Save preset' }).click();
  await page.locator('#graph-nodes li[data-node="5"] .node-errors').waitFor();
  assert.equal(await page.locator('#graph-nodes .node-errors').count(), 1, 'only node 5 has an error');
  // text that is not JSON is refused in the page
  await page.getByLabel('Workflow JSON', { exact: true }).fill('{"1": {');
  await page.getByRole('button', { name: 'Save preset' }).click();
  await page.locator('#graph-errors', { hasText: 'The workflow is not valid JSON' }).waitFor();
  assert.equal(await ownPreset(), undefined, 'nothing saved');

  await page.getByLabel('Workflow JSON file (ComfyUI API format)').setInputFiles(file('inverted.json', INVERT));
  await until(async () => (await page.locator('#graph-nodes .node-errors').count()) === 0, 5000, 'the errors to clear');
  await page.getByLabel('Description').fill('Negative, for night shots');
  await page.getByRole('button', { name: 'Save preset' }).click();
  await page.getByText(`Saved ${NAME} (version 1).`).waitFor();
  const p = await ownPreset();
  assert.ok(p, 'saved');
  assert.equal(p.is_public, false);
  assert.deepEqual((await apiGet(`/api/presets/${p.id}`)).workflow_json, INVERT);
  // its preview: rendered by the worker through POST /api/previews
  const card = page.locator('#own-presets li.preset', { hasText: NAME });
  const { after } = await waitPreview(card, NAME);
  assert.match(await after.getAttribute('src'), /^\/api\/previews\/[0-9a-f-]{36}\/after\.jpg$/);
});

test('an edited graph is previewed before it is saved', async () => {
  await page.getByRole('button', { name: `Edit ${NAME}` }).click();
  await page.getByRole('heading', { name: `Edit ${NAME}` }).waitFor();
  await page.getByLabel('Workflow JSON', { exact: true }).fill(JSON.stringify(SCALED, null, 2));
  await page.locator('#graph-nodes li[data-node="4"]', { hasText: 'ImageScale' }).waitFor();
  await page.getByRole('button', { name: 'Preview before saving' }).click();
  const { after } = await waitPreview(page.locator('#editor'), 'the edited graph');
  // the edited graph ran (64 x 48), not the saved one (the sample's size)
  assert.deepEqual(await after.evaluate((el) => [el.naturalWidth, el.naturalHeight]), [64, 48]);
  assert.equal((await ownPreset()).version, 1, 'not saved');
  await page.getByRole('button', { name: 'Close' }).click();
});

test('published, a second user finds it by search, rates and adopts it', async () => {
  await page.getByRole('button', { name: `Publish ${NAME}` }).click();
  await page.getByText(`${NAME} is published in the marketplace.`).waitFor();
  assert.equal((await ownPreset()).is_public, true);
  await page.getByRole('button', { name: `Unpublish ${NAME}` }).waitFor();

  await signIn(BOB);
  const card = page.locator('#market li.preset', { hasText: NAME });
  await card.waitFor();
  await page.getByLabel('Search the marketplace').fill('zebra');
  await page.getByText('No published preset matches.').waitFor();
  await page.getByLabel('Search the marketplace').fill('night NEGATIVE');
  await card.waitFor();
  await page.getByLabel('Sort by').selectOption('downloads');
  await card.waitFor();
  await card.getByLabel(`Rating for ${NAME}`).selectOption('4');
  await card.getByRole('button', { name: `Rate ${NAME}` }).click();
  await page.getByText(`You rated ${NAME} 4 of 5.`).waitFor();
  await card.getByText('You rated it 4 of 5.').waitFor();
  await card.getByRole('button', { name: `Adopt ${NAME}` }).click();
  await page.getByText(`Adopted ${NAME}: new photos will be edited with it.`).waitFor();
  await card.getByText('You adopted version 1.').waitFor();
  const p = (await apiGet('/api/presets?scope=public')).presets.find((x) => x.name === NAME);
  assert.equal(p.my_rating, 4);
  assert.equal(p.rating_count, 1);
  assert.equal(p.downloads, 1);
  assert.equal(p.adopted_version, 1);
  assert.equal((await apiGet('/api/me')).default_preset, NAME);
  assert.match(await page.locator('#default-preset').textContent(), new RegExp(NAME));
  assert.match(await card.textContent(), /rated 4\.0 \(1\) · 1 download(?!s)/);
  // a marketplace preset previews on demand
  await card.getByRole('button', { name: `Preview ${NAME}` }).click();
  await waitPreview(card, `${NAME} in the marketplace`);
});

test('the author changes the graph; the adopter accepts the update', async () => {
  await signIn(ADA);
  await page.getByRole('button', { name: `Edit ${NAME}` }).click();
  await page.getByLabel('Workflow JSON', { exact: true }).fill(JSON.stringify(SCALED));
  await page.getByRole('button', { name: 'Save preset' }).click();
  await page.getByText(`Saved ${NAME} (version 2).`).waitFor();

  await signIn(BOB);
  const card = page.locator('#market li.preset', { hasText: NAME });
  await card.getByText('Version 2 is available.').waitFor();
  await card.getByRole('button', { name: `Accept update of ${NAME}` }).click();
  await page.getByText(`Your photos now use version 2 of ${NAME}.`).waitFor();
  await card.getByText('You adopted version 2.').waitFor();
  assert.equal(await card.getByText('Version 2 is available.').count(), 0);
  const p = (await apiGet('/api/presets?scope=public')).presets.find((x) => x.name === NAME);
  assert.equal(p.adopted_version, 2);
  assert.equal(p.update_available, false);
});

test('the marketplace sorts by rating or by downloads', async () => {
  // Bob (signed in) publishes two presets; their numbers are set in the
  // database (ratings and downloads from many users would take long)
  const me = await apiGet('/api/me');
  for (const name of ['Bob Mono', 'Bob Warm']) {
    const r = await page.request.post(`${stack.url}/api/presets`, { headers: { 'X-CSRF-Token': me.csrf_token },
      data: { name, workflow_json: INVERT } });
    assert.equal(r.status(), 201, await r.text());
    const { id } = await r.json();
    const u = await page.request.patch(`${stack.url}/api/presets/${id}`, { headers: { 'X-CSRF-Token': me.csrf_token },
      data: { is_public: true } });
    assert.equal(u.status(), 200, await u.text());
  }
  stack.psql("UPDATE presets SET rating_avg = 4.5, downloads = 2 WHERE name = 'Bob Mono'");
  stack.psql("UPDATE presets SET rating_avg = 2, downloads = 9 WHERE name = 'Bob Warm'");
  await signIn(ADA);
  const names = () => page.locator('#market li.preset h3').allTextContents();
  await until(async () => (await names()).length === 2, 5000, 'two presets of Bob');
  assert.deepEqual(await names(), ['Bob Mono', 'Bob Warm'], 'best rated first');
  await page.getByLabel('Sort by').selectOption('downloads');
  assert.deepEqual(await names(), ['Bob Warm', 'Bob Mono'], 'most downloaded first');
  await page.getByLabel('Search the marketplace').fill('warm');
  assert.deepEqual(await names(), ['Bob Warm']);
});

test('a preset made from pasted text is deleted, then restored', async () => {
  await page.getByRole('button', { name: 'New preset' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Scratch');
  await page.getByLabel('Workflow JSON', { exact: true }).fill(JSON.stringify(INVERT));
  await page.locator('#graph-nodes li[data-node="3"]', { hasText: 'SaveImage' }).waitFor();
  await page.getByRole('button', { name: 'Save preset' }).click();
  await page.getByText('Saved Scratch (version 1).').waitFor();
  // the default preset is not deleted
  await page.getByRole('button', { name: 'Use as default: Scratch' }).click();
  await page.getByText('New photos will be edited with Scratch.').waitFor();
  await page.getByRole('button', { name: 'Delete Scratch' }).click();
  await page.getByText('Scratch is your default preset: choose another one first.').waitFor();
  await page.getByRole('button', { name: 'Use as default: landscape_vivid' }).click();
  await page.getByText('New photos will be edited with landscape_vivid.').waitFor();
  await page.getByRole('button', { name: 'Delete Scratch' }).click();
  await page.getByText('Scratch is deleted. You can restore it below.').waitFor();
  assert.equal(await page.locator('#own-presets li.preset', { hasText: 'Scratch' }).count(), 0);
  const own = async () => (await apiGet('/api/presets?scope=own')).presets.find((p) => p.name === 'Scratch');
  assert.equal((await own()).is_active, false);
  await page.getByText('Deleted presets').click();
  await page.getByRole('button', { name: 'Restore Scratch' }).click();
  await page.getByText('Scratch is restored.').waitFor();
  await page.locator('#own-presets li.preset', { hasText: 'Scratch' }).waitFor();
  assert.equal((await own()).is_active, true);
});

test('a preview on a photo of the watched folder', async () => {
  await signIn(ADA);
  await until(async () => (await apiGet('/api/jobs?status=completed')).jobs.length === 1, 60000, 'coffee.png processed');
  await page.reload();
  await page.getByRole('heading', { name: 'Marketplace' }).waitFor();
  const option = page.locator('#preview-source option', { hasText: 'coffee.png' });
  await option.waitFor({ state: 'attached' });
  await page.getByLabel('Previews are made on').selectOption({ label: 'My photo: coffee.png' });
  const card = page.locator('#system-presets li.preset', { hasText: 'landscape_vivid' });
  const sampleSrc = await card.locator('img[alt$=", after"]').getAttribute('src');
  await card.getByRole('button', { name: 'Preview landscape_vivid' }).click();
  await until(async () => (await card.locator('img[alt$=", after"]').getAttribute('src')) !== sampleSrc, 30000, 'the preview on coffee.png');
  const { before } = await waitPreview(card, 'landscape_vivid on coffee.png');
  assert.match(await before.getAttribute('src'), /^\/api\/previews\/[0-9a-f-]{36}\/before\.jpg$/);
  // coffee.png is 600 x 400 (the sample photo is 512 x 512)
  assert.deepEqual(await before.evaluate((el) => [el.naturalWidth, el.naturalHeight]), [600, 400]);
});

test('the page is labelled, fits 390 px and passes axe-core', async () => {
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
  assert.deepEqual(unlabelled, []);
  await page.getByRole('button', { name: `Edit ${NAME}` }).click(); // the editor open too
  await page.locator('#graph-nodes li').first().waitFor();
  const found = [];
  for (const viewport of [{ width: 1280, height: 900 }, { width: 390, height: 844 }]) {
    await page.setViewportSize(viewport);
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth),
      `#/presets scrolls sideways at ${viewport.width} px`);
    for (const v of await axe(page)) found.push(`${viewport.width}px: ${v}`);
    // CA_SCREENSHOTS=<folder>: the page as the test leaves it, for docs/img
    if (process.env.CA_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.CA_SCREENSHOTS, `presets-${viewport.width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  assert.deepEqual(found, []);
});

test('no console errors but the expected answers', () => {
  // the invalid graphs' 400s, and a system preview still rendering (503 preview_pending)
  const expected = (e) => /status of 400/.test(e) && /\/api\/presets\)$/.test(e)
    || /status of 503/.test(e) && /\/api\/presets\/[0-9a-f-]+\/preview\/after\.jpg\)$/.test(e);
  assert.deepEqual(browser.errors.filter((e) => !expected(e)), []);
});
