// A static server for dist/ whose responses a test can break: the end-to-end fault tests load
// the app from it (one origin for the page, the worker and the model), and set `server.fault`
// to a function of the request path that returns what to do instead of serving the file.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST = join(dirname(fileURLToPath(import.meta.url)), '../../dist');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the server on an ephemeral port. `server.fault(path)` (path without the query) may
 * return, for the request at hand:
 * - `{ status }`: that HTTP status with an empty body;
 * - `{ transform(bytes) }`: the file's bytes changed (corrupt, truncated, another manifest);
 * - `{ trickle: { bytes, everyMs } }`: the file sent slowly, `bytes` at a time;
 * - `{ drop: true }`: the connection closed without an answer (the network lost);
 * - `undefined`: the file as it is.
 * `server.requests` lists every path asked for, in order. `server.headers` are added to
 * every response.
 */
export async function faultServer() {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    server.requests.push(path);
    const fault = server.fault?.(path);
    if (fault?.drop) {
      req.socket.destroy();
      return;
    }
    if (fault?.status) {
      res.writeHead(fault.status, server.headers);
      res.end();
      return;
    }
    const file = normalize(join(DIST, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(DIST)) {
      res.writeHead(403, server.headers);
      res.end();
      return;
    }
    let bytes;
    try {
      bytes = await readFile(file);
    } catch {
      res.writeHead(404, server.headers);
      res.end();
      return;
    }
    if (fault?.transform) bytes = Buffer.from(fault.transform(bytes));
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': bytes.length,
      'cache-control': 'no-cache',
      ...server.headers,
    });
    if (fault?.trickle) {
      const { bytes: step, everyMs } = fault.trickle;
      for (let at = 0; at < bytes.length && !res.destroyed; at += step) {
        res.write(bytes.subarray(at, at + step));
        await sleep(everyMs);
      }
      res.end();
      return;
    }
    res.end(bytes);
  });
  server.requests = [];
  server.fault = undefined;
  server.headers = {};
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  server.url = `http://127.0.0.1:${server.address().port}/`;
  return server;
}

/**
 * A fault for `server.fault` that serves the page as a deployment allowing models from
 * `origin` would: listed in `<meta name="switchscope-model-origins">` (web/index.html), with
 * the connect-src policy the build derives from it.
 */
export function allowingModelsFrom(origin) {
  return (path) =>
    path === '/' || path === '/index.html'
      ? {
          transform: (bytes) =>
            bytes
              .toString('utf8')
              .replace('<meta name="switchscope-model-origins" content="" />', `<meta name="switchscope-model-origins" content="${origin}" />`)
              .replace("connect-src 'self'", `connect-src 'self' ${origin}`),
        }
      : undefined;
}
