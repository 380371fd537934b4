// A bare test page for the tokenpush-client browser tests, served through Playwright routes on
// the real server's origin (so storage, Web Locks and BroadcastChannel are the server origin's),
// importing the real /tokenpush-client.js from the server. Events are reported to the test.
import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { execFileSync } from 'node:child_process';

const JS_DIR = resolve(import.meta.dirname, '../../clients/js');

const HTML = `<!doctype html><html><head><meta charset="utf-8"><title>tokenpush-client test</title>
<script type="module" src="/client-test/page.js"></script></head><body><p id="out">client test page</p></body></html>`;

const PAGE_JS = `
import { createClient } from '/tokenpush-client.js';
const params = new URLSearchParams(location.search);
const tp = createClient({ transport: params.get('transport') || 'sse' });
window.tp = tp;
const report = (kind, data) => { try { window.report && window.report(kind, data); } catch {} };
tp.on('revoked', (d) => report('revoked', d));
tp.on('tokens', (d) => report('tokens', { source: d.source, reason: d.reason, generation: d.generation }));
tp.on('error', (e) => report('error', { code: e.code, status: e.status, message: e.message }));
tp.on('activity', (a) => a.kind === 'leader' && report('leader', a.detail));
addEventListener('pageshow', (e) => report('pageshow', { persisted: e.persisted }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.callLoop = async (ms) => {
  for (;;) {
    if (tp.tokens) {
      try { await tp.fetch('/api/me'); } catch (e) { report('fetch_error', String(e)); }
    }
    await sleep(ms);
  }
};
if (params.has('loop')) window.callLoop(Number(params.get('loop')) || 500);
window.ready = true;
`;

/** Builds clients/js/dist when missing (scripts/test-js normally has). */
function distFile(name) {
  const f = resolve(JS_DIR, 'dist', name);
  if (!existsSync(f)) execFileSync(resolve(JS_DIR, 'node_modules/.bin/tsc'), ['-p', resolve(JS_DIR, 'tsconfig.json')]);
  return readFileSync(f, 'utf8');
}

/** Serves the test page (and axios + the adapter for the axios test) on `context`. */
export async function routeTestPage(context) {
  const js = { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' };
  await context.route('**/client-test/page.html*', (r) => r.fulfill({ status: 200, headers: { 'content-type': 'text/html; charset=utf-8' }, body: HTML }));
  await context.route('**/client-test/page.js', (r) => r.fulfill({ status: 200, headers: js, body: PAGE_JS }));
  await context.route('**/client-test/axios.js', (r) =>
    r.fulfill({ status: 200, headers: js, body: readFileSync(resolve(JS_DIR, 'node_modules/axios/dist/esm/axios.js'), 'utf8') }));
  await context.route('**/client-test/tokenpush-axios.js', (r) => r.fulfill({ status: 200, headers: js, body: distFile('axios.js') }));
}

export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
