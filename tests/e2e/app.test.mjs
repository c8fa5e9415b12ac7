// The app as a user meets it: a prompt with a masked span, streamed output, the routing grid
// (one cell per token and sparse layer, agreeing with the exported trace), the shard panel,
// experts fetched only when routed to, the same greedy text on the CPU fallback, exports that
// parse, clear errors for bad input; main-thread long tasks while generating are recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, BASE_URL, launch, screenshot, waitStatus } from './browser.mjs';

// The model directory the tests load (the shipped default unless told otherwise).
const MODEL = process.env.SWITCHSCOPE_MODEL ?? 'models/switchscope-mini/';
const PROMPT = 'The <extra_id_0> walks in the park with <extra_id_1> children.';

function appUrl(params = {}) {
  const url = new URL('/', BASE_URL);
  url.searchParams.set('model', MODEL);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
}

/** Loads the app, runs PROMPT, returns what the page shows. */
async function generate(browser, params) {
  const { page } = browser;
  const expertRequests = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.includes('/experts/')) expertRequests.push(path.slice(path.indexOf('experts/')));
  });
  // Long tasks on the page's main thread while generating.
  await page.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  });
  await page.goto(appUrl(params));
  const loaded = await waitStatus(page, ['idle', 'error']);
  if (loaded === 'error') throw new Error(await page.getByTestId('error').innerText());
  await page.getByTestId('prompt').fill(PROMPT);
  const start = await page.evaluate(() => performance.now());
  await page.getByTestId('run').click();
  const end = await waitStatus(page, ['done', 'error']);
  if (end === 'error') throw new Error(await page.getByTestId('error').innerText());
  const stop = await page.evaluate(() => performance.now());
  const longTasks = (await page.evaluate(() => window.__longTasks)).filter(
    (t) => t.start >= start && t.start <= stop,
  );
  const cells = await page.getByTestId('route-cell').evaluateAll((els) =>
    els.map((e) => ({
      stack: e.dataset.stack,
      block: Number(e.dataset.block),
      token: Number(e.dataset.token),
      expert: Number(e.dataset.expert),
    })),
  );
  const shards = await page.getByTestId('shard').evaluateAll((els) =>
    els.map((e) => ({
      stack: e.dataset.stack,
      block: Number(e.dataset.block),
      expert: Number(e.dataset.expert),
      state: e.dataset.state,
    })),
  );
  return {
    backend: (await page.getByTestId('backend').innerText()).trim(),
    output: (await page.getByTestId('output').innerText()).trim(),
    filled: (await page.getByTestId('filled').innerText()).trim(),
    answers: await page.locator('[data-testid=filled] mark.answer').count(),
    cells,
    shards,
    expertRequests,
    longTasks,
  };
}

async function download(page, testId) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testId).click()]);
  return readFileSync(await file.path());
}

let webgpuOutput;

