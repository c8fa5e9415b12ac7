// The compute worker's CPU profile in the page (a measurement, not a test): where a run's time
// goes in the worker's wasm, by function, from V8's sampling profiler over the DevTools protocol.
//
//   node --experimental-websocket tests/bench/profile.mjs --url 'http://127.0.0.1:8080/?backend=cpu&preset=en-es' [--runs 6] [--out FILE]
//
// One warm-up run, then RUNS runs profiled; prints the functions with the most samples, by self
// time and by inclusive time (a function counted once per sample whichever its depth), and
// writes the raw profile (`.cpuprofile`, which Chromium's DevTools opens) to --out.
//
// Function names need a worker wasm that keeps its name section, which the release build's
// wasm-opt drops. Make one from the same build and serve a copy of dist/ with it:
//   wasm-bindgen --target no-modules --out-dir /tmp/wb --out-name worker \
//     $CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/worker.wasm
//   cp -r dist /tmp/dist-names && cp /tmp/wb/worker_bg.wasm /tmp/dist-names/
// (the JS glue is the same file). Without wasm-opt the code is slower, and V8 attributes some
// samples to neighbouring names; read the figures as where to look, not as exact shares.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    runs: { type: 'string', default: '6' },
    out: { type: 'string', default: 'target/worker.cpuprofile' },
    port: { type: 'string', default: '9333' },
  },
});
if (!args.url) throw new Error('--url is required (the app, with backend= and a prompt or preset)');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const profileDir = mkdtempSync(join(tmpdir(), 'switchscope-profile-'));
// The browser the end-to-end tests use (web/webdriver.json keeps its path).
const { binary } = JSON.parse(readFileSync(new URL('../../web/webdriver.json', import.meta.url), 'utf8'))['goog:chromeOptions'];
const chrome = spawn(
  binary,
  ['--headless=new', '--no-sandbox', `--remote-debugging-port=${args.port}`, '--no-first-run',
    '--disable-background-networking', `--user-data-dir=${profileDir}`, 'about:blank'],
  { stdio: 'ignore' },
);
try {
  let version;
  for (let i = 0; i < 100 && !version; i++) {
    version = await fetch(`http://127.0.0.1:${args.port}/json/version`).then((r) => r.json()).catch(() => null);
    if (!version) await sleep(200);
  }
  const ws = new WebSocket(version.webSocketDebuggerUrl);
  await new Promise((r) => ws.addEventListener('open', r));
  let next = 0;
  const pending = new Map();
  let worker = null;
  ws.addEventListener('message', (e) => {
    const m = JSON.parse(e.data);
    if (m.id && pending.has(m.id)) {
      const { resolve, reject } = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) reject(new Error(JSON.stringify(m.error)));
      else resolve(m.result);
    } else if (m.method === 'Target.attachedToTarget' && m.params.targetInfo.type === 'worker') {
      worker = m.params.sessionId;
    }
  });
  const send = (method, params = {}, sessionId = undefined) =>
    new Promise((resolve, reject) => {
      const id = ++next;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params, sessionId }));
    });
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId: page } = await send('Target.attachToTarget', { targetId, flatten: true });
  await send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: true }, page);
  await send('Page.navigate', { url: args.url }, page);
  const evaluate = async (expression) =>
    (await send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, page)).result.value;
  const waitStatus = async (wanted) => {
    for (let i = 0; i < 6000; i++) {
      const status = await evaluate(`document.querySelector('[data-testid="status"]')?.textContent`);
      if (wanted.includes(status)) return status;
      await sleep(100);
    }
    throw new Error(`the page never reached ${wanted.join(' or ')}`);
  };
  const run = async () => {
    await evaluate(`document.querySelector('[data-testid="run"]').click()`);
    await sleep(300);
    if ((await waitStatus(['done', 'error'])) === 'error') throw new Error('the run failed');
  };
  await waitStatus(['idle']);
  if (!worker) throw new Error('no compute worker attached');
  await run();
  await send('Profiler.enable', {}, worker);
  await send('Profiler.setSamplingInterval', { interval: 200 }, worker);
  await send('Profiler.start', {}, worker);
  for (let r = 0; r < Number(args.runs); r++) await run();
  const { profile } = await send('Profiler.stop', {}, worker);
  writeFileSync(args.out, JSON.stringify(profile));
  ws.close();
  report(profile);
} finally {
  chrome.kill();
  await sleep(500);
  rmSync(profileDir, { recursive: true, force: true });
}

/** Prints the top functions by self and by inclusive samples. */
function report(profile) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n) => (n.callFrame.functionName || '(anonymous)').replace(/::h[0-9a-f]{16}/g, '').slice(0, 140);
  const self = new Map();
  const inclusive = new Map();
  const add = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);
  for (const sample of profile.samples) {
    add(self, name(nodes.get(sample)));
    const seen = new Set();
    for (let id = sample; id !== undefined; id = parent.get(id)) seen.add(name(nodes.get(id)));
    for (const n of seen) add(inclusive, n);
  }
  const total = profile.samples.length;
  const top = (map, n) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${((100 * v) / total).toFixed(1).padStart(5)} %  ${k}`);
  console.log(`${total} samples`);
  console.log('self:\n' + top(self, 25).join('\n'));
  console.log('inclusive:\n' + top(inclusive, 50).join('\n'));
}
