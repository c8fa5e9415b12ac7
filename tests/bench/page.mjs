// The in-page benchmarks that `cargo xtask bench` runs (measurements, not tests), through the app
// itself in headless Chromium, so that they time what a user waits for.
//
//   node tests/bench/page.mjs speed --backend webgpu|cpu [--runs 5] [--new-tokens 32] [--all-resident] --out FILE
//     One page session: a warm-up run (experts arrive, kernels compile), then RUNS runs of the
//     same prompt, greedy; per run the app's own figures: encoder ms, time to first token,
//     tokens/s after the first token, and the decode steps' dispatches, uploads and host
//     waits per token (the Performance panel). --all-resident: every expert made resident at
//     load (`resident=all`, a warm session's steady state).
//   node tests/bench/page.mjs overhead --out FILE
//     WebGPU's fixed costs in the page, with a one-line kernel: a dispatch submitted and read
//     back (mapAsync) 30 times, and 200 dispatches submitted one by one.
//   node tests/bench/page.mjs coldstart --backend webgpu|cpu [--runs 3] --out FILE
//     Time from navigation to the first generated token with `?autorun=1`: in a fresh profile
//     (empty HTTP cache, no service worker, no stored shards), then reloaded in the same profile
//     (the service worker and the shard cache warm). RUNS fresh profiles. Each profile reaches
//     the app through a counting proxy: the first visit's bytes over the wire against the bytes
//     of the distinct files it needed, each counted as it crossed the wire (goal: 1.00).
//
// The app is served by the caller, at SWITCHSCOPE_URL.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BASE_URL, launch, waitStatus } from '../e2e/browser.mjs';
import { countingProxy, wireOverDistinct } from '../e2e/countingproxy.mjs';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    backend: { type: 'string', default: 'webgpu' },
    runs: { type: 'string', default: '5' },
    'new-tokens': { type: 'string', default: '32' },
    model: { type: 'string', default: 'models/switchscope-mini/' },
    prompt: { type: 'string', default: '' },
    'all-resident': { type: 'boolean', default: false },
    out: { type: 'string', default: 'target/bench-page.json' },
  },
});
const mode = positionals[0];
const RUNS = Number(args.runs);
const TIMEOUT = 600_000;
// Every fourth word masked: the model answers each sentinel, so the answer is long.
export const PROMPT =
  'Call me <extra_id_0>. Some years <extra_id_1>, never mind how <extra_id_2> precisely, having little <extra_id_3> no money in <extra_id_4> purse, and nothing <extra_id_5> to interest me <extra_id_6> shore, I thought <extra_id_7> would sail about <extra_id_8> little and see <extra_id_9> watery part of <extra_id_10> world.';
const prompt = args.prompt || PROMPT;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
};

function appUrl(extra = {}, base = BASE_URL) {
  const url = new URL('/', base);
  url.searchParams.set('model', args.model);
  url.searchParams.set('backend', args.backend);
  url.searchParams.set('max_new_tokens', args['new-tokens']);
  url.searchParams.set('sampling', 'greedy');
  url.searchParams.set('prompt', prompt);
  url.searchParams.set('panels', 'prompt,grid,shards,perf');
  if (args['all-resident']) url.searchParams.set('resident', 'all');
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  return url.href;
}

/** A figure of the Performance panel by its label ("Encoder", "Total", ...). */
async function fact(page, label) {
  const dd = page.getByTestId('performance').locator('dt', { hasText: new RegExp(`^${label}$`) }).locator('xpath=following-sibling::dd[1]');
  return (await dd.innerText()).trim();
}

async function fail(page) {
  const error = page.getByTestId('error');
  throw new Error((await error.count()) ? await error.innerText() : 'the page did not finish');
}

async function speed() {
  const browser = await launch({ webgpu: args.backend !== 'cpu' });
  const { page } = browser;
  const rows = [];
  try {
    await page.goto(appUrl());
    if ((await waitStatus(page, ['idle', 'error'], TIMEOUT)) !== 'idle') await fail(page);
    const backend = (await page.getByTestId('backend').innerText()).trim();
    for (let run = 0; run <= RUNS; run++) {
      await page.getByTestId('run').click();
      if ((await waitStatus(page, ['done', 'error'], TIMEOUT)) !== 'done') await fail(page);
      const total = await fact(page, 'Total');
      const row = {
        run,
        warmup: run === 0,
        encoder_ms: parseFloat(await fact(page, 'Encoder')),
        first_token_ms: parseFloat(await page.getByTestId('ttft').innerText()),
        total_ms: parseFloat(total),
        tokens: Number(/for (\d+) tokens/.exec(total)[1]),
      };
      // The panel's tokens/s, from its millisecond figures (it shows one decimal): the tokens
      // after the first over the time after the first.
      row.tokens_per_s = ((row.tokens - 1) * 1000) / (row.total_ms - row.first_token_ms);
      // The decode steps' device work per token, as the panel counts it (0 on the CPU path).
      const work = page.getByTestId('device-work');
      for (const [key, attr] of [['dispatches', 'data-dispatches'], ['uploads', 'data-uploads'], ['host_waits', 'data-host-waits']]) {
        row[`${key}_per_token`] = Number(await work.getAttribute(attr));
      }
      rows.push(row);
      console.error(JSON.stringify(row));
    }
    const measured = rows.filter((r) => !r.warmup);
    const inputTokens = await page.getByTestId('route-cell').evaluateAll((els) => new Set(els.filter((e) => e.dataset.stack === 'encoder').map((e) => e.dataset.token)).size);
    return {
      mode: 'speed',
      backend,
      user_agent: await page.evaluate(() => navigator.userAgent),
      adapter: await page.evaluate(async () => {
        const a = await navigator.gpu?.requestAdapter();
        return a ? { vendor: a.info?.vendor, architecture: a.info?.architecture, description: a.info?.description } : null;
      }),
      prompt,
      input_tokens: inputTokens,
      runs: measured.length,
      encoder_ms: median(measured.map((r) => r.encoder_ms)),
      first_token_ms: median(measured.map((r) => r.first_token_ms)),
      decode_tokens_per_s: median(measured.map((r) => r.tokens_per_s)),
      tokens: median(measured.map((r) => r.tokens)),
      dispatches_per_token: median(measured.map((r) => r.dispatches_per_token)),
      uploads_per_token: median(measured.map((r) => r.uploads_per_token)),
      host_waits_per_token: median(measured.map((r) => r.host_waits_per_token)),
      rows,
    };
  } finally {
    await browser.close();
  }
}

