// The page's tokenizer (switchscope-text, with the browser's Unicode normalization) gives the ids
// Hugging Face `tokenizers` gives for texts where normalization matters: compatibility forms,
// combining marks, ligatures, scripts without spaces, emoji, runs of whitespace, sentinels.
// tests/fixtures/switchscope-mini/tokenize.json holds `tokenizers`' ids; the crate's parity test
// keeps that file equal to what `tokenizers` gives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BASE_URL, download, launch, waitStatus } from './browser.mjs';

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/switchscope-mini/tokenize.json', import.meta.url), 'utf8'),
);

test('the page tokenizes as tokenizers does', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    const url = new URL('/', BASE_URL);
    url.searchParams.set('model', 'models/switchscope-mini/');
    url.searchParams.set('backend', 'cpu');
    url.searchParams.set('max_new_tokens', '1');
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    assert.ok(fixture.cases.length >= 5);
    for (const { text, ids } of fixture.cases) {
      await page.getByTestId('prompt').fill(text);
      await page.getByTestId('run').click();
      assert.equal(await waitStatus(page, ['done', 'error']), 'done', text);
      const trace = JSON.parse(await download(page, 'export-json'));
      assert.deepEqual(trace.input_ids, ids, JSON.stringify(text));
    }
  } finally {
    await browser.close();
  }
});
