// The shard panel under an expert budget smaller than the model: a long prompt takes experts
// through fetching, resident and evicted; loaded again, the ones fetched before are cached; and
// the byte summary equals the bytes of model files the network answered (counted from the
// network, the service worker kept out).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, launch, screenshot, waitStatus } from './browser.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
// Several languages, sources and token types: many experts in every sparse layer.
const PROMPT = [
  'In the beginning God created the heaven and the earth, and the <extra_id_0> was without form.',
  'En el principio creó Dios los cielos y la tierra.',
  "Le manuel de l'utilisateur explique comment <extra_id_1> le système.",
  'def route(tokens): return [argmax(p) for p in probabilities(tokens)]',
  '3, 14, 159, 2653, 58979, 323846, 2643383 and 27950288.',
].join(' ');

/** Records every state each shard cell has had (added cells and every change of data-state). */
async function recordShardStates(page) {
  await page.addInitScript(() => {
    window.__shardStates = {};
    const note = (el, state) => {
      if (!el.dataset || el.dataset.testid !== 'shard' || !state) return;
      const key = `${el.dataset.stack}.b${el.dataset.block}.e${el.dataset.expert}`;
      (window.__shardStates[key] ??= []).push(state);
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes') {
          note(r.target, r.oldValue);
          note(r.target, r.target.getAttribute('data-state'));
        } else {
          for (const n of r.addedNodes) {
            if (n.nodeType !== 1) continue;
            note(n, n.dataset?.state);
            n.querySelectorAll?.('[data-testid="shard"]').forEach((s) => note(s, s.dataset.state));
          }
        }
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'], attributeOldValue: true });
  });
}

