// Installed and offline: the service worker keeps the app shell, "Make available offline"
// keeps the model; offline, the app reloads and generates the same text. With only part of the
// model cached, a prompt that needs a missing expert says which one. A second visit downloads
// no expert shard the first one downloaded. A rebuilt app is offered and picked up after reload.
// "Remove offline copy" empties the model cache again and says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_URL, launch, screenshot, waitStatus } from './browser.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const TIMEOUT = 300_000;
const DIST = join(dirname(fileURLToPath(import.meta.url)), '../../dist');
const PROMPT = 'The <extra_id_0> of the house <extra_id_1> open.';

function appUrl() {
  const url = new URL('/', BASE_URL);
  url.searchParams.set('model', MODEL);
  url.searchParams.set('backend', 'cpu');
  return url.href;
}

/** Opens the app and waits until the service worker controls it and the model is loaded. */
async function openControlled(page) {
  await page.goto(appUrl());
  await page.evaluate(() => navigator.serviceWorker.ready);
  if (!(await page.evaluate(() => navigator.serviceWorker.controller !== null))) {
    await page.reload();
  }
  assert.ok(await page.evaluate(() => navigator.serviceWorker.controller !== null), 'controlled by the service worker');
  assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
}

async function generate(page) {
  await page.getByTestId('prompt').fill(PROMPT);
  await page.getByTestId('run').click();
  const end = await waitStatus(page, ['done', 'error']);
  if (end === 'error') return { error: await page.getByTestId('error').innerText() };
  return { output: (await page.getByTestId('output').innerText()).trim() };
}

test('made available offline, the app reloads and generates the same text without a network', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = browser;
    await openControlled(page);
    await page.getByTestId('make-offline').click();
    await page.getByTestId('offline-status').waitFor({ timeout: TIMEOUT });
    const note = await page.getByTestId('offline-status').innerText();
    assert.match(note, /Available offline: \d+ files/);
    assert.match(note, /Storage before: .*after: /);
    assert.equal(await page.getByTestId('shard').evaluateAll((els) => els.filter((e) => e.dataset.state === 'remote').length), 0);
    const online = await generate(page);
    assert.ok(online.output, online.error);

    await context.setOffline(true);
    await page.reload();
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const offline = await generate(page);
    assert.equal(offline.error, undefined);
    assert.equal(offline.output, online.output);
    await screenshot(page, 'pwa-offline');
  } finally {
    await browser.close();
  }
});

test('a second visit downloads no expert shard again, unused prefetches included', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = browser;
    // Expert shards the worker downloaded (not those the service worker or the cache answered).
    const downloaded = [];
    context.on('requestfinished', async (request) => {
      const response = await request.response();
      if (response && !response.fromServiceWorker() && !request.serviceWorker() && request.url().includes('/experts/')) {
        downloaded.push(request.url());
      }
    });
    await openControlled(page);
    // Pre-gating prefetches the next sparse layer's likely expert; for this prompt some of those
    // guesses are not used by any token.
    await page.getByTestId('prompt').fill('In the <extra_id_0> God created the <extra_id_1> and the earth.');
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    const first = [...new Set(downloaded)];
    assert.ok(first.length > 0, 'the first visit downloads experts');
    // Every downloaded shard ends up cached, used or not (unused prefetches in the background).
    await page.waitForFunction(
      async (urls) => (await Promise.all(urls.map((u) => caches.match(u)))).every(Boolean),
      first,
      { timeout: 30_000 },
    );
    downloaded.length = 0;
    await page.reload();
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.getByTestId('prompt').fill('In the <extra_id_0> God created the <extra_id_1> and the earth.');
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    assert.deepEqual(downloaded.filter((u) => first.includes(u)), [], 'nothing downloaded twice');
  } finally {
    await browser.close();
  }
});

