// Faults a user meets on real networks and devices, each injected on purpose: a missing, corrupt
// or truncated expert file, a very slow one (progress moves, Stop cancels it), the network lost
// in the middle of a generation, a full storage quota, an invalid or future manifest, a file
// name that tries to leave the model directory, a lost GPU device, an over-long prompt and
// unusual Unicode. Each test checks the message names the cause, that the page recovers or
// stays usable, and that nothing corrupt is kept in the cache.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, screenshot, waitStatus } from './browser.mjs';
import { faultServer } from './faultserver.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const TIMEOUT = 300_000;
const PROMPT = 'The <extra_id_0> walks in the park with <extra_id_1> children.';

const server = await faultServer();
after(() => server.close());

function appUrl(params = {}) {
  const url = new URL('/', server.url);
  url.searchParams.set('model', MODEL);
  url.searchParams.set('backend', 'cpu');
  url.searchParams.set('prefetch', '0');
  url.searchParams.set('max_new_tokens', '8');
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
}

async function open(page, params) {
  await page.goto(appUrl(params));
  return waitStatus(page, ['idle', 'error']);
}

async function generate(page, prompt = PROMPT) {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('run').click();
  const end = await waitStatus(page, ['done', 'error']);
  if (end === 'error') return { error: (await page.getByTestId('error').innerText()).trim() };
  return { output: (await page.getByTestId('output').innerText()).trim() };
}

/** The model files in the app's model cache (paths under the model directory). */
async function cachedFiles(page) {
  return page.evaluate(async () => {
    const cache = await caches.open('switchscope-models-v1');
    return (await cache.keys()).map((r) => new URL(r.url).pathname.replace(/^.*\/models\/[^/]+\//, '')).sort();
  });
}

const isExpert = (path) => path.includes('/experts/');

async function withBrowser(options, body) {
  // The service worker is blocked so that every request reaches the fault server as sent.
  const browser = await launch({ serviceWorkers: 'block', ...options });
  try {
    await body(browser);
  } finally {
    server.fault = undefined;
    await browser.close();
  }
}

// The reference: the same prompt without faults.
let clean;
test('without faults the run gives the reference output', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    clean = await generate(page);
    assert.ok(clean.output, clean.error);
  });
});

test('a missing expert (HTTP 404) is named; the next run after it is back works', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    server.fault = (path) => (isExpert(path) ? { status: 404 } : undefined);
    const run = await generate(page);
    assert.match(run.error ?? '', /experts\/\w+\.b\d+\.e\d+\.safetensors is missing on the server \(HTTP 404\)/);
    assert.ok(await page.getByTestId('shard').evaluateAll((els) => els.some((e) => e.dataset.state === 'failed')));
    assert.deepEqual((await cachedFiles(page)).filter((f) => f.startsWith('experts/')), []);
    server.fault = undefined;
    assert.deepEqual(await generate(page), clean);
  });
});

test('a corrupt expert (sha256 mismatch) is refused, never cached, and fetched again later', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    server.fault = (path) =>
      isExpert(path)
        ? {
            transform: (bytes) => {
              const copy = Buffer.from(bytes);
              copy[copy.length - 1] ^= 0xff;
              return copy;
            },
          }
        : undefined;
    const run = await generate(page);
    assert.match(run.error ?? '', /experts\/\S+ does not match its sha256 \(corrupt\)/);
    assert.deepEqual((await cachedFiles(page)).filter((f) => f.startsWith('experts/')), []);
    server.fault = undefined;
    assert.deepEqual(await generate(page), clean);
    assert.ok((await cachedFiles(page)).some((f) => f.startsWith('experts/')), 'intact experts are cached');
  });
});

test('a truncated expert is named with its size and never cached', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    server.fault = (path) => (isExpert(path) ? { transform: (bytes) => bytes.subarray(0, bytes.length >> 1) } : undefined);
    const run = await generate(page);
    assert.match(run.error ?? '', /experts\/\S+ has \d+ bytes; the manifest says \d+ \(truncated\?\)/);
    assert.deepEqual((await cachedFiles(page)).filter((f) => f.startsWith('experts/')), []);
    server.fault = undefined;
    assert.deepEqual(await generate(page), clean);
  });
});

