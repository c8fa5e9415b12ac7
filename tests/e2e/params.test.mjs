// The page's URL parameters and the Mask button: `panels=` shows only the panels it names,
// `theme=` sets the colour scheme, `autorun=1` runs the URL's prompt once the model is loaded,
// `spans=all` decodes past the prompt's masked spans (the span stop unticked); Mask replaces the
// selected words with the next sentinel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BASE_URL, download, launch, screenshot, waitStatus } from './browser.mjs';

const MODEL = 'models/switchscope-mini/';
const reference = JSON.parse(readFileSync(new URL('../fixtures/switchscope-mini/reference.json', import.meta.url), 'utf8'));

function appUrl(params) {
  const url = new URL('/', BASE_URL);
  url.searchParams.set('model', MODEL);
  url.searchParams.set('backend', 'cpu');
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
}

/** Which panels the page shows, by the names `panels=` uses. */
async function panels(page) {
  const present = async (selector) => (await page.locator(selector).count()) > 0;
  return {
    prompt: await present('[data-testid="prompt"]'),
    grid: await present('[data-testid="routing-grid"]'),
    load: await present('#load-title'),
    whatif: await present('[data-testid="what-if-factor"]'),
    shards: await present('[data-testid="shard-panel"]'),
    perf: await present('[data-testid="performance"]'),
    export: await present('[data-testid="permalink"]'),
    offline: await present('[data-testid="make-offline"]'),
  };
}

test('panels=, theme= and autorun=1', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    const prompt = 'The <extra_id_0> is in the garden.';
    await page.goto(appUrl({ panels: 'prompt, grid,load', theme: 'light', autorun: '1', prompt, max_new_tokens: '4' }));
    // Nothing is clicked: the run starts by itself once the model is loaded.
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    assert.equal(await page.getByTestId('prompt').inputValue(), prompt);
    assert.ok((await page.getByTestId('output').innerText()).trim().length > 0);
    assert.ok((await page.getByTestId('route-cell').count()) > 0);
    assert.deepEqual(await panels(page), {
      prompt: true,
      grid: true,
      load: true,
      whatif: false,
      shards: false,
      perf: false,
      export: false,
      offline: false,
    });
    const scheme = () =>
      page.evaluate(() => ({
        theme: document.documentElement.dataset.theme,
        bg: getComputedStyle(document.documentElement).getPropertyValue('--bg').trim(),
        colorScheme: getComputedStyle(document.documentElement).colorScheme,
      }));
    assert.deepEqual(await scheme(), { theme: 'light', bg: '#fbfbfa', colorScheme: 'light' });
    await screenshot(page, 'params-light-panels');

    // Dark, every panel (no panels=), and no autorun: the page waits for Run.
    await page.goto(appUrl({ theme: 'dark', prompt }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.waitForTimeout(1000);
    assert.equal((await page.getByTestId('status').innerText()).trim(), 'idle', 'no run without autorun=1');
    assert.deepEqual(await scheme(), { theme: 'dark', bg: '#15171a', colorScheme: 'dark' });
    assert.ok(Object.values(await panels(page)).every(Boolean), 'every panel');
  } finally {
    await browser.close();
  }
});

