// The first vertical slice: the page computes softmax(relu(x·w)) with burn in a Web Worker,
// on WebGPU when the browser has it and on the CPU backend otherwise, and the two agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, launch, screenshot } from './browser.mjs';

const TOLERANCE = 1e-5;
// Includes compiling the wasm and, on SwiftShader, the first WebGPU pipelines.
const DONE_TIMEOUT = 180_000;

async function probe(path, { webgpu }) {
  const browser = await launch({ webgpu });
  try {
    const { page } = browser;
    await page.goto(new URL(path, BASE_URL).href);
    // The probe lives in the Diagnostics panel and runs when it is opened.
    await page.locator('details summary', { hasText: 'Diagnostics' }).click();
    const status = page.getByTestId('probe-status');
    await status.and(page.locator('[data-state="done"], [data-state="error"]')).waitFor({ timeout: DONE_TIMEOUT });
    const state = await status.getAttribute('data-state');
    if (state === 'error') {
      return { state, error: await page.getByTestId('probe-error').innerText(), page, browser };
    }
    const backend = (await page.getByTestId('probe-backend').innerText()).trim();
    const result = JSON.parse(await page.getByTestId('probe-result').getAttribute('data-result'));
    const match = (await page.getByTestId('probe-match').innerText()).trim();
    return { state, backend, result, match, page, browser };
  } catch (e) {
    throw new Error(`${e.message}\nbrowser console:\n${browser.console.join('\n')}`);
  }
}

function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i])));
}

let webgpuResult;

test('?backend=webgpu computes on webgpu and matches the CPU', async () => {
  const run = await probe('/?backend=webgpu', { webgpu: true });
  try {
    assert.equal(run.state, 'done', run.error);
    assert.equal(run.backend, 'webgpu');
    assert.equal(run.match, 'yes');
    assert.equal(run.result.length, 4 * 8);
    await run.page.getByTestId('adapter').waitFor();
    await screenshot(run.page, 'backend-webgpu');
    webgpuResult = run.result;
  } finally {
    await run.browser.close();
  }
});

test('auto on a software adapter (SwiftShader) takes the CPU and says why', async () => {
  const run = await probe('/', { webgpu: true });
  try {
    assert.equal(run.state, 'done', run.error);
    assert.equal(run.backend, 'cpu');
    assert.equal(run.match, 'yes');
    const reason = await run.page.getByTestId('probe-backend-reason').innerText();
    assert.match(reason, /software renderer \(SwiftShader\), slower than the CPU path; backend=webgpu uses it anyway/);
    await screenshot(run.page, 'backend-auto-software');
  } finally {
    await run.browser.close();
  }
});

test('without WebGPU the page falls back to the CPU with the same result', async () => {
  const run = await probe('/', { webgpu: false });
  try {
    assert.equal(run.state, 'done', run.error);
    assert.equal(run.backend, 'cpu');
    assert.equal(run.match, 'yes');
    const reason = await run.page.getByTestId('probe-backend-reason').innerText();
    assert.match(reason, /adapter|WebGPU/);
    await screenshot(run.page, 'backend-cpu-fallback');
    assert.ok(webgpuResult, 'the WebGPU test ran first');
    assert.ok(maxAbsDiff(run.result, webgpuResult) <= TOLERANCE);
  } finally {
    await run.browser.close();
  }
});

test('?backend=cpu uses the CPU even where WebGPU exists', async () => {
  const run = await probe('/?backend=cpu', { webgpu: true });
  try {
    assert.equal(run.state, 'done', run.error);
    assert.equal(run.backend, 'cpu');
    assert.match(await run.page.getByTestId('probe-backend-reason').innerText(), /requested/);
  } finally {
    await run.browser.close();
  }
});

test('?backend=webgpu without WebGPU is a clear error, not a crash', async () => {
  const run = await probe('/?backend=webgpu', { webgpu: false });
  try {
    assert.equal(run.state, 'error');
    assert.match(run.error, /WebGPU was requested/);
    await screenshot(run.page, 'backend-webgpu-missing');
  } finally {
    await run.browser.close();
  }
});

test('an unknown ?backend= value is named in the error', async () => {
  const run = await probe('/?backend=cuda', { webgpu: true });
  try {
    assert.equal(run.state, 'error');
    assert.match(run.error, /"cuda"/);
  } finally {
    await run.browser.close();
  }
});