test('offline with part of the model, a missing expert is named and nothing crashes', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = browser;
    // Loading caches the manifest, the dense weights and the tokenizer, but no expert.
    await openControlled(page);
    await context.setOffline(true);
    await page.reload();
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const run = await generate(page);
    assert.match(run.error ?? '', /experts\/\w+\.b\d+\.e\d+\.safetensors is not available offline/);
    // The page still works: the what-is-loaded panel and the prompt respond.
    assert.ok(await page.getByTestId('shard').evaluateAll((els) => els.some((e) => e.dataset.state === 'failed')));
    await page.getByTestId('prompt').fill('still usable');
    assert.equal(await page.getByTestId('prompt').inputValue(), 'still usable');
    await screenshot(page, 'pwa-partial-offline');
  } finally {
    await browser.close();
  }
});

test('a rebuilt app is offered and picked up after reload', async () => {
  const swPath = join(DIST, 'sw.js');
  const original = readFileSync(swPath, 'utf8');
  const version = original.match(/"version":"([0-9a-f]+)"/)?.[1];
  assert.ok(version, 'dist/sw.js is stamped with a version');
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await openControlled(page);
    const before = await page.evaluate(() => caches.keys());
    assert.ok(before.includes(`switchscope-shell-${version}`));
    // A new build: same shell, new version.
    writeFileSync(swPath, original.replace(`"version":"${version}"`, `"version":"${version}-next"`));
    await page.evaluate(() => navigator.serviceWorker.getRegistration().then((r) => r.update()));
    await page.getByTestId('update').waitFor({ timeout: 60_000 });
    await screenshot(page, 'pwa-update-offered');
    await Promise.all([page.waitForEvent('load', { timeout: 60_000 }), page.getByTestId('update-reload').click()]);
    await waitStatus(page, ['idle', 'error']);
    const after = await page.evaluate(() => caches.keys());
    assert.ok(after.includes(`switchscope-shell-${version}-next`), after.join());
    assert.ok(!after.includes(`switchscope-shell-${version}`), 'the old shell cache is deleted');
  } finally {
    writeFileSync(swPath, original);
    await browser.close();
  }
});

test('Remove offline copy empties the model cache and says so', async () => {
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page } = browser;
    const manifestUrl = new URL(`${MODEL}manifest.json`, new URL('/', BASE_URL)).href;
    const manifest = await (await fetch(manifestUrl)).json();
    const modelFiles = [...manifest.files.map((f) => new URL(f.name, manifestUrl).href), manifestUrl].sort();
    const cached = () =>
      page.evaluate(async () => (await (await caches.open('switchscope-models-v1')).keys()).map((r) => r.url).sort());
    const shardStates = () => page.getByTestId('shard').evaluateAll((els) => [...new Set(els.map((e) => e.dataset.state))]);
    await page.goto(appUrl());
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.getByTestId('make-offline').click();
    const status = page.getByTestId('offline-status');
    await status.waitFor({ timeout: TIMEOUT });
    assert.match(await status.innerText(), new RegExp(`^Available offline: ${manifest.files.length} files`));
    assert.deepEqual(await cached(), modelFiles);
    assert.deepEqual(await shardStates(), ['cached']);

    await page.getByTestId('remove-offline').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="offline-status"]')?.textContent.startsWith('Removed'), null, { timeout: TIMEOUT });
    const mb = (manifest.files.reduce((s, f) => s + f.bytes, 0) / 1e6).toFixed(1);
    assert.match(
      await status.innerText(),
      new RegExp(`^Removed the offline copy: ${manifest.files.length} files \\(${mb.replace('.', '\\.')} MB\\)\\. Storage before: .+; after: .+\\.$`),
    );
    assert.deepEqual(await cached(), [], 'the model cache is empty');
    assert.deepEqual(await shardStates(), ['remote']);
    assert.equal(await page.getByTestId('offline-progress').count(), 0);
    // The page still works, from the network.
    const run = await generate(page);
    assert.ok(run.output, run.error);
  } finally {
    await browser.close();
  }
});
