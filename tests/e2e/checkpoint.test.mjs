// A Hugging Face checkpoint directory opened where it is served, by its URL (?model=), with no
// conversion: random checkpoints with 64 experts per sparse layer (single and sharded
// safetensors) and the tiny-bin fixture's pytorch_model.bin. The page routes and decodes as the
// CLI does reading the same directory from disk; only the headers, the dense tensors and the
// routed experts' byte ranges cross the network, and the shard panel names those ranges; a
// second visit takes them from the browser's cache. A host that ignores Range, hides its
// headers from CORS or changes the file is refused with the reason, and nothing of a changed
// file is kept. `cargo xtask test` writes the checkpoints with the CLI (SWITCHSCOPE_CLI) into
// the directory the app's server mounts at /checkpoints/ (SWITCHSCOPE_CHECKPOINTS).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, rmSync, openSync, readFileSync, readSync, statSync, closeSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_URL, download, launch, waitStatus } from './browser.mjs';
import { countingProxy } from './countingproxy.mjs';
import { allowingModelsFrom, faultServer } from './faultserver.mjs';
import { rangeServer } from './rangeserver.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, '../fixtures');
const CLI = process.env.SWITCHSCOPE_CLI;
const DIR = process.env.SWITCHSCOPE_CHECKPOINTS;
const PROMPT = 'The <extra_id_0> walks in <extra_id_1> park.';
const NEW_TOKENS = 6;

function cli(...args) {
  return execFileSync(CLI, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** `switchscope generate` on a directory on disk: the reference. */
function fromDisk(dir, backend = 'cpu') {
  const out = JSON.parse(
    cli('generate', '--model', dir, '--prompt', PROMPT, '--max-new-tokens', String(NEW_TOKENS), '--backend', backend, '--json'),
  );
  return { output_ids: out.output_ids.slice(1), routing: routingOf(out.routing) };
}

/** Each sparse layer's experts, in order (the CLI lists a decoder layer once per step). */
function routingOf(layers) {
  const out = {};
  for (const l of layers) out[`${l.stack} ${l.block}`] = [...(out[`${l.stack} ${l.block}`] ?? []), ...l.expert];
  return out;
}

/** A random checkpoint shaped for the tiny fixtures' tokenizer (128 pieces), 64 experts. */
function randomCheckpoint(name, { shardMb = '64', seed = '0' } = {}) {
  const config = {
    architectures: ['SwitchTransformersForConditionalGeneration'],
    model_type: 'switch_transformers',
    vocab_size: 128, d_model: 32, d_ff: 64, d_kv: 8, num_heads: 4,
    num_layers: 2, num_decoder_layers: 2, num_sparse_encoder_layers: 1, num_sparse_decoder_layers: 1,
    encoder_sparse_step: 2, decoder_sparse_step: 2, num_experts: 64, expert_capacity: 64,
    relative_attention_num_buckets: 32, relative_attention_max_distance: 128,
    dense_act_fn: 'relu', tie_word_embeddings: true, router_bias: false,
    pad_token_id: 0, eos_token_id: 1, decoder_start_token_id: 0,
  };
  const configPath = join(DIR, `${name}.config.json`);
  writeFileSync(configPath, JSON.stringify(config));
  const out = fresh(join(DIR, name));
  cli('bench', 'random-checkpoint', '--config', configPath, '--out', out, '--shard-mb', shardMb, '--seed', seed);
  copyFileSync(join(fixtures, 'tiny/tokenizer.json'), join(out, 'tokenizer.json'));
  return out;
}

/** A safetensors file's header: its length prefix, and every tensor's absolute byte range. */
function safetensors(path) {
  const fd = openSync(path, 'r');
  const prefix = Buffer.alloc(8);
  readSync(fd, prefix, 0, 8, 0);
  const n = Number(prefix.readBigUInt64LE());
  const json = Buffer.alloc(n);
  readSync(fd, json, 0, n, 8);
  closeSync(fd);
  const tensors = {};
  for (const [name, t] of Object.entries(JSON.parse(json.toString('utf8')))) {
    if (name === '__metadata__') continue;
    tensors[name] = [8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]];
  }
  return { headerBytes: 8 + n, tensors, size: statSync(path).size };
}

/** The tensors of one expert: `encoder.block.1.layer.1.mlp.experts.expert_5.wi.weight`, … */
function expertTensors(file, stack, block, expert) {
  return Object.entries(file.tensors).filter(([name]) =>
    name.startsWith(`${stack}.block.${block}.`) && name.includes(`.mlp.experts.expert_${expert}.`),
  );
}

function pageUrl(base, model, backend, extra = {}) {
  const url = new URL('/', base);
  const params = { model, backend, sampling: 'greedy', spans: 'all', max_new_tokens: String(NEW_TOKENS), prefetch: '0', ...extra };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
}

/** Loads `url`, runs PROMPT, and returns the export's ids and routing. */
async function run(page, url) {
  await page.goto(url);
  const loaded = await waitStatus(page, ['idle', 'error']);
  assert.equal(loaded, 'idle', await page.getByTestId('error').innerText().catch(() => ''));
  await page.getByTestId('prompt').fill(PROMPT);
  await page.getByTestId('run').click();
  const ran = await waitStatus(page, ['done', 'error']);
  assert.equal(ran, 'done', await page.getByTestId('error').innerText().catch(() => ''));
  const trace = JSON.parse(await download(page, 'export-json'));
  return { output_ids: trace.output_ids, routing: routingOf(trace.routing) };
}

/** The error a load (or, with `prompt`, a run) ends in. */
async function failure(page, url, { prompt = false } = {}) {
  if (url) await page.goto(url);
  let status = await waitStatus(page, ['idle', 'error']);
  if (prompt && status === 'idle') {
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('run').click();
    status = await waitStatus(page, ['done', 'error']);
  }
  assert.equal(status, 'error', `${url}: expected an error`);
  return (await page.getByTestId('error').innerText()).trim();
}

/** The keys of the ranges the worker kept in the Cache API. */
async function keptRanges(page) {
  return page.evaluate(async () => {
    const keys = [];
    for (const name of await caches.keys()) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) {
        if (request.url.includes('switchscope-range=')) keys.push(decodeURIComponent(request.url));
      }
    }
    return keys;
  });
}

