// The app's wasm uses WebAssembly SIMD. In a browser without it the start-up script says so in
// the page and starts nothing (the compute worker and its wasm never load), instead of failing
// without a word. The
// test takes SIMD away by making WebAssembly.validate refuse every module, as such a browser
// refuses the start-up script's one-instruction SIMD module.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, launch, screenshot } from './browser.mjs';

test('without WebAssembly SIMD the page says what is missing and starts no worker', async () => {
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page, context } = browser;
    await context.addInitScript(() => {
      WebAssembly.validate = () => false;
    });
    // (The page's own wasm may be preloaded by index.html; the worker's is loaded by the app.)
    const worker = [];
    page.on('request', (r) => {
      if (/\/worker[^/]*$/.test(new URL(r.url()).pathname)) worker.push(r.url());
    });
    page.on('worker', (w) => worker.push(w.url()));
    await page.goto(new URL('/?backend=cpu', BASE_URL).href);
    const note = page.getByTestId('no-simd');
    await note.waitFor({ timeout: 30_000 });
    assert.match(await note.innerText(), /needs WebAssembly SIMD, which this browser does not have/);
    assert.equal(await note.getAttribute('role'), 'alert');
    await page.waitForTimeout(1_000);
    assert.equal(await page.getByTestId('prompt').count(), 0, 'the app did not start');
    assert.deepEqual(worker, [], 'no compute worker was started');
    await screenshot(page, 'no-simd');
  } finally {
    await browser.close();
  }
});

test('with WebAssembly SIMD the same check lets the app start', async () => {
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page } = browser;
    await page.goto(new URL('/?backend=cpu', BASE_URL).href);
    await page.getByTestId('prompt').waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId('no-simd').count(), 0);
  } finally {
    await browser.close();
  }
});
