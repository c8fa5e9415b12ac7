// Switchscope's service worker: the app shell (HTML, JS, wasm, CSS, icons) is precached under a
// versioned cache and served cache-first, so the installed app starts offline. Model files are
// not handled here: the compute worker keeps them in the "switchscope-models-v1" cache itself,
// checked against the manifest's SHA-256 before use.
//
// `BUILD` is written by tools/pwa/stamp.mjs after each Trunk build: the build's version (a hash
// of the shell's contents) and the list of shell files. A new build therefore changes this file,
// which is how the browser finds an update.
const BUILD = null;

const SHELL = `switchscope-shell-${BUILD ? BUILD.version : 'unstamped'}`;

self.addEventListener('install', (event) => {
  if (!BUILD) return;
  // Not skipWaiting(): the page offers the update and the user chooses when to reload.
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL);
      // On a first visit the page has just downloaded most of these files, and they are in
      // the browser's HTTP cache: `no-cache` revalidates each one (If-None-Match against the
      // server's ETag), so an unchanged file comes back as a bodiless 304 and crosses the
      // network once, while a file that changed (an update) or was never loaded is downloaded.
      // `ok` guards against keeping an error page as the app.
      // A page is in the HTTP cache under the address it was opened at, query included
      // (`/?model=…`): revalidate that address for its file.
      const pages = (await self.clients.matchAll({ type: 'window', includeUncontrolled: true })).map((c) => new URL(c.url));
      const source = (path) => {
        const file = new URL(path, self.registration.scope);
        const root = path === 'index.html' ? new URL('./', self.registration.scope).pathname : null;
        const page = pages.find((u) => u.origin === file.origin && (u.pathname === file.pathname || u.pathname === root));
        return page ? page.href : root ?? path;
      };
      await Promise.all(
        BUILD.shell.map(async (path) => {
          const response = await fetch(new Request(source(path), { cache: 'no-cache' }));
          if (!response.ok) throw new Error(`precaching ${path}: HTTP ${response.status}`);
          await cache.put(path, response);
        }),
      );
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('switchscope-shell-') && name !== SHELL) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('message', (event) => {
  if (event.data === 'skip-waiting') self.skipWaiting();
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  // Model directories are the compute worker's business (its own verified cache).
  if (url.pathname.includes('/models/')) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(SHELL);
      const key = request.mode === 'navigate' ? new URL(url.pathname.endsWith('/') ? 'index.html' : url.pathname, url).href : request;
      // ignoreVary: a shell file was stored with whichever encoding it arrived in, and is the
      // same file for any request.
      const hit = await cache.match(key, { ignoreSearch: request.mode === 'navigate', ignoreVary: true });
      if (hit) return hit;
      return fetch(request);
    })(),
  );
});