/** `path`, removed if it is there (a run starts from nothing). */
function fresh(path) {
  rmSync(path, { recursive: true, force: true });
  return path;
}

const checkpoints = {};
before(() => {
  assert.ok(CLI && DIR, 'SWITCHSCOPE_CLI and SWITCHSCOPE_CHECKPOINTS are set by cargo xtask test');
  checkpoints.single = randomCheckpoint('r64');
  checkpoints.sharded = randomCheckpoint('r64-sharded', { shardMb: '0.3' });
  checkpoints.other = randomCheckpoint('r64-seed1', { seed: '1' });
  checkpoints.bin = fresh(join(DIR, 'tiny-bin'));
  cpSync(join(fixtures, 'tiny-bin'), checkpoints.bin, { recursive: true });
  copyFileSync(join(fixtures, 'tiny/tokenizer.json'), join(checkpoints.bin, 'tokenizer.json'));
  checkpoints.converted = fresh(join(DIR, 'r64-int8'));
  cli('convert', '--from', checkpoints.single, '--out', checkpoints.converted);
});

test('checkpoints run from their URL as from disk, fetching only the routed experts, and come from the cache the second time', async () => {
  const proxy = await countingProxy(BASE_URL);
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    for (const [kind, dir, weights] of [
      ['single', checkpoints.single, 'model.safetensors'],
      ['sharded', checkpoints.sharded, null],
      ['pytorch_model.bin', checkpoints.bin, 'pytorch_model.bin'],
    ]) {
      const name = dir.split('/').pop();
      const model = `checkpoints/${name}/`;
      proxy.log = [];
      const got = await run(page, pageUrl(proxy.url, model, 'cpu'));
      assert.deepEqual(got, fromDisk(dir), `${kind}: ids and routing as from disk`);
      const served = proxy.log.filter((e) => e.path.startsWith(`/${model}`));
      assert.ok(served.some((e) => e.path.endsWith('/manifest.json') && e.status === 404), `${kind}: not a converted model`);
      // (A sharded checkpoint has no model.safetensors: the first probe is answered 404.)
      const whole = served.filter((e) => /\.(safetensors|bin)$/.test(e.path) && ![206, 404].includes(e.status));
      assert.deepEqual(whole, [], `${kind}: weights are only ever range-requested`);
      if (kind === 'sharded') {
        const files = new Set(served.filter((e) => e.path.endsWith('.safetensors')).map((e) => e.path));
        assert.ok(files.size >= 2, `sharded: ranges of ${files.size} files`);
      }
      if (kind !== 'single') continue;

      // Bytes: the length probe, the header, the dense tensors and each routed expert once.
      const file = safetensors(join(dir, weights));
      const isExpert = (n) => n.includes('.mlp.experts.expert_');
      const dense = Object.entries(file.tensors)
        .filter(([n]) => !isExpert(n))
        .reduce((s, [, [a, b]]) => s + b - a, 0);
      let experts = 0;
      let routed = 0;
      for (const [layer, chosen] of Object.entries(got.routing)) {
        const [stack, block] = layer.split(' ');
        for (const e of new Set(chosen)) {
          const tensors = expertTensors(file, stack, block, e);
          assert.equal(tensors.length, 2, `${layer} expert ${e}: wi and wo`);
          experts += tensors.reduce((s, [, [a, b]]) => s + b - a, 0);
          routed += 1;
          // The shard panel says where the expert came from.
          const cell = page.locator(`[data-testid="shard"][data-stack="${stack}"][data-block="${block}"][data-expert="${e}"]`);
          const title = await cell.getAttribute('title');
          const ranges = [...title.matchAll(/([\w.-]+) bytes (\d+)–(\d+)/g)].map((m) => [m[1], Number(m[2]), Number(m[3]) + 1]);
          assert.ok(ranges.length > 0, `${layer} expert ${e}: the panel names its ranges (${title})`);
          for (const [tensor, [a, b]] of tensors) {
            assert.ok(
              ranges.some(([f, s, t]) => f === weights && s <= a && b <= t),
              `${tensor} (${a}..${b}) is in the ranges the panel shows: ${title}`,
            );
          }
          assert.equal(await cell.getAttribute('data-state'), 'resident');
        }
      }
      const weightBytes = served.filter((e) => e.path.endsWith(weights)).reduce((s, e) => s + e.bytes, 0);
      assert.equal(
        weightBytes,
        1 + file.headerBytes + dense + experts,
        `probe 1 + header ${file.headerBytes} + dense ${dense} + ${routed} routed experts ${experts}`,
      );
      assert.ok(weightBytes * 2 < file.size, `${weightBytes} of ${file.size} bytes`);

      // A second visit: every range from the Cache API, only the length probe over the network.
      assert.ok((await keptRanges(page)).length > 0, 'verified ranges were kept');
      proxy.log = [];
      assert.deepEqual(await run(page, pageUrl(proxy.url, model, 'cpu')), got, 'the same answer from the cache');
      const again = proxy.log.filter((e) => e.path.endsWith(`/${model}${weights}`));
      assert.equal(again.reduce((s, e) => s + e.bytes, 0), 1, `second visit: ${JSON.stringify(again)}`);
    }
  } finally {
    await browser.close();
    proxy.close();
  }
});

