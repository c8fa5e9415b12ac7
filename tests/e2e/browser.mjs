// Launches Debian's Chromium through playwright-core for the end-to-end tests.
// The flags come from web/webdriver.json, the one place they are kept (wasm-bindgen-test uses it too).
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const webdriver = JSON.parse(readFileSync(join(here, '../../web/webdriver.json'), 'utf8'));
const options = webdriver['goog:chromeOptions'];

/** The app's address, set by `cargo xtask test`. */
export const BASE_URL = process.env.SWITCHSCOPE_URL ?? 'http://127.0.0.1:8080/';

/** Where screenshots go. */
export const ARTIFACTS = join(here, 'artifacts');

/**
 * A fresh browser profile. `webgpu: false` drops --enable-unsafe-webgpu, which leaves
 * navigator.gpu without an adapter: the CPU fallback path. `serviceWorkers: 'block'` keeps the
 * app's service worker out, so that every request reaches the server as sent.
 */
export async function launch({ webgpu = true, serviceWorkers = 'allow' } = {}) {
  const args = options.args.filter(
    (a) => !a.startsWith('--headless') && (webgpu || a !== '--enable-unsafe-webgpu'),
  );
  const profile = mkdtempSync(join(tmpdir(), 'switchscope-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: options.binary,
    headless: true,
    serviceWorkers,
    args,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const console = [];
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
  return {
    context,
    page,
    console,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot of the page under tests/e2e/artifacts/. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Waits until the page's status (`data-testid="status"`) is one of `wanted`; returns it.
 * Loading includes compiling the wasm and, on SwiftShader, the first WebGPU pipelines.
 */
export async function waitStatus(page, wanted, timeout = 300_000) {
  await page.waitForFunction(
    (w) => w.includes(document.querySelector('[data-testid="status"]')?.textContent),
    wanted,
    { timeout },
  );
  return (await page.getByTestId('status').innerText()).trim();
}

/** Clicks the download button `testId` and returns the file's bytes. */
export async function download(page, testId) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testId).click()]);
  return readFileSync(await file.path());
}

/** Every cell of the routing grid as the page shows it. */
export async function routeCells(page) {
  return page.getByTestId('route-cell').evaluateAll((els) =>
    els.map((e) => ({
      stack: e.dataset.stack,
      block: Number(e.dataset.block),
      token: Number(e.dataset.token),
      expert: Number(e.dataset.expert),
      chosen: Number(e.dataset.chosen),
      crossed: e.querySelector('path.dropped') !== null,
      label: e.querySelector('.cell-label')?.textContent,
    })),
  );
}

/**
 * The routing CSV export as rows ({stack, block, token, piece, expert, chosen, probability,
 * dropped}); the piece is the only quoted field and may hold commas.
 */
export function parseRoutingCsv(text) {
  const [header, ...lines] = text.trim().split('\n');
  return {
    header,
    rows: lines.map((line) => {
      const m = line.match(/^(\w+),(\d+),(\d+),"((?:[^"]|"")*)",(-?\d+),(\d+),([\d.]+),(true|false)$/);
      if (!m) throw new Error(`not a routing CSV line: ${line}`);
      return {
        stack: m[1],
        block: Number(m[2]),
        token: Number(m[3]),
        piece: m[4].replaceAll('""', '"'),
        expert: Number(m[5]),
        chosen: Number(m[6]),
        probability: Number(m[7]),
        dropped: m[8] === 'true',
      };
    }),
  };
}
