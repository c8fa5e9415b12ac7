// The capacity what-if, through its slider: at the lowest factor the prompt's tokens overflow
// the experts, so the grid crosses tokens out (data-expert="-1"), the expert-load rows count the
// same tokens against the what-if's capacity, and the banner names the factor; the JSON and CSV
// exports carry exactly what the grid shows; "Show the run's own routing" restores the run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, download, launch, parseRoutingCsv, routeCells, screenshot, waitStatus } from './browser.mjs';

const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const PROMPT =
  'In the beginning God created the heaven and the earth. And the earth was without form, and <extra_id_0> darkness was upon the face of the deep.';
const FACTOR = 0.25;

/** The grid, the JSON export and the CSV export agree cell for cell. */
async function exportsAgreeWithTheGrid(page, cells) {
  const json = JSON.parse(await download(page, 'export-json'));
  const csv = parseRoutingCsv((await download(page, 'export-csv')).toString('utf8'));
  assert.equal(csv.header, 'stack,block,token,piece,expert,chosen,probability,dropped');
  assert.equal(csv.rows.length, cells.length, 'one CSV line per grid cell');
  let n = 0;
  for (const layer of json.routing) {
    for (let t = 0; t < layer.expert.length; t++) {
      const at = (c) => c.stack === layer.stack && c.block === layer.block && c.token === t;
      const cell = cells.find(at);
      const row = csv.rows.find(at);
      const where = `${layer.stack} ${layer.block} token ${t}`;
      assert.ok(cell && row, where);
      assert.equal(layer.expert[t], cell.expert, `JSON ${where}`);
      assert.equal(layer.chosen[t], cell.chosen, `JSON ${where}`);
      assert.equal(row.expert, cell.expert, `CSV ${where}`);
      assert.equal(row.chosen, cell.chosen, `CSV ${where}`);
      assert.equal(row.dropped, cell.expert === -1, `CSV ${where}`);
      assert.equal(row.probability, layer.weight[t], `CSV ${where}`);
      n++;
    }
  }
  assert.equal(n, cells.length, 'the JSON routes every grid cell');
  return json;
}

test('capacity what-if: dropped tokens in the grid, the load rows, the banner and both exports; Reset restores', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    const url = new URL('/', BASE_URL);
    for (const [k, v] of Object.entries({ model: MODEL, backend: 'cpu', max_new_tokens: '8', prefetch: '0' })) {
      url.searchParams.set(k, v);
    }
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    const own = await routeCells(page);
    const ownJson = await exportsAgreeWithTheGrid(page, own);
    assert.equal(ownJson.what_if_capacity_factor, null);
    assert.equal(await page.getByTestId('what-if-banner').count(), 0);

    // The slider, by keyboard: Home is its lowest factor.
    const slider = page.getByTestId('what-if-factor');
    assert.equal(await slider.getAttribute('min'), String(FACTOR));
    await slider.focus();
    await page.keyboard.press('Home');
    const banner = page.getByTestId('what-if-banner');
    await banner.waitFor({ timeout: 60_000 });
    assert.equal((await banner.textContent()).trim(), `Showing a what-if with capacity factor ${FACTOR}.`);

    const cells = await routeCells(page);
    assert.equal(cells.length, own.length, 'the same tokens and layers');
    const dropped = cells.filter((c) => c.expert === -1);
    assert.ok(dropped.length > 0, 'a token is dropped');
    for (const c of cells) {
      assert.equal(c.crossed, c.expert === -1, `the cross of ${c.stack} ${c.block} token ${c.token}`);
      assert.equal(c.label, c.expert === -1 ? '×' : String(c.expert));
    }
    // The first sparse layer sees the same input, so its router chooses as before: only
    // capacity differs there (later layers see the dropped tokens' changed states).
    const first = (list) => list.filter((c) => c.stack === 'encoder' && c.block === own[0].block).map((c) => c.chosen);
    assert.deepEqual(first(cells), first(own));

    // Expert load: tokens per expert (the router's choices), the what-if's capacity and the
    // tokens it drops, per layer; the balance loss from the exported probabilities.
    const experts = await page.locator('.legend-item').count();
    assert.ok(experts >= 2);
    const json = await exportsAgreeWithTheGrid(page, cells);
    assert.equal(json.what_if_capacity_factor, FACTOR);
    const rows = await page.getByTestId('expert-load').evaluateAll((els) =>
      els.map((e) => ({
        stack: e.dataset.stack,
        block: Number(e.dataset.block),
        text: e.textContent,
        label: e.querySelector('svg').getAttribute('aria-label'),
      })),
    );
    assert.equal(rows.length, json.routing.length);
    for (const row of rows) {
      const layer = cells.filter((c) => c.stack === row.stack && c.block === row.block);
      const counts = Array(experts).fill(0);
      for (const c of layer) counts[c.chosen]++;
      assert.equal(row.label, `tokens per expert: [${counts.join(', ')}]`, `${row.stack} ${row.block}`);
      const route = json.routing.find((l) => l.stack === row.stack && l.block === row.block);
      const mean = (e) => route.probs.reduce((s, p) => s + p[e], 0) / layer.length;
      const loss = experts * counts.reduce((s, n, e) => s + (n / layer.length) * mean(e), 0);
      const shown = Number(row.text.match(/balance loss ([\d.]+)/)[1]);
      assert.ok(Math.abs(shown - loss) <= 0.005 + 1e-9, `${row.stack} ${row.block}: balance loss ${shown} vs ${loss}`);
      if (row.stack === 'encoder') {
        const capacity = Math.ceil((layer.length / experts) * FACTOR);
        assert.equal(route.capacity, capacity);
        const drops = layer.filter((c) => c.expert === -1).length;
        assert.match(row.text, new RegExp(`· capacity ${capacity} · dropped ${drops}$`));
        // Top-1 with capacity, in position order: an expert keeps its first `capacity` tokens.
        for (let e = 0; e < experts; e++) {
          const mine = layer.filter((c) => c.chosen === e).sort((a, b) => a.token - b.token);
          assert.deepEqual(
            mine.map((c) => c.expert),
            mine.map((_, i) => (i < capacity ? e : -1)),
            `${row.stack} ${row.block} expert ${e}`,
          );
        }
      }
    }
    assert.ok(
      rows.some((r) => r.stack === 'encoder' && !/dropped 0$/.test(r.text)),
      'an encoder row counts dropped tokens',
    );
    await screenshot(page, 'what-if-dropped');

    // Back to the run's own routing.
    await page.getByTestId('what-if-reset').click();
    await banner.waitFor({ state: 'detached' });
    assert.deepEqual(await routeCells(page), own);
    const back = await exportsAgreeWithTheGrid(page, own);
    assert.equal(back.what_if_capacity_factor, null);
    assert.deepEqual(back.routing, ownJson.routing);
    assert.ok(await page.getByTestId('what-if-reset').isDisabled());
  } finally {
    await browser.close();
  }
});
