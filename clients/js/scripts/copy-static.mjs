// Copies the built browser module to static/, where the server serves it as /tokenpush-client.js
// (committed, so running the server needs no Node). `--check DIR` compares DIR's build instead.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

const here = import.meta.dirname;
const stat = resolve(here, '../../../static');
const args = process.argv.slice(2);
const check = args[0] === '--check';
const dist = resolve(here, '..', check ? args[1] : 'dist');
const files = [['index.js', 'tokenpush-client.js'], ['index.d.ts', 'tokenpush-client.d.ts']];
let stale = [];
for (const [from, to] of files) {
  const built = readFileSync(resolve(dist, from), 'utf8');
  if (check) {
    let committed = '';
    try {
      committed = readFileSync(resolve(stat, to), 'utf8');
    } catch {}
    if (committed !== built) stale.push(`static/${to}`);
  } else {
    writeFileSync(resolve(stat, to), built);
  }
}
if (stale.length) {
  console.error(`${stale.join(', ')} differ from a fresh build of clients/js: run \`npm run build\` in clients/js and commit`);
  process.exit(1);
}
