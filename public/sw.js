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
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(BUILD.shell)));
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
      const hit = await cache.match(key, { ignoreSearch: request.mode === 'navigate' });
      if (hit) return hit;
      return fetch(request);
    })(),
  );
});