test('a very slow expert shows progress, and Stop cancels the download', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    let slow;
    server.fault = (path) => {
      if (!isExpert(path)) return undefined;
      slow ??= path;
      return { trickle: { bytes: 2048, everyMs: 100 } };
    };
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('run').click();
    const progress = page.getByTestId('download-progress');
    await progress.waitFor({ timeout: TIMEOUT });
    const first = await progress.innerText();
    await page.waitForFunction(
      (before) => {
        const now = document.querySelector('[data-testid="download-progress"]')?.textContent;
        return now && now !== before;
      },
      first,
      { timeout: 30_000 },
    );
    assert.match(first, /Downloading experts\/\S+: [\d.]+ of [\d.]+ kB/);
    await screenshot(page, 'fault-slow-download');
    await page.getByTestId('stop').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    assert.match(await page.getByTestId('notice').innerText(), /Stopped after 0 tokens, while an expert was downloading \(.*cancelled/);
    assert.equal(await progress.count(), 0, 'the progress line is gone');
    assert.deepEqual((await cachedFiles(page)).filter((f) => f.startsWith('experts/')), []);
    // Nothing is left half-done: the next run downloads normally.
    server.fault = undefined;
    assert.deepEqual(await generate(page), clean);
    assert.ok(slow);
  });
});

test('the network lost in the middle of a generation is named; the run works once it is back', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    // The encoder's experts arrive; then every connection drops.
    server.fault = (path) => (path.includes('/experts/decoder') ? { drop: true } : undefined);
    const run = await generate(page);
    assert.match(run.error ?? '', /experts\/decoder\.b\d+\.e\d+\.safetensors could not be fetched .*also on retry/);
    assert.ok((await page.getByTestId('route-cell').count()) > 0, 'the encoder routing is still shown');
    await page.getByTestId('prompt').fill('still usable');
    assert.equal(await page.getByTestId('prompt').inputValue(), 'still usable');
    server.fault = undefined;
    assert.deepEqual(await generate(page), clean);
  });
});

test('a full storage quota while making the model offline is explained and leaves nothing behind', async () => {
  await withBrowser({ webgpu: false }, async ({ page, context }) => {
    assert.equal(await open(page), 'idle');
    const before = await cachedFiles(page);
    const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', {
      origin: new URL(server.url).origin,
      quotaSize: usage + 1_500_000,
    });
    await page.getByTestId('make-offline').click();
    await page.getByTestId('offline-error').waitFor({ timeout: TIMEOUT });
    assert.match(await page.getByTestId('offline-error').innerText(), /not enough storage for the offline copy: the browser refused to keep \S+ \(QuotaExceededError\).*removed again/);
    assert.deepEqual(await cachedFiles(page), before, 'the entries added by the failed attempt are gone');
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(server.url).origin });
    assert.deepEqual(await generate(page), clean, 'the page still generates');
  });
});

