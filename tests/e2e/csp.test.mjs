// Security: the page and the embed run under a strict Content-Security-Policy (no inline script,
// `script-src 'self' 'wasm-unsafe-eval'`) without a single violation while they load and
// generate; the policy is really enforced (an injected inline script does not run). `?model=` on
// another origin loads only where the deployment lists that origin.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_URL, launch, waitStatus } from './browser.mjs';
import { allowingModelsFrom, faultServer } from './faultserver.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const DIST = join(dirname(fileURLToPath(import.meta.url)), '../../dist');

const servers = [];
after(() => servers.forEach((s) => s.close()));

/** Records every CSP violation reported to the document. */
async function recordViolations(page) {
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample }),
    );
  });
}

function policyOf(html) {
  return html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)"/)?.[1];
}

test('the built pages carry a strict policy and no inline script', async () => {
  for (const name of ['index.html', 'embed.html']) {
    const html = await readFile(join(DIST, name), 'utf8');
    const policy = policyOf(html);
    assert.ok(policy, `${name} has a Content-Security-Policy`);
    const scriptSrc = policy.split(';').map((d) => d.trim()).find((d) => d.startsWith('script-src'));
    assert.equal(scriptSrc, "script-src 'self' 'wasm-unsafe-eval'");
    assert.match(policy, /object-src 'none'/);
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, `${name} has no inline script`);
  }
});

for (const [page_, params] of [
  ['/', { backend: 'cpu' }],
  ['/', {}],
  ['/embed.html', { backend: 'cpu', origins: 'http://127.0.0.1:1' }],
]) {
  test(`${page_} ${JSON.stringify(params)} loads and generates without a CSP violation`, async () => {
    const browser = await launch({ webgpu: !params.backend });
    try {
      const { page } = browser;
      await recordViolations(page);
      const url = new URL(page_, BASE_URL);
      url.searchParams.set('model', MODEL);
      url.searchParams.set('max_new_tokens', '4');
      for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
      await page.goto(url.href);
      assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
      await page.getByTestId('prompt').fill('A <extra_id_0> test.');
      await page.getByTestId('run').click();
      assert.equal(await waitStatus(page, ['done', 'error']), 'done');
      assert.deepEqual(await page.evaluate(() => window.__violations), []);
      // Enforced, not only declared: an injected inline script is blocked and reported.
      await page.evaluate(() => {
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true;';
        document.head.append(s);
      });
      await page.waitForFunction(() => window.__violations.length > 0, null, { timeout: 10_000 });
      assert.equal(await page.evaluate(() => window.__inlineRan), undefined);
      assert.equal((await page.evaluate(() => window.__violations))[0].directive, 'script-src-elem');
    } finally {
      await browser.close();
    }
  });
}

test('a model on another origin loads only where the deployment allows that origin', async () => {
  // The model's origin: the model files with CORS.
  const models = await faultServer();
  models.headers = { 'access-control-allow-origin': '*' };
  servers.push(models);
  // The app's origin, once as shipped and once configured to allow the model's origin.
  const app = await faultServer();
  servers.push(app);
  const modelUrl = new URL(MODEL, models.url).href;
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page } = browser;
    await recordViolations(page);
    const url = new URL('/', app.url);
    url.searchParams.set('model', modelUrl);
    url.searchParams.set('backend', 'cpu');
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'error');
    assert.match(await page.getByTestId('error').innerText(), /is on another origin .*only models on this site, or on origins this deployment allows/);
    assert.ok(!models.requests.length, 'nothing was fetched from the other origin');

    // The deployment lists the origin (as `<meta name="switchscope-model-origins">` in
    // web/index.html would, with the policy the build derives from it).
    app.fault = allowingModelsFrom(new URL(models.url).origin);
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle', await page.getByTestId('error').innerText().catch(() => ''));
    assert.ok(models.requests.some((p) => p.endsWith('manifest.json')));
    assert.deepEqual(await page.evaluate(() => window.__violations), []);
  } finally {
    await browser.close();
  }
});
