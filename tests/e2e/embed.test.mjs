// The embed: a host page on another origin drives it with postMessage and receives its events;
// a page on an origin that is not allowed gets no run and no reply; an error reaches an allowed
// host as switchscope:error, and never a host that is not allowed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { BASE_URL, launch, screenshot } from './browser.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const TIMEOUT = 300_000;
const appOrigin = new URL(BASE_URL).origin;

/**
 * Serves one host page that embeds the app, allowing `allowed` (default: the host itself) to
 * drive it; `params` are more of the embed's URL parameters.
 */
async function hostServer(allowed, params = {}) {
  const server = createServer((req, res) => {
    const src = new URL('/embed.html', BASE_URL);
    src.searchParams.set('model', MODEL);
    src.searchParams.set('origins', allowed ?? `http://127.0.0.1:${server.address().port}`);
    src.searchParams.set('backend', 'cpu');
    src.searchParams.set('theme', 'dark');
    for (const [k, v] of Object.entries(params)) src.searchParams.set(k, v);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>host</title>
<h1>An article about experts</h1>
<iframe id="app" src="${src.href}" width="720" height="480"></iframe>
<script>
  window.messages = [];
  addEventListener('message', (e) => { if (e.origin === ${JSON.stringify(appOrigin)}) window.messages.push(e.data); });
  window.send = (m) => document.getElementById('app').contentWindow.postMessage(m, ${JSON.stringify(appOrigin)});
</script>`);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

const servers = [];
after(() => servers.forEach((s) => s.close()));

test('a host on an allowed origin runs the embed and receives every event', async () => {
  const host = await hostServer();
  servers.push(host);
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(`http://127.0.0.1:${host.address().port}/`);
    await page.waitForFunction(() => window.messages.some((m) => m.type === 'switchscope:ready'), null, { timeout: TIMEOUT });
    await page.evaluate(() => window.send({ type: 'switchscope:run', prompt: 'The <extra_id_0> is in the garden.', settings: { max_new_tokens: 6, sampling: { mode: 'greedy' }, capacity_factor: null } }));
    await page.waitForFunction(() => window.messages.some((m) => m.type === 'switchscope:done' || m.type === 'switchscope:error'), null, { timeout: TIMEOUT });
    const messages = await page.evaluate(() => window.messages);
    const types = new Set(messages.map((m) => m.type));
    const error = messages.find((m) => m.type === 'switchscope:error');
    assert.equal(error, undefined, error?.message);
    for (const t of ['switchscope:ready', 'switchscope:token', 'switchscope:routing', 'switchscope:done', 'switchscope:resize']) {
      assert.ok(types.has(t), `received ${t}`);
    }
    const tokens = messages.filter((m) => m.type === 'switchscope:token');
    assert.deepEqual(tokens.map((m) => m.index), tokens.map((_, i) => i));
    assert.ok(tokens.length <= 6);
    const routing = messages.filter((m) => m.type === 'switchscope:routing');
    assert.equal(routing[0].index, -1, 'the encoder routing comes first');
    assert.ok(routing[0].routing.length > 0 && routing[0].routing.every((l) => l.stack === 'encoder'));
    assert.equal(routing.length, tokens.length + 1);
    const done = messages.find((m) => m.type === 'switchscope:done');
    const frame = page.frameLocator('#app');
    assert.equal(done.output, (await frame.getByTestId('output').innerText()).trim());
    // The prompt filled in, as the page shows it (one span: one answer in brackets).
    assert.match(done.filled, /^The \[[^\]]*\] is in the garden\.$/);
    assert.ok(await frame.getByTestId('routing-grid').isVisible());
    await screenshot(page, 'embed-host');
  } finally {
    await browser.close();
  }
});

test('a page on an origin that is not allowed gets no run and no reply', async () => {
  const allowed = await hostServer();
  servers.push(allowed);
  // The third page embeds the app with only the first host allowed.
  const third = await hostServer(`http://127.0.0.1:${allowed.address().port}`);
  servers.push(third);
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(`http://127.0.0.1:${third.address().port}/`);
    const frame = page.frameLocator('#app');
    await frame.locator('[data-testid="status"]', { hasText: 'idle' }).waitFor({ timeout: TIMEOUT });
    await page.evaluate(() => window.send({ type: 'switchscope:run', prompt: 'Nothing <extra_id_0> here.' }));
    await page.waitForTimeout(3000);
    assert.equal((await frame.getByTestId('status').innerText()).trim(), 'idle', 'no run');
    assert.deepEqual(await page.evaluate(() => window.messages), [], 'no reply, not even ready');
    assert.equal((await frame.getByTestId('output').innerText()).trim(), '');
  } finally {
    await browser.close();
  }
});

test('switchscope:error reaches an allowed host, and never a host that is not allowed', async () => {
  // An embed that cannot start: the URL asks for a token limit that is not a number.
  const bad = { max_new_tokens: 'lots' };
  const allowed = await hostServer(undefined, bad);
  servers.push(allowed);
  const foreign = await hostServer(`http://127.0.0.1:${allowed.address().port}`, bad);
  servers.push(foreign);
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(`http://127.0.0.1:${allowed.address().port}/`);
    await page.waitForFunction(() => window.messages.some((m) => m.type === 'switchscope:error'), null, { timeout: TIMEOUT });
    const errors = (await page.evaluate(() => window.messages)).filter((m) => m.type === 'switchscope:error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /max_new_tokens=lots in the URL is not a valid number/);
    const frame = page.frameLocator('#app');
    assert.equal((await frame.getByTestId('status').innerText()).trim(), 'error');
    assert.equal((await frame.getByTestId('error').innerText()).trim(), errors[0].message);

    // The same embed under a host it does not list: the page shows the error, the host hears nothing.
    await page.goto(`http://127.0.0.1:${foreign.address().port}/`);
    const other = page.frameLocator('#app');
    await other.locator('[data-testid="status"]', { hasText: 'error' }).waitFor({ timeout: TIMEOUT });
    assert.match(await other.getByTestId('error').innerText(), /max_new_tokens=lots/);
    await page.waitForTimeout(1000);
    assert.deepEqual(await page.evaluate(() => window.messages), [], 'no message, the error included');
  } finally {
    await browser.close();
  }
});
