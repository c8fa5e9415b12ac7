// A first visit, as a new visitor's browser makes it: service worker allowed, one run on the CPU
// path, every response counted at the wire by a proxy in front of the server. No file's full
// body may cross the network twice (the service worker precaches what the page already
// downloaded), and the app's wasm arrives Brotli-compressed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, launch, waitStatus } from './browser.mjs';
import { countingProxy, repeatedBodies, wireOverDistinct } from './countingproxy.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';

test('a first visit with one run downloads every file once, the app compressed', async () => {
  const proxy = await countingProxy(BASE_URL);
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    const url = new URL('/', proxy.url);
    url.searchParams.set('model', MODEL);
    url.searchParams.set('backend', 'cpu');
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    // The service worker has installed (its precache complete) and the page's background work
    // (unused prefetches) has settled.
    await page.evaluate(async () => {
      const registration = await navigator.serviceWorker.ready;
      return registration.active?.state;
    });
    await page.waitForTimeout(2_000);

    const wasm = proxy.log.filter((e) => e.path.endsWith('.wasm') && e.bytes > 0);
    assert.equal(wasm.length, 2, `the page's and the worker's wasm: ${JSON.stringify(wasm)}`);
    for (const e of wasm) assert.equal(e.encoding, 'br', `${e.path} arrives Brotli-compressed`);
    assert.deepEqual(repeatedBodies(proxy.log), [], 'no file crosses the network twice');
    const { wire, distinct, ratio } = wireOverDistinct(proxy.log);
    console.log(
      `first visit: ${(wire / 1e6).toFixed(2)} MB over the wire / ${(distinct / 1e6).toFixed(2)} MB of distinct files = ${ratio.toFixed(3)} (${proxy.log.length} responses)`,
    );
  } finally {
    await browser.close();
    proxy.close();
  }
});
