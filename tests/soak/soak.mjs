// The soak: one page session generates at least TOKENS tokens (run after run, with prompts that
// ask for long answers), and checks, comparing the quarters of the session, that
// - the expert bytes resident on the device never exceed the budget,
// - the worker's wasm memory no longer grows in the last quarter, and the page's JS heap
//   stays within 10 % of its second-quarter median,
// - tokens/s does not decay.
// Run by `cargo xtask soak` (a measurement, not part of the test suite), which serves the app
// and sets SWITCHSCOPE_URL. Writes its measurements as JSON to --out.
//
//   node tests/soak/soak.mjs [--tokens 6000] [--backend cpu|webgpu] [--budget-mb 6] [--out FILE]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BASE_URL, launch, waitStatus } from '../e2e/browser.mjs';

const { values: args } = parseArgs({
  options: {
    tokens: { type: 'string', default: '6000' },
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

  // The checks, by quarters of the runs: the first quarter is the warm-up (experts arrive, the
  // allocator's free lists and burn's pools fill up with every size the prompts need).
  const q = Math.max(1, Math.floor(rows.length / 4));
  const quarters = [0, 1, 2, 3].map((i) => rows.slice(i * q, i === 3 ? rows.length : (i + 1) * q));
  const peak = Math.max(...rows.map((r) => r.peak_resident_bytes));
  const wasmLastQuarterStart = quarters[3][0].wasm_memory_bytes;
  const wasmEnd = rows.at(-1).wasm_memory_bytes;
  const heapMedians = quarters.map((part) => median(part.map((r) => r.page_js_heap_bytes)));
  const tpsMedians = quarters.map((part) => median(part.map((r) => r.tokens_per_s)));
  const summary = {
    backend,
    budget_bytes: budgetBytes,
    runs: rows.length,
    tokens: total,
    seconds: rows.at(-1).seconds,
    peak_resident_bytes: peak,
    wasm_memory_by_quarter_end: quarters.map((part) => part.at(-1).wasm_memory_bytes),
    wasm_memory_growth_steps: rows.filter((r, i) => i > 0 && r.wasm_memory_bytes > rows[i - 1].wasm_memory_bytes).map((r) => ({ run: r.run, total: r.total, bytes: r.wasm_memory_bytes })),
    page_js_heap_median_by_quarter: heapMedians,
    tokens_per_s_median_by_quarter: tpsMedians,
  };
  if (peak > budgetBytes) failed.push(`resident expert bytes reached ${peak}, over the budget of ${budgetBytes}`);
  // wasm memory grows in 64 KiB pages and never shrinks: in the last quarter it must not grow.
  if (wasmEnd > wasmLastQuarterStart) failed.push(`wasm memory still grew in the last quarter: ${wasmLastQuarterStart} -> ${wasmEnd} bytes`);
  if (heapMedians[3] > heapMedians[1] * 1.1) failed.push(`the page's JS heap grew from ${heapMedians[1]} to ${heapMedians[3]} bytes (quarter medians)`);
  if (tpsMedians[3] < tpsMedians[1] * 0.8) failed.push(`tokens/s fell from ${tpsMedians[1]} to ${tpsMedians[3]} (quarter medians)`);
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