/**
 * Navigation → first generated token with autorun, and the bytes that crossed the network until
 * the run finished and the service worker was active (its install precaches the app shell):
 * the model's files, the app's, and the service worker's own precache requests.
 */
async function firstToken(page, context, base) {
  const bytes = { model: 0, app: 0, precache: 0 };
  const pending = [];
  const onFinished = (request) => {
    pending.push((async () => {
      const response = await request.response();
      if (!response || response.fromServiceWorker()) return;
      const size = (await request.sizes().catch(() => ({ responseBodySize: 0 }))).responseBodySize;
      const kind = request.serviceWorker() ? 'precache' : new URL(request.url()).pathname.includes('/models/') ? 'model' : 'app';
      bytes[kind] += size;
    })());
  };
  context.on('requestfinished', onFinished);
  const started = Date.now();
  await page.goto(appUrl({ autorun: '1' }, base));
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="route-cell"]')].some((e) => e.dataset.stack === 'decoder') || document.querySelector('[data-testid="error"]'), null, { timeout: TIMEOUT });
  const ms = Date.now() - started;
  if (await page.getByTestId('error').count()) await fail(page);
  await waitStatus(page, ['done', 'error'], TIMEOUT);
  await page.evaluate(() => navigator.serviceWorker?.ready);
  context.off('requestfinished', onFinished);
  await Promise.all(pending);
  return { ms, bytes, model_load: await fact(page, 'Model load') };
}

async function coldstart() {
  const rows = [];
  for (let run = 0; run < RUNS; run++) {
    const browser = await launch({ webgpu: args.backend !== 'cpu' });
    const proxy = await countingProxy(BASE_URL);
    const { page, context } = browser;
    try {
      const cold = await firstToken(page, context, proxy.url);
      // The page's background work (unused prefetches) settles before the first visit is counted.
      await page.waitForTimeout(2_000);
      cold.wire = wireOverDistinct(proxy.log);
      const warm = await firstToken(page, context, proxy.url);
      const row = { run, cold, warm };
      rows.push(row);
      console.error(JSON.stringify(row));
    } finally {
      await browser.close();
      proxy.close();
    }
  }
  return {
    mode: 'coldstart',
    backend: args.backend,
    runs: rows.length,
    cold_first_token_ms: median(rows.map((r) => r.cold.ms)),
    warm_first_token_ms: median(rows.map((r) => r.warm.ms)),
    cold_bytes: Object.fromEntries(['model', 'app', 'precache'].map((k) => [k, median(rows.map((r) => r.cold.bytes[k]))])),
    warm_bytes: Object.fromEntries(['model', 'app', 'precache'].map((k) => [k, median(rows.map((r) => r.warm.bytes[k]))])),
    cold_wire: Object.fromEntries(['wire', 'distinct', 'ratio'].map((k) => [k, median(rows.map((r) => r.cold.wire[k]))])),
    rows,
  };
}

async function overhead() {
  const browser = await launch({ webgpu: true });
  try {
    await browser.page.goto(new URL('/icon.svg', BASE_URL).href);
    return await browser.page.evaluate(async () => {
      const adapter = await navigator.gpu.requestAdapter();
      const device = await adapter.requestDevice();
      const data = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3<u32>) { x[i.x] = x[i.x] + 1.0; }' });
      const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: data } }] });
      const encode = (copyTo) => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(16);
        pass.end();
        if (copyTo) encoder.copyBufferToBuffer(data, 0, copyTo, 0, 4096);
        device.queue.submit([encoder.finish()]);
      };
      const readback = [];
      for (let i = 0; i < 31; i++) {
        const out = device.createBuffer({ size: 4096, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
        const t0 = performance.now();
        encode(out);
        await out.mapAsync(GPUMapMode.READ);
        if (i > 0) readback.push(performance.now() - t0);
        out.destroy();
      }
      const t0 = performance.now();
      for (let i = 0; i < 200; i++) encode(null);
      await device.queue.onSubmittedWorkDone();
      const sorted = readback.sort((a, b) => a - b);
      return {
        mode: 'overhead',
        adapter: adapter.info?.architecture,
        readback_ms_median: sorted[sorted.length >> 1],
        dispatch_submit_ms_mean: (performance.now() - t0) / 200,
      };
    });
  } finally {
    await browser.close();
  }
}

let result;
if (mode === 'speed') result = await speed();
else if (mode === 'overhead') result = await overhead();
else if (mode === 'coldstart') result = await coldstart();
else {
  console.error('usage: node tests/bench/page.mjs speed|overhead|coldstart [--backend webgpu|cpu] [--runs N] --out FILE');
  process.exit(2);
}
writeFileSync(args.out, JSON.stringify(result, null, 1) + '\n');
const { rows, ...summary } = result;
console.log(JSON.stringify(summary));
