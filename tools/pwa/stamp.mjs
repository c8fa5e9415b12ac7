// Trunk post-build hook (see Trunk.toml): writes the build's version and shell file list into
// sw.js, and makes embed.html (the app's compact view) from index.html. Runs in
// $TRUNK_STAGING_DIR, before Trunk moves the build into dist/.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const dir = process.env.TRUNK_STAGING_DIR;
if (!dir) throw new Error('TRUNK_STAGING_DIR is not set: run this as a Trunk hook');

const index = readFileSync(join(dir, 'index.html'), 'utf8');
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
const stamped = sw.replace('const BUILD = null;', `const BUILD = ${JSON.stringify({ version, shell: ['./', ...shell] })};`);
if (stamped === sw) throw new Error('sw.js has no "const BUILD = null;" line to stamp');
writeFileSync(join(dir, 'sw.js'), stamped);
console.log(`stamped sw.js: version ${version}, ${shell.length} shell files; wrote embed.html`);
