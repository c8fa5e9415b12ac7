// The soak: one page session generates at least TOKENS tokens (run after run, with prompts that
// ask for long answers), and checks that
// - the expert bytes resident on the device never exceed the budget,
// - the page's JS heap and the worker's wasm memory stop growing after the warm-up,
// - tokens/s does not decay.
// Run by `cargo xtask soak` (a measurement, not part of the test suite), which serves the app
// and sets SWITCHSCOPE_URL. Writes its measurements as JSON to --out.
//
//   node tests/soak/soak.mjs [--tokens 2000] [--backend cpu|webgpu] [--budget-mb 6] [--out FILE]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BASE_URL, launch, waitStatus } from '../e2e/browser.mjs';

const { values: args } = parseArgs({
  options: {
    tokens: { type: 'string', default: '2000' },
    backend: { type: 'string', default: 'cpu' },
    'budget-mb': { type: 'string', default: '6' },
    model: { type: 'string', default: 'models/switchscope-mini/' },
    out: { type: 'string', default: 'target/soak.json' },
  },
});
const TOKENS = Number(args.tokens);
const BUDGET_MB = Number(args['budget-mb']);
const TIMEOUT = 600_000;

// Texts whose every fourth word is masked: the model answers each sentinel in turn, so the
// answers are long (up to the 256-token limit of one run).
const TEXTS = [
  'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.',
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.',
  'En el principio creó Dios los cielos y la tierra. Y la tierra estaba desordenada y vacía, y las tinieblas estaban sobre la haz del abismo, y el Espíritu de Dios se movía sobre la haz de las aguas.',
  'def read_config(path):\n    with open(path, encoding="utf-8") as f:\n        data = json.load(f)\n    if "name" not in data:\n        raise ValueError("missing name")\n    return data',
  'The President shall from time to time give to the Congress information of the state of the union, and recommend to their consideration such measures as he shall judge necessary and expedient.',
  'To install a package on Debian, run apt install followed by the name of the package. The package manager downloads it, checks its signature, and configures it for the system.',
  'Debian ist ein freies Betriebssystem für Ihren Computer. Ein Betriebssystem ist eine Sammlung von Programmen, die Ihren Computer überhaupt erst lauffähig machen.',
  'On 3 May 1998 the count was 41,207. On 11 June 2004 it was 52,918, and by 2 March 2016 it had reached 97,080; 12 x 7 = 84 and 5 + 30 = 35.',
];

function masked(text) {
  let sentinel = 0;
  return text
    .split(' ')
    .map((word, i) => (i % 4 === 3 && sentinel < 100 ? `<extra_id_${sentinel++}>` : word))
    .join(' ');
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
};

const browser = await launch({ webgpu: args.backend !== 'cpu' });
const { page, context } = browser;
const rows = [];
let failed = [];
try {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const url = new URL('/', BASE_URL);
  url.searchParams.set('model', args.model);
  url.searchParams.set('backend', args.backend);
  url.searchParams.set('budget_mb', String(BUDGET_MB));
  url.searchParams.set('max_new_tokens', '256');
  url.searchParams.set('sampling', 'sample');
  url.searchParams.set('temperature', '1');
  url.searchParams.set('seed', '7');
  url.searchParams.set('panels', 'prompt,grid,shards,perf');
  await page.goto(url.href);
  if ((await waitStatus(page, ['idle', 'error'], TIMEOUT)) !== 'idle') throw new Error(await page.getByTestId('error').innerText());
  const backend = (await page.getByTestId('backend').innerText()).trim();
  const budgetBytes = BUDGET_MB * 1_048_576;
  let total = 0;
  const started = Date.now();
  for (let run = 0; total < TOKENS; run++) {
    await page.getByTestId('prompt').fill(masked(TEXTS[run % TEXTS.length]));
    await page.getByTestId('run').click();
    if ((await waitStatus(page, ['done', 'error'], TIMEOUT)) !== 'done') throw new Error(await page.getByTestId('error').innerText());
    const tokens = await page.getByTestId('route-cell').evaluateAll((els) => new Set(els.filter((e) => e.dataset.stack === 'decoder').map((e) => e.dataset.token)).size);
    total += tokens;
    await cdp.send('HeapProfiler.collectGarbage');
    const metrics = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
    const resident = page.getByTestId('resident-bytes');
    const row = {
      run,
      tokens,
      total,
      tokens_per_s: Number((await page.getByTestId('tokens-per-s').innerText()).trim()),
      resident_bytes: Number(await resident.getAttribute('data-bytes')),
      peak_resident_bytes: Number(await resident.getAttribute('data-peak')),
      wasm_memory_bytes: Number(await page.getByTestId('wasm-memory').getAttribute('data-bytes')),
      page_js_heap_bytes: metrics.JSHeapUsedSize,
      page_dom_nodes: metrics.Nodes,
      seconds: (Date.now() - started) / 1000,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }

  // The checks. Warm-up: the first quarter of the runs (experts arrive, buffers and pools grow).
  const warm = Math.max(1, Math.floor(rows.length / 4));
  const steady = rows.slice(warm);
  const half = Math.max(1, Math.floor(steady.length / 2));
  const early = steady.slice(0, half);
  const late = steady.slice(-half);
  const peak = Math.max(...rows.map((r) => r.peak_resident_bytes));
  const wasmAfterWarm = rows[warm - 1].wasm_memory_bytes;
  const wasmEnd = rows.at(-1).wasm_memory_bytes;
  const heapEarly = median(early.map((r) => r.page_js_heap_bytes));
  const heapLate = median(late.map((r) => r.page_js_heap_bytes));
  const tpsEarly = median(early.map((r) => r.tokens_per_s));
  const tpsLate = median(late.map((r) => r.tokens_per_s));
  const summary = {
    backend,
    budget_bytes: budgetBytes,
    runs: rows.length,
    tokens: total,
    seconds: rows.at(-1).seconds,
    peak_resident_bytes: peak,
    wasm_memory_after_warmup: wasmAfterWarm,
    wasm_memory_end: wasmEnd,
    page_js_heap_early_median: heapEarly,
    page_js_heap_late_median: heapLate,
    tokens_per_s_early_median: tpsEarly,
    tokens_per_s_late_median: tpsLate,
  };
  if (peak > budgetBytes) failed.push(`resident expert bytes reached ${peak}, over the budget of ${budgetBytes}`);
  // wasm memory grows in 64 KiB pages and never shrinks: after the warm-up it must stay within 5 %.
  if (wasmEnd > wasmAfterWarm * 1.05) failed.push(`wasm memory grew from ${wasmAfterWarm} to ${wasmEnd} bytes after the warm-up`);
  if (heapLate > heapEarly * 1.25 + 2_000_000) failed.push(`the page's JS heap grew from ${heapEarly} to ${heapLate} bytes`);
  if (tpsLate < tpsEarly * 0.8) failed.push(`tokens/s fell from ${tpsEarly} to ${tpsLate}`);
  summary.failed = failed;
  writeFileSync(args.out, JSON.stringify({ summary, rows }, null, 1) + '\n');
  console.log(JSON.stringify(summary, null, 1));
} finally {
  await browser.close();
}
if (failed.length) {
  console.error(`soak: FAILED\n- ${failed.join('\n- ')}`);
  process.exit(1);
}
console.log(`soak: passed; measurements in ${args.out}`);