test('Mask masks the selection; spans=all decodes past the prompt’s spans', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(appUrl({ spans: 'all', max_new_tokens: '24', prefetch: '0' }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    assert.equal(await page.getByTestId('stop-at-spans').isChecked(), false);

    // Mask: the selected words become the lowest sentinel not yet in the prompt; with nothing
    // selected, the sentinel goes in at the cursor.
    const box = page.getByTestId('prompt');
    const text = 'The old man walks in the park with his children.';
    await box.fill(text);
    const select = (word) => box.evaluate((el, w) => {
      const at = el.value.indexOf(w);
      el.focus();
      el.setSelectionRange(at, at + w.length);
    }, word);
    await select('old man');
    await page.getByTestId('mask').click();
    assert.equal(await box.inputValue(), 'The <extra_id_0> walks in the park with his children.');
    await select('his children');
    await page.getByTestId('mask').click();
    assert.equal(await box.inputValue(), 'The <extra_id_0> walks in the park with <extra_id_1>.');
    await box.evaluate((el) => {
      el.focus();
      el.setSelectionRange(3, 3);
    });
    await page.getByTestId('mask').click();
    assert.equal(await box.inputValue(), 'The<extra_id_2> <extra_id_0> walks in the park with <extra_id_1>.');

    // A prompt with one masked span whose greedy answer (PyTorch's, in the reference) goes on
    // past <extra_id_1>, the sentinel that ends it.
    const vocab = await (await fetch(new URL(`${MODEL}tokenizer.json`, new URL('/', BASE_URL)))).json();
    const endOfAnswer = vocab.added_tokens.find((t) => t.content === '<extra_id_1>')?.id;
    assert.ok(endOfAnswer !== undefined);
    const example = reference.examples.find(
      (ex) => !ex.text.includes('<extra_id_1>') && ex.shipped.output_ids.slice(0, -2).includes(endOfAnswer),
    );
    assert.ok(example, 'a reference prompt whose answer goes on past its span');
    await box.fill(example.text);
    const ids = async () => {
      await page.getByTestId('run').click();
      assert.equal(await waitStatus(page, ['done', 'error']), 'done');
      return JSON.parse(await download(page, 'export-json')).output_ids;
    };
    // spans=all: up to </s> or the token limit, past the sentinel that ends the last answer.
    const all = await ids();
    // The span stop, ticked: the same greedy answer, ending at that sentinel.
    await page.locator('details.settings > summary').click();
    await page.getByTestId('stop-at-spans').check();
    const stopped = await ids();
    assert.equal(stopped.at(-1), endOfAnswer, `${stopped}`);
    assert.equal(stopped.indexOf(endOfAnswer), stopped.length - 1);
    assert.deepEqual(all.slice(0, stopped.length), stopped);
    assert.ok(all.length > stopped.length, `spans=all goes on past the answer: ${all}`);
    assert.equal(await page.locator('[data-testid=filled] mark.answer').count(), 1);
    await screenshot(page, 'params-mask');
  } finally {
    await browser.close();
  }
});

test('the preset menu fills the prompt and its max new tokens', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(appUrl({}));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const preset = page.getByTestId('preset');
    const box = page.getByTestId('prompt');
    const tokens = page.getByTestId('max-new-tokens');
    // the default preset: a held-out verse, English to Spanish
    assert.equal(await preset.inputValue(), 'en-es');
    assert.match(await box.inputValue(), /^translate English to Spanish: /);
    assert.equal(await tokens.inputValue(), '64');
    assert.match(await page.getByTestId('preset-provenance').innerText(), /held-out verse.*not in the training data/);
    await screenshot(page, 'params-preset-default');

    await preset.selectOption('prose');
    assert.match(await box.inputValue(), /<extra_id_0>/);
    assert.equal(await tokens.inputValue(), '24');
    assert.match(await page.getByTestId('preset-provenance').innerText(), /in the training data/);

    // Typing makes it the user's own text; the URL's preset= chooses another start.
    await box.fill('translate Spanish to English: Y dijo Dios.');
    assert.equal(await preset.inputValue(), '');
    assert.equal(await page.getByTestId('preset-provenance').innerText(), '');
    await page.goto(appUrl({ preset: 'es-en' }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    assert.equal(await preset.inputValue(), 'es-en');
    assert.match(await box.inputValue(), /^translate Spanish to English: /);
    await page.goto(appUrl({ preset: 'fr-de' }));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'error');
    assert.match(await page.getByTestId('error').innerText(), /unknown preset="fr-de"/);
  } finally {
    await browser.close();
  }
});
