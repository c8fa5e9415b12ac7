// Against an independent reference, in the browser: for each held-out prompt of
// tests/fixtures/switchscope-mini/reference.json, the page (through its controls, with the
// settings the reference was made with: its max new tokens, greedy, no span stop) gives
// PyTorch's token ids and output, and routes every prompt token and every decoding step to
// PyTorch's expert in every sparse layer (the shipped weights, computed by transformers) — on
// WebGPU and on the CPU path. On WebGPU with every expert resident (`resident=all`, a warm
// session): the decode loop that chooses experts and picks tokens on the device, which waits on
// the host about once per answer, not per token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_URL, download, launch, waitStatus } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const reference = JSON.parse(readFileSync(join(here, '../fixtures/switchscope-mini/reference.json'), 'utf8'));
// The reference is made for the shipped default model.
const MODEL = 'models/switchscope-mini/';

async function matchesPytorch(webgpu) {
  const browser = await launch({ webgpu });
  try {
    const { page } = browser;
    const url = new URL('/', BASE_URL);
    const params = {
      model: MODEL,
      backend: webgpu ? 'webgpu' : 'cpu',
      spans: 'all',
      sampling: 'greedy',
      max_new_tokens: String(reference.generate.max_new_tokens),
      ...(webgpu ? { resident: 'all' } : {}),
    };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    await page.goto(url.href);
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    assert.equal((await page.getByTestId('backend').innerText()).trim(), webgpu ? 'webgpu' : 'cpu');
    // The manifest the reference was made from is the one the page loads.
    const manifest = await page.evaluate(async (m) => {
      const bytes = await (await fetch(`${m}manifest.json`)).arrayBuffer();
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
    }, MODEL);
    assert.equal(manifest, reference.manifest_sha256, 'reference.json belongs to the served model');
    assert.ok(reference.examples.length >= 5);
    const layers = reference.sparse_layers.map((l) => `${l.stack} ${l.block}`);
    for (const ex of reference.examples) {
      const name = `${ex.source} (${webgpu ? 'webgpu' : 'cpu'})`;
      await page.getByTestId('prompt').fill(ex.text);
      await page.getByTestId('run').click();
      assert.equal(await waitStatus(page, ['done', 'error']), 'done', name);
      const trace = JSON.parse(await download(page, 'export-json'));
      assert.deepEqual(trace.input_ids, ex.input_ids, `${name}: the page's tokenizer`);
      // The page's ids are those generated, after the decoder start token.
      const want = ex.shipped.output_ids;
      assert.equal(want[0], reference.decoder_start_token_id);
      assert.deepEqual(trace.output_ids, want.slice(1), `${name}: greedy ids`);
      assert.deepEqual(want, ex.f32.output_ids, `${name}: the float32 checkpoint's ids too`);
      assert.deepEqual(
        trace.routing.map((l) => `${l.stack} ${l.block}`),
        layers,
        `${name}: sparse layers`,
      );
      for (const theirs of ex.shipped.routing) {
        const ours = trace.routing.find((l) => l.stack === theirs.stack && l.block === theirs.block);
        // Decoding step i routes decoder input i (the start token, then each generated token
        // but the last); PyTorch's teacher-forced routing covers every input.
        const n = theirs.stack === 'encoder' ? ex.input_ids.length : trace.output_ids.length;
        assert.equal(ours.expert.length, n, `${name}: ${theirs.stack} ${theirs.block} tokens`);
        const expected = theirs.expert.slice(0, n);
        const t = ours.expert.findIndex((e, i) => e !== expected[i]);
        assert.equal(
          t,
          -1,
          `${name}: ${theirs.stack} ${theirs.block} token ${t}: expert ${ours.expert[t]} here, ${expected[t]} in PyTorch (top-2 gap there ${theirs.gap?.[t]})`,
        );
      }
      if (webgpu) {
        const work = page.getByTestId('device-work');
        const waits = Number(await work.getAttribute('data-host-waits'));
        assert.ok(waits <= 0.25, `${name}: host waits per token, every expert resident: ${await work.innerText()}`);
      }
      // The text the page shows is the decoded answer.
      assert.ok((await page.getByTestId('output').innerText()).trim().length > 0, name);
    }
  } finally {
    await browser.close();
  }
}

test('WebGPU: the default model gives PyTorch ids and routing for the reference prompts', async () => {
  await matchesPytorch(true);
});

test('CPU: the default model gives PyTorch ids and routing for the reference prompts', async () => {
  await matchesPytorch(false);
});
