// A pass-through proxy in front of the app's server that writes down every response: what the
// browser asked for and what crossed the wire (status, Content-Encoding, Range, body bytes as
// sent). The first-visit test loads the app through it to count bytes over the network.
import { createServer, request } from 'node:http';

/**
 * Starts the proxy on an ephemeral port in front of `upstream` (a URL). `proxy.log` lists one
 * entry per response, in the order they end: `{ path, status, encoding, range, bytes }`.
 */
export async function countingProxy(upstream) {
  const target = new URL(upstream);
  const proxy = createServer((req, res) => {
    const headers = { ...req.headers, host: target.host };
    const forward = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        let bytes = 0;
        answer.on('data', (chunk) => {
          bytes += chunk.length;
        });
        answer.on('end', () =>
          proxy.log.push({
            path: new URL(req.url, 'http://x').pathname,
            status: answer.statusCode,
            encoding: answer.headers['content-encoding'] ?? 'identity',
            range: req.headers.range ?? null,
            bytes,
          }),
        );
        answer.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  proxy.log = [];
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  proxy.url = `http://127.0.0.1:${proxy.address().port}/`;
  return proxy;
}

/** Paths whose full body (a 200 with a body, not a range or a 304) arrived more than once. */
export function repeatedBodies(log) {
  const full = new Map();
  for (const entry of log) {
    if (entry.status !== 200 || entry.bytes === 0) continue;
    full.set(entry.path, (full.get(entry.path) ?? 0) + 1);
  }
  return [...full].filter(([, n]) => n > 1).map(([path, n]) => `${path} (${n} times)`);
}

/**
 * Bytes over the wire against the bytes of the distinct files they carried (each path counted
 * once, at the size it crossed the wire in).
 */
export function wireOverDistinct(log) {
  const wire = log.reduce((sum, e) => sum + e.bytes, 0);
  const once = new Map();
  for (const e of log) once.set(e.path, Math.max(once.get(e.path) ?? 0, e.bytes));
  const distinct = [...once.values()].reduce((a, b) => a + b, 0);
  return { wire, distinct, ratio: wire / distinct };
}
