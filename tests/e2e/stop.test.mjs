// Stop while the model is decoding: the compute worker gives the event loop a turn after every
// token, so the page's `stop` is handled at the next token, and the run ends there with what it
// produced so far (the same tokens an unstopped run with the same seed starts with).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, download, launch, waitStatus } from './browser.mjs';

const PROMPT = 'The <extra_id_0> walked into the <extra_id_1> and the <extra_id_2> was';

function appUrl() {
  const url = new URL('/', BASE_URL);
  url.searchParams.set('model', 'models/switchscope-mini/');
  url.searchParams.set('backend', 'cpu');
  url.searchParams.set('prompt', PROMPT);
  url.searchParams.set('max_new_tokens', '256');
  url.searchParams.set('spans', 'all');
  url.searchParams.set('sampling', 'sample');
  url.searchParams.set('temperature', '1.5');
  url.searchParams.set('seed', '11');
  return url.href;
}

test('Stop during decoding ends the run at the next token', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(appUrl());
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    const outputIds = async () => JSON.parse(await download(page, 'export-json')).output_ids;

    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    const full = await outputIds();
    assert.ok(full.length >= 64, `the unstopped run is long enough to stop inside: ${full.length} tokens`);

    // Stop is pressed from inside the page as soon as the first token is on screen, so that the
    // test does not depend on how fast the browser is driven.
    await page.evaluate(() => {
      const text = () => document.querySelector('[data-testid="output"]')?.textContent.trim() ?? '';
      const before = text();
      new MutationObserver((_, observer) => {
        const status = document.querySelector('[data-testid="status"]')?.textContent;
        if (status === 'generating' && text() && text() !== before) {
          observer.disconnect();
          document.querySelector('[data-testid="stop"]').click();
        }
      }).observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    const notice = await page.getByTestId('notice').innerText();
    const n = Number(notice.match(/^Stopped after (\d+) tokens\.$/)?.[1]);
    assert.ok(n >= 1 && n <= 16, `stopped within a few tokens of the first: ${notice} (unstopped: ${full.length})`);
    assert.deepEqual(await outputIds(), full.slice(0, n));
  } finally {
    await browser.close();
  }
});