test('WebGPU: a masked prompt streams an answer and every routing decision is shown', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const run = await generate(browser, { prefetch: '0', backend: 'webgpu' });
    const { page } = browser;
    assert.equal(run.backend, 'webgpu');
    assert.ok(run.output.length > 0, 'some text was generated');
    webgpuOutput = run.output;

    // The prompt is shown filled in, one highlighted answer per masked span, and the answer
    // stops once both spans have one: <extra_id_2>, the sentinel after the prompt's last, can
    // only be the final token.
    assert.match(run.filled, /^The .* walks in the park with .* children\.$/s);
    assert.ok(!run.filled.includes('<extra_id_'), run.filled);
    assert.equal(run.answers, 2);
    const vocab = await (await fetch(new URL(`${MODEL}tokenizer.json`, new URL('/', BASE_URL)))).json();
    const endOfAnswer = vocab.added_tokens.find((t) => t.content === '<extra_id_2>')?.id;
    assert.ok(endOfAnswer !== undefined, 'the model has <extra_id_2>');

    // The exported trace is the worker's: the grid has one cell per token and sparse layer,
    // each with the expert the trace names.
    const trace = JSON.parse(await download(page, 'export-json'));
    assert.ok(trace.input_ids.length > 3 && trace.output_ids.length > 0);
    assert.ok(!trace.output_ids.slice(0, -1).includes(endOfAnswer), `${trace.output_ids}`);
    let expected = 0;
    for (const layer of trace.routing) {
      const tokens = layer.stack === 'encoder' ? trace.input_ids.length : trace.output_ids.length;
      assert.equal(layer.expert.length, tokens, `${layer.stack} ${layer.block} routes every token`);
      expected += tokens;
      for (let t = 0; t < tokens; t++) {
        const cell = run.cells.find((c) => c.stack === layer.stack && c.block === layer.block && c.token === t);
        assert.ok(cell, `a cell for ${layer.stack} ${layer.block} token ${t}`);
        assert.equal(cell.expert, layer.expert[t]);
      }
    }
    assert.equal(run.cells.length, expected);
    assert.ok(trace.routing.some((l) => l.stack === 'encoder') && trace.routing.some((l) => l.stack === 'decoder'));

    // With prefetch off, the expert shards fetched are exactly the routed experts.
    const routed = new Set();
    for (const layer of trace.routing) {
      for (const e of layer.expert) if (e >= 0) routed.add(`experts/${layer.stack}.b${layer.block}.e${e}.safetensors`);
    }
    assert.deepEqual(new Set(run.expertRequests), routed);
    assert.equal(run.expertRequests.length, routed.size, 'each shard is fetched once');
    // The shard panel agrees: routed experts are resident, the others were never fetched.
    for (const s of run.shards) {
      const name = `experts/${s.stack}.b${s.block}.e${s.expert}.safetensors`;
      assert.equal(s.state, routed.has(name) ? 'resident' : 'remote', name);
    }

    // CSV: a header and one line per cell; PNG: a PNG.
    const csv = download(page, 'export-csv').then((b) => b.toString('utf8').trim().split('\n'));
    assert.equal((await csv).length, run.cells.length + 1);
    assert.equal((await csv)[0], 'stack,block,token,piece,expert,chosen,probability,dropped');
    const png = await download(page, 'export-png');
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);

    // The Performance panel counts the decode steps' device work: kernels, and the host
    // waiting, at most for each sparse decoder layer's routing and for the token (fewer once
    // a layer's experts are all resident and the device chooses them).
    const work = page.getByTestId('device-work');
    assert.ok(Number(await work.getAttribute('data-dispatches')) > 10, await work.innerText());
    const waits = Number(await work.getAttribute('data-host-waits'));
    assert.ok(waits > 0 && waits <= 3, await work.innerText());

    // Hovering a cell shows the router's distribution for that token.
    await page.getByTestId('route-cell').first().hover();
    await page.getByTestId('token-detail').waitFor();
    await screenshot(page, 'app-webgpu-done');

    // The permalink restores prompt and settings.
    const link = await page.getByTestId('permalink').getAttribute('href');
    assert.equal(new URL(link).searchParams.get('prompt'), PROMPT);
  } finally {
    await browser.close();
  }
});

test('CPU fallback: the same greedy text without WebGPU (and per-layer times)', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const run = await generate(browser, { time_layers: '1' });
    assert.equal(run.backend, 'cpu');
    assert.match(await browser.page.getByTestId('backend-reason').innerText(), /WebGPU|adapter/);
    assert.ok(webgpuOutput, 'the WebGPU test ran first');
    assert.equal(run.output, webgpuOutput);
    // Main-thread tasks over 50 ms while generating are recorded (tests/e2e/artifacts/
    // long-tasks.json), not asserted: wall-clock task lengths on a shared 2-core machine vary
    // with whatever else runs, and timings are measurements, not test verdicts.
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, 'long-tasks.json'), JSON.stringify(run.longTasks, null, 2));
    console.log(`long tasks while generating (CPU backend): ${JSON.stringify(run.longTasks)}`);
    // No kernels on the CPU; with layers timed, the host also waits after every block.
    const work = browser.page.getByTestId('device-work');
    assert.equal(Number(await work.getAttribute('data-dispatches')), 0, await work.innerText());
    const times = await browser.page.getByTestId('layer-times').innerText();
    assert.match(times, /encoder 0: [\d.]+ .*decoder 0: [\d.]+/);
    await screenshot(browser.page, 'app-cpu-done');
  } finally {
    await browser.close();
  }
});

test('an empty prompt is a clear error and the page stays usable', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(appUrl({ backend: 'cpu' }));
    await waitStatus(page, ['idle']);
    await page.getByTestId('prompt').fill('   ');
    await page.getByTestId('run').click();
    await waitStatus(page, ['error']);
    assert.match(await page.getByTestId('error').innerText(), /empty/);
    await page.getByTestId('prompt').fill('Hello <extra_id_0>.');
    await page.getByTestId('run').click();
    assert.equal(await waitStatus(page, ['done', 'error']), 'done');
    await screenshot(page, 'app-empty-prompt-recovered');
  } finally {
    await browser.close();
  }
});

test('a model URL on another origin is refused with the reason', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(new URL('/?model=https://example.invalid/m/', BASE_URL).href);
    await waitStatus(page, ['error']);
    assert.match(await page.getByTestId('error').innerText(), /another origin/);
  } finally {
    await browser.close();
  }
});
