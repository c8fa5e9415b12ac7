// The permalink, round trip: every setting changed through its control (max new tokens,
// sampling with temperature, top-k, top-p and seed, capacity factor, time per layer, span stop,
// prefetch, expert budget) and the URL-only ones the page was opened with (theme, panels) are
// in the link; a fresh page opened from it shows the same values, links to itself, and gives the
// same (sampled, seeded) output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, launch, screenshot, waitStatus } from './browser.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const PROMPT = 'The <extra_id_0> walks in the park with <extra_id_1> children & "friends".';
const PANELS = 'prompt,grid,export,shards';

/** What the settings' controls, the theme and the panels show. */
async function shown(page) {
  const value = (id) => page.getByTestId(id).inputValue();
  const checked = (id) => page.getByTestId(id).isChecked();
  return {
    prompt: await value('prompt'),
    max_new_tokens: await value('max-new-tokens'),
    sampling: await value('sampling'),
    temperature: await value('temperature'),
    top_k: await value('top-k'),
    top_p: await value('top-p'),
    seed: await value('seed'),
    capacity_factor: await value('capacity-factor'),
    budget: await value('budget'),
    prefetch: await checked('prefetch'),
    time_layers: await checked('time-layers'),
    stop_at_spans: await checked('stop-at-spans'),
    theme: await page.evaluate(() => document.documentElement.dataset.theme),
    panels: {
      grid: await page.getByTestId('routing-grid').count(),
      export: await page.getByTestId('permalink').count(),
      shards: await page.getByTestId('shard-panel').count(),
      load: await page.getByTestId('expert-load').count() + (await page.locator('#load-title').count()),
      whatif: await page.getByTestId('what-if-factor').count(),
      perf: await page.getByTestId('performance').count(),
      offline: await page.getByTestId('make-offline').count(),
    },
  };
}

/** Types into a number input as a user does; leaving it (Tab) commits the value (`change`). */
async function type(page, id, value) {
  await page.getByTestId(id).fill(value);
  await page.getByTestId(id).press('Tab');
}

async function run(page) {
  await page.getByTestId('run').click();
  assert.equal(await waitStatus(page, ['done', 'error']), 'done');
  return (await page.getByTestId('output').innerText()).trim();
}

test('the permalink carries every setting, and a page opened from it shows and does the same', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = browser;
    const url = new URL('/', BASE_URL);
    for (const [k, v] of Object.entries({ model: MODEL, backend: 'cpu', theme: 'dark', panels: PANELS })) {
      url.searchParams.set(k, v);
    }
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');

    await page.getByTestId('prompt').fill(PROMPT);
    await page.locator('details.settings > summary').click();
    await type(page, 'max-new-tokens', '6');
    await page.getByTestId('sampling').selectOption('sample');
    await type(page, 'temperature', '0.7');
    await type(page, 'top-k', '5');
    await type(page, 'top-p', '0.9');
    await type(page, 'seed', '42');
    await type(page, 'capacity-factor', '1.5');
    await page.getByTestId('time-layers').check();
    await page.getByTestId('stop-at-spans').uncheck();
    // Prefetch and the budget reload the model; they are changed last, so that nothing else
    // changes after them before the link is read.
    await page.getByTestId('prefetch').uncheck();
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await type(page, 'budget', '2');
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');

    const href = await page.getByTestId('permalink').getAttribute('href');
    const link = new URL(href);
    assert.equal(link.origin + link.pathname, new URL('/', BASE_URL).href);
    assert.deepEqual(Object.fromEntries(link.searchParams), {
      model: MODEL,
      backend: 'cpu',
      theme: 'dark',
      panels: PANELS,
      prompt: PROMPT,
      max_new_tokens: '6',
      capacity_factor: '1.5',
      time_layers: '1',
      spans: 'all',
      sampling: 'sample',
      temperature: '0.7',
      top_k: '5',
      top_p: '0.9',
      seed: '42',
      budget_mb: '2',
      prefetch: '0',
    });
    const before = await shown(page);
    assert.deepEqual(before, {
      prompt: PROMPT,
      max_new_tokens: '6',
      sampling: 'sample',
      temperature: '0.7',
      top_k: '5',
      top_p: '0.9',
      seed: '42',
      capacity_factor: '1.5',
      budget: '2',
      prefetch: false,
      time_layers: true,
      stop_at_spans: false,
      theme: 'dark',
      panels: { grid: 1, export: 1, shards: 1, load: 0, whatif: 0, perf: 0, offline: 0 },
    });
    const output = await run(page);
    assert.ok(output.length > 0);

    // A fresh page from the link (the same browser: the model comes from its cache).
    const again = await context.newPage();
    await again.goto(href);
    assert.equal(await waitStatus(again, ['idle', 'error']), 'idle');
    await again.locator('details.settings > summary').click();
    assert.deepEqual(await shown(again), before);
    assert.equal(await again.getByTestId('permalink').getAttribute('href'), href);
    assert.equal(await run(again), output, 'sampling with the same seed gives the same text');
    await screenshot(again, 'permalink-restored');
  } finally {
    await browser.close();
  }
});
