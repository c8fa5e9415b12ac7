// Trunk post-build hook (see Trunk.toml): moves Trunk's inline start-up script into a file (after
// a check for WebAssembly SIMD) and gives index.html a strict Content-Security-Policy, makes embed.html (the app's compact view)
// from index.html, and writes the build's version and shell file list into sw.js. Runs in
// $TRUNK_STAGING_DIR, before Trunk moves the build into dist/.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const dir = process.env.TRUNK_STAGING_DIR;
if (!dir) throw new Error('TRUNK_STAGING_DIR is not set: run this as a Trunk hook');

let index = readFileSync(join(dir, 'index.html'), 'utf8');

// Trunk starts the app with an inline module script; a strict policy allows no inline script,
// so it moves into boot-<hash>.js.
const inline = /<script type="module">([\s\S]*?)<\/script>/g;
const scripts = [...index.matchAll(inline)];
if (scripts.length !== 1) throw new Error(`expected one inline module script in index.html, found ${scripts.length}`);
// The app's wasm is built for WebAssembly SIMD (see .cargo/config.toml): a browser without it
// could not compile it, so the start-up script checks first (a module of one SIMD instruction)
// and says what is missing instead of failing without a word. Import declarations are hoisted,
// so the check runs before the app starts; the throw ends the module there.
const simdCheck = `if (!WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]))) {
  const note = document.createElement('p');
  note.setAttribute('role', 'alert');
  note.dataset.testid = 'no-simd';
  note.textContent = 'Switchscope needs WebAssembly SIMD, which this browser does not have: use Chrome or Edge 91, Firefox 89, Safari 16.4 or later.';
  document.body.replaceChildren(note);
  throw new Error('WebAssembly SIMD is not available');
}
`;
const boot = simdCheck + scripts[0][1].trim() + '\n';
const bootName = `boot-${createHash('sha256').update(boot).digest('hex').slice(0, 16)}.js`;
writeFileSync(join(dir, bootName), boot);
index = index.replace(scripts[0][0], `<script type="module" src="/${bootName}"></script>`);
if (/<script(?![^>]*\bsrc=)[^>]*>/.test(index)) throw new Error('index.html still has an inline script');

// Other origins `?model=` may load from (see web/index.html) are also the only other origins
// the page may connect to.
const origins = (index.match(/<meta name="switchscope-model-origins" content="([^"]*)"/)?.[1] ?? '')
  .split(/\s+/)
  .filter((o) => /^https?:\/\/[^\s'";,]+$/.test(o));
const policy = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  ['connect-src', "'self'", ...origins].join(' '),
  "worker-src 'self'",
  "manifest-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
].join('; ');
index = index.replace('<meta charset="utf-8" />', `<meta charset="utf-8" />\n    <meta http-equiv="Content-Security-Policy" content="${policy}" />`);
if (!index.includes('Content-Security-Policy')) throw new Error('index.html has no <meta charset="utf-8" /> to put the policy after');
writeFileSync(join(dir, 'index.html'), index);
writeFileSync(join(dir, 'embed.html'), index.replace('<title>Switchscope</title>', '<title>Switchscope (embedded)</title>'));

function files(d) {
  return readdirSync(d).flatMap((name) => {
    const path = join(d, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const shell = files(dir)
  .map((p) => relative(dir, p).split('\\').join('/'))
  .filter((p) => !p.startsWith('models/') && p !== 'sw.js')
  .sort();
const hash = createHash('sha256');
for (const p of shell) hash.update(p).update(readFileSync(join(dir, p)));
const version = hash.digest('hex').slice(0, 16);
const sw = readFileSync(join(dir, 'sw.js'), 'utf8');
const stamped = sw.replace('const BUILD = null;', `const BUILD = ${JSON.stringify({ version, shell })};`);
if (stamped === sw) throw new Error('sw.js has no "const BUILD = null;" line to stamp');
writeFileSync(join(dir, 'sw.js'), stamped);
console.log(`stamped sw.js: version ${version}, ${shell.length} shell files; wrote ${bootName}, embed.html; policy: ${policy}`);