test('with a small expert budget the shard panel shows fetching, resident, evicted and cached, and the bytes the network sent', async () => {
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page, context } = browser;
    const manifestUrl = new URL(`${MODEL}manifest.json`, new URL('/', BASE_URL)).href;
    const manifest = await (await fetch(manifestUrl)).json();
    const total = manifest.files.reduce((s, f) => s + f.bytes, 0);
    const sizes = new Map(manifest.files.map((f) => [new URL(f.name, manifestUrl).href, f.bytes]));
    // Model files the network answered (the manifest itself is not one of the model's files).
    const network = [];
    context.on('requestfinished', async (request) => {
      const url = request.url().split('?')[0];
      if (!sizes.has(url)) return;
      const response = await request.response();
      if (response?.status() === 200) network.push({ url, bytes: (await response.body()).length });
    });
    await recordShardStates(page);
    const url = new URL('/', BASE_URL);
    // 1 MB holds one expert decoded to f32 on the CPU: every new expert evicts the last.
    for (const [k, v] of Object.entries({ model: MODEL, backend: 'cpu', prefetch: '0', budget_mb: '1', max_new_tokens: '12' })) {
      url.searchParams.set(k, v);
    }
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const summary = page.getByTestId('shard-summary');
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    // Responses are counted as they finish.
    await page.waitForTimeout(500);

    const seen = new Set(Object.values(await page.evaluate(() => window.__shardStates)).flat());
    for (const state of ['remote', 'fetching', 'resident', 'evicted']) {
      assert.ok(seen.has(state), `a shard was ${state} (seen: ${[...seen]})`);
    }
    assert.ok(!seen.has('failed'));
    const fetched = network.filter((r) => r.url.includes('/experts/'));
    assert.ok(fetched.length > 2, 'several experts were fetched');
    assert.equal(new Set(fetched.map((r) => r.url)).size, fetched.length, 'each expert once: evicted ones come back from the cache');
    for (const r of network) assert.equal(r.bytes, sizes.get(r.url), r.url);
    const sent = network.reduce((s, r) => s + r.bytes, 0);
    assert.equal(Number(await summary.getAttribute('data-downloaded')), sent);
    assert.equal(Number(await summary.getAttribute('data-total')), total);
    const text = await summary.innerText();
    assert.match(text, new RegExp(`^Downloaded ${(sent / 1e6).toFixed(2)} MB of ${(total / 1e6).toFixed(2)} MB \\(${Math.round((100 * sent) / total)} %\\)`));
    const states = await page.getByTestId('shard').evaluateAll((els) => els.map((e) => e.dataset.state));
    const count = (s) => states.filter((x) => x === s).length;
    assert.match(text, new RegExp(`· ${count('resident')} resident, ${count('cached')} cached, ${count('remote')} remote, ${count('evicted')} evicted, ${count('failed')} failed$`));
    assert.ok(count('evicted') > 0 && count('resident') > 0);
    // The budget held: the experts on the device never took more than 1 MiB.
    const resident = page.getByTestId('resident-bytes');
    const peak = Number(await resident.getAttribute('data-peak'));
    assert.ok(peak > 0 && peak <= 1 << 20, `peak ${peak}`);
    assert.ok(Number(await resident.getAttribute('data-bytes')) <= peak);
    const requests = (await page.getByTestId('performance').innerText()).match(/(\d+) \((\d+) hits, (\d+) fetches, (\d+) evictions\)/);
    assert.ok(requests, 'the performance panel counts expert requests');
    const [, total_requests, hits, fetches, evictions] = requests.map(Number);
    assert.ok(fetches >= fetched.length, `${fetches} fetches, ${fetched.length} over the network`);
    assert.ok(evictions >= count('evicted') && evictions > 0);
    // The shard panel's live hit rate counted, event by event, what the store counted.
    const cache = page.getByTestId('cache-hit-rate');
    assert.equal(Number(await cache.getAttribute('data-requests')), total_requests);
    assert.equal(Number(await cache.getAttribute('data-hits')), hits);
    assert.match(
      await cache.innerText(),
      new RegExp(`^Expert cache \\(next-use\\+pins\\): ${hits} of ${total_requests} requests found their expert resident \\(\\d+ % hit rate\\)$`),
    );
    await screenshot(page, 'shards-budget');

    // Loaded again (a new budget): what was fetched is now in the browser's cache, nothing
    // comes over the network, and the summary says so.
    const fetchedNames = new Set(fetched.map((r) => r.url.slice(r.url.indexOf('experts/'))));
    network.length = 0;
    await page.locator('details.settings > summary').click();
    await page.getByTestId('budget').fill('1.5');
    await page.getByTestId('budget').press('Tab');
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const cells = await page.getByTestId('shard').evaluateAll((els) =>
      els.map((e) => ({ name: `experts/${e.dataset.stack}.b${e.dataset.block}.e${e.dataset.expert}.safetensors`, state: e.dataset.state })),
    );
    for (const c of cells) assert.equal(c.state, fetchedNames.has(c.name) ? 'cached' : 'remote', c.name);
    await page.waitForTimeout(500);
    assert.deepEqual(network, [], 'the reload took every file from the cache');
    assert.equal(Number(await summary.getAttribute('data-downloaded')), 0);
  } finally {
    await browser.close();
  }
});

test('cache= picks the store’s policy, which the shard panel names; an unknown one is a clear error', async () => {
  const browser = await launch({ webgpu: false, serviceWorkers: 'block' });
  try {
    const { page } = browser;
    const at = (params) => {
      const url = new URL('/', BASE_URL);
      for (const [k, v] of Object.entries({ model: MODEL, backend: 'cpu', budget_mb: '1', max_new_tokens: '6', ...params })) {
        url.searchParams.set(k, v);
      }
      return url.href;
    };
    await page.goto(at({ cache: 'lru' }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    const cache = page.getByTestId('cache-hit-rate');
    assert.ok(Number(await cache.getAttribute('data-requests')) > 0);
    assert.match(await cache.innerText(), /^Expert cache \(lru\): \d+ of \d+ requests found their expert resident/);

    await page.goto(at({ cache: 'mru' }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'error');
    assert.match(await page.getByTestId('error').innerText(), /cache= in the URL: unknown cache policy "mru"/);
  } finally {
    await browser.close();
  }
});