test('on WebGPU, experts quantized as they arrive decode as the converted int8 model does', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const { page } = browser;
    const converted = await run(page, pageUrl(BASE_URL, 'checkpoints/r64-int8/', 'webgpu'));
    assert.equal((await page.getByTestId('backend').innerText()).trim(), 'webgpu');
    const checkpoint = await run(page, pageUrl(BASE_URL, 'checkpoints/r64/', 'webgpu'));
    assert.equal((await page.getByTestId('backend').innerText()).trim(), 'webgpu');
    assert.deepEqual(checkpoint, converted);
  } finally {
    await browser.close();
  }
});

test('a host on another origin that ignores Range, hides its headers or changes the file is refused with the reason', async () => {
  const hosted = fresh(join(DIR, 'hosted'));
  mkdirSync(hosted, { recursive: true });
  cpSync(checkpoints.single, join(hosted, 'r64'), { recursive: true });
  const models = await rangeServer(hosted);
  // The page's deployment allows the models' origin (as csp.test.mjs does).
  const app = await faultServer();
  app.fault = allowingModelsFrom(new URL(models.url).origin);
  const browser = await launch({ webgpu: false });
  const url = pageUrl(app.url, `${models.url}r64/`, 'cpu');
  try {
    const { page } = browser;
    // Served properly from the other origin, it runs.
    assert.deepEqual(await run(page, url), fromDisk(checkpoints.single));

    // A host that answers a Range request with the whole file (200).
    models.ranges = false;
    models.log = [];
    assert.match(await failure(page, url), /answered a byte-range request with the whole file .*does not support Range/);
    models.ranges = true;

    // CORS that does not expose Content-Range and ETag.
    models.expose = false;
    assert.match(await failure(page, url), /no readable Content-Range.*Access-Control-Expose-Headers/);
    models.expose = true;

    // No CORS at all.
    models.cors = false;
    assert.match(await failure(page, url), /the server on http:\/\/127\.0\.0\.1:\d+ must allow this page's origin \(CORS: Access-Control-Allow-Origin\)/);
    models.cors = true;

    // The file changes between two runs (its ranges are in the cache under the old ETag): the
    // new file is read anew, and answers as the new file does.
    const replace = (dir) => {
      copyFileSync(join(checkpoints.other, 'model.safetensors'), join(dir, 'model.safetensors'));
      utimesSync(join(dir, 'model.safetensors'), new Date(), new Date(Date.now() + 60_000));
    };
    replace(join(hosted, 'r64'));
    models.log = [];
    assert.deepEqual(await run(page, url), fromDisk(checkpoints.other), 'the new file, not cached ranges of the old');
    const fetched = models.log.filter((e) => e.path === '/r64/model.safetensors' && e.status === 206).reduce((s, e) => s + e.bytes, 0);
    assert.ok(fetched > 1, `the new file's ranges came over the network (${fetched} bytes)`);

    // The file changes while it is open (between load and run): the first expert range comes
    // back with another ETag, and is refused.
    const changing = join(hosted, 'changing');
    cpSync(checkpoints.single, changing, { recursive: true });
    await page.goto(pageUrl(app.url, `${models.url}changing/`, 'cpu'));
    assert.equal(await waitStatus(page, ['idle', 'error']), 'idle');
    replace(changing);
    assert.match(await failure(page, null, { prompt: true }), /model\.safetensors: the file changed since it was opened \(ETag/);
    const kept = (await keptRanges(page)).filter((k) => k.includes('/changing/model.safetensors'));
    const tags = new Set(kept.map((k) => k.split('etag=')[1]));
    assert.ok(kept.length > 0 && tags.size === 1, `only ranges of the file as opened are kept: ${[...tags]}`);
  } finally {
    await browser.close();
    models.close();
    app.close();
  }
});
