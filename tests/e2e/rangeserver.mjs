// A static file server for checkpoint directories as a model host serves them: byte ranges
// (206, Content-Range, Accept-Ranges, 416), an ETag from the file's size and modification time,
// and CORS for a page on another origin. A test can take each of these away to see the page
// refuse clearly, and reads `server.log` to count what crossed the wire.
import { createServer } from 'node:http';
import { open, stat } from 'node:fs/promises';
import { join, normalize } from 'node:path';

/**
 * Serves `root` on an ephemeral port. Switches, all on by default:
 * - `server.ranges`: answer `Range` (off: every answer is 200 with the whole file);
 * - `server.cors`: send `Access-Control-Allow-Origin: *`;
 * - `server.expose`: send `Access-Control-Expose-Headers: Content-Range, ETag, Content-Length`.
 * `server.log` lists `{ path, status, range, bytes }` per answer, `bytes` as written.
 */
export async function rangeServer(root) {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const headers = {};
    if (server.cors) {
      headers['access-control-allow-origin'] = '*';
      headers['access-control-allow-headers'] = 'range';
      if (server.expose) headers['access-control-expose-headers'] = 'Content-Range, ETag, Content-Length';
    }
    const done = (status, bytes = 0) => server.log.push({ path, status, range: req.headers.range ?? null, bytes });
    if (req.method === 'OPTIONS') {
      res.writeHead(204, headers);
      res.end();
      return done(204);
    }
    const file = normalize(join(root, path));
    let info;
    try {
      if (!file.startsWith(root)) throw new Error('outside');
      info = await stat(file);
      if (!info.isFile()) throw new Error('not a file');
    } catch {
      res.writeHead(404, headers);
      res.end();
      return done(404);
    }
    const size = info.size;
    headers.etag = `"${size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    headers['accept-ranges'] = server.ranges ? 'bytes' : 'none';
    headers['cache-control'] = 'no-cache';
    let start = 0;
    let end = size;
    let status = 200;
    const wanted = server.ranges && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (wanted) {
      start = Number(wanted[1]);
      end = wanted[2] === '' ? size : Math.min(Number(wanted[2]) + 1, size);
      if (start >= size || start >= end) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` });
        res.end();
        return done(416);
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
    }
    headers['content-length'] = end - start;
    res.writeHead(status, headers);
    const handle = await open(file);
    let sent = 0;
    try {
      const chunk = Buffer.alloc(64 * 1024);
      for (let at = start; at < end && !res.destroyed; ) {
        const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, end - at), at);
        if (bytesRead === 0) break;
        const more = res.write(chunk.subarray(0, bytesRead));
        sent += bytesRead;
        at += bytesRead;
        if (!more) await new Promise((r) => (res.destroyed ? r() : res.once('drain', r).once('close', r)));
      }
    } finally {
      await handle.close();
    }
    res.end();
    done(status, sent);
  });
  server.ranges = true;
  server.cors = true;
  server.expose = true;
  server.log = [];
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  server.url = `http://127.0.0.1:${server.address().port}/`;
  return server;
}
