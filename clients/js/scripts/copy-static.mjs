// Bundles the built browser module (dist/index.js and the modules it imports) into one file in
// static/, where the server serves it as /tokenpush-client.js (committed, so running the server
// needs no Node), and copies its declarations. `--check DIR` compares DIR's build instead.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { buildSync } from 'esbuild';

const here = import.meta.dirname;
const stat = resolve(here, '../../../static');
const args = process.argv.slice(2);
const check = args[0] === '--check';
const dist = resolve(here, '..', check ? args[1] : 'dist');

const banner =
  '// tokenpush-client, bundled from clients/js (TypeScript sources and comments there):\n' +
  '// `npm run build` in clients/js regenerates this file. Do not edit.';
const bundle = buildSync({
  entryPoints: [resolve(dist, 'index.js')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  write: false,
  absWorkingDir: dist, // the same file comments whichever DIR is built
  legalComments: 'none',
  banner: { js: banner },
}).outputFiles[0].text;
// index.d.ts declares the whole public API itself (the other modules are internal).
const built = { 'tokenpush-client.js': bundle, 'tokenpush-client.d.ts': readFileSync(resolve(dist, 'index.d.ts'), 'utf8') };
let stale = [];
for (const [to, text] of Object.entries(built)) {
  if (check) {
    let committed = '';
    try {
      committed = readFileSync(resolve(stat, to), 'utf8');
    } catch {}
    if (committed !== text) stale.push(`static/${to}`);
  } else {
    writeFileSync(resolve(stat, to), text);
  }
}
if (stale.length) {
  console.error(`${stale.join(', ')} differ from a fresh build of clients/js: run \`npm run build\` in clients/js and commit`);
  process.exit(1);
}