for (const [name, change, message] of [
  ['not JSON', () => '{"format": "switchscope", ', /manifest\.json: manifest\.json is not valid JSON/],
  ['from a future version', (m) => ({ ...m, version: 99 }), /manifest\.json has format version 99; this build reads version 1/],
  ['with a `..` file name', (m) => ({ ...m, dense: '../../secret.safetensors', files: [...m.files, { ...m.files[0], name: '../../secret.safetensors' }] }), /file name "\.\.\/\.\.\/secret\.safetensors" has an empty, `\.` or `\.\.` segment/],
  ['with an absolute file name', (m) => ({ ...m, tokenizer: '/etc/passwd', files: [...m.files, { ...m.files[0], name: '/etc/passwd' }] }), /file name "\/etc\/passwd" is not a plain relative path/],
]) {
  test(`a manifest ${name} is refused with the reason, and not cached`, async () => {
    await withBrowser({ webgpu: false }, async ({ page }) => {
      server.fault = (path) =>
        path.endsWith('/manifest.json')
          ? {
              transform: (bytes) => {
                const out = change(JSON.parse(bytes.toString('utf8')));
                return typeof out === 'string' ? out : JSON.stringify(out);
              },
            }
          : undefined;
      assert.equal(await open(page), 'error');
      assert.match(await page.getByTestId('error').innerText(), message);
      assert.ok(!server.requests.some((p) => p.includes('secret') || p === '/etc/passwd'), 'no file outside the model was asked for');
      assert.ok(!(await cachedFiles(page)).includes('manifest.json'), 'the bad manifest is not cached');
      await page.getByTestId('prompt').fill('still usable');
      assert.equal(await page.getByTestId('prompt').inputValue(), 'still usable');
    });
  });
}

test('an over-long prompt is cut to the model limit with a notice', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    const long = `${'The expert reads every word of this long text again and again. '.repeat(120)}The <extra_id_0> end.`;
    const run = await generate(page, long);
    assert.ok(run.output !== undefined, run.error);
    assert.match(await page.getByTestId('notice').innerText(), /The prompt has \d{4} tokens; only the first 512 are used\./);
    const encoderCells = await page.getByTestId('route-cell').evaluateAll((els) => els.filter((e) => e.dataset.stack === 'encoder').length);
    assert.equal(encoderCells, 512 * 2, '512 tokens in each of the 2 sparse encoder layers');
  });
});

test('unusual Unicode (emoji, right-to-left, combining marks, NUL) runs like any text', async () => {
  await withBrowser({ webgpu: false }, async ({ page }) => {
    assert.equal(await open(page), 'idle');
    const prompt = 'Emoji 👩‍👩‍👧‍👦🧪 and עברית שלום and العربية, e\u0301\u0302 Z\u0336a\u0337l\u0338g\u0335o, a\u0000b <extra_id_0>.';
    const run = await generate(page, prompt);
    assert.ok(run.output !== undefined, run.error);
    assert.equal(await page.getByTestId('prompt').inputValue(), prompt, 'the prompt is kept as typed');
    assert.ok((await page.getByTestId('route-cell').count()) > 0);
    await screenshot(page, 'fault-unicode');
  });
});

test('a lost GPU device: the page switches to the CPU, loads the model again and gives the same text', async () => {
  await withBrowser({ webgpu: true }, async ({ page }) => {
    assert.equal(await open(page, { backend: 'webgpu', max_new_tokens: '64' }), 'idle');
    assert.equal((await page.getByTestId('backend').innerText()).trim(), 'webgpu');
    const onGpu = await generate(page);
    assert.ok(onGpu.output, onGpu.error);
    // Lose the device in the middle of the next run (a long one: many masked spans to fill).
    const long = Array.from({ length: 24 }, (_, i) => `word ${i} <extra_id_${i}>`).join(' ');
    await page.getByTestId('prompt').fill(long);
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['generating', 'done', 'error']), 'generating');
    const worker = page.workers().find((w) => w.url().includes('worker-boot'));
    assert.ok(worker, 'the compute worker');
    await worker.evaluate(() => self.switchscopeGpuDevice.destroy());
    await page.getByTestId('device-lost').waitFor({ timeout: TIMEOUT });
    // textContent, not innerText: the text as written, runs of spaces included.
    assert.match(
      await page.getByTestId('device-lost').textContent(),
      /^The GPU device was lost \(destroyed.*\)\. Switchscope switched to the CPU and loaded the model again; the run in progress was interrupted, run it again\.$/,
    );
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    assert.equal((await page.getByTestId('backend').innerText()).trim(), 'cpu');
    const onCpu = await generate(page);
    assert.deepEqual(onCpu, onGpu);
    await screenshot(page, 'fault-device-lost');
  });
});
