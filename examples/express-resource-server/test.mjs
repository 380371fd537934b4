// Starts a real tokenpush (TOKENPUSH_BIN, default ../../target/debug/tokenpush) with 6 s
// access tokens, this API in-process, and checks: a pushed token is accepted; after logout
// the token still passes until `exp` (JWKS-only verification) and is refused after it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from './server.mjs';

const SERVICE_KEY = 'express-example-service-key-0123456789';
const BIN = process.env.TOKENPUSH_BIN ?? new URL('../../target/debug/tokenpush', import.meta.url).pathname;

async function startTokenpush() {
  const dir = mkdtempSync(join(tmpdir(), 'tokenpush-express-'));
  writeFileSync(join(dir, 'users.toml'), '');
  writeFileSync(join(dir, 'service.key'), SERVICE_KEY, { mode: 0o600 });
  const child = spawn(BIN, [
    '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--store', 'memory',
    '--access-ttl', '6s', '--renew-lead', '2s', '--renew-jitter', '0s',
    '--users', join(dir, 'users.toml'), '--service-key-file', join(dir, 'service.key'),
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /tokenpush listening on (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`tokenpush exited ${code}`)));
  });
  return { child, base, dir };
}

async function post(url, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body ?? {}) });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

/** Opens an SSE channel and resolves with the first `tokens` event's data. */
async function firstPush(base, refreshToken) {
  const { body } = await post(`${base}/auth/ticket`, { refresh_token: refreshToken });
  const ctrl = new AbortController();
  const r = await fetch(`${base}/events?ticket=${body.ticket}`, { signal: ctrl.signal });
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('stream ended');
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (/^event: tokens$/m.test(frame)) {
        ctrl.abort();
        return JSON.parse(/^data: (.*)$/m.exec(frame)[1]);
      }
    }
  }
}

test('express resource server: pushed token accepted, revoked token refused after exp', async (t) => {
  const { child, base } = await startTokenpush();
  t.after(() => child.kill());
  // A session for an app user, minted with the service key (no users file entry needed).
  const { status, body: mint } = await post(
    `${base}/admin/sessions`,
    { sub: 'user-1', name: 'Example User', roles: ['reader'] },
    SERVICE_KEY,
  );
  assert.equal(status, 200);
  const app = await createApp(base);
  const server = app.listen(0, '127.0.0.1');
  t.after(() => server.close());
  await new Promise((r) => server.once('listening', r));
  const api = `http://127.0.0.1:${server.address().port}/hello`;
  const call = async (token) =>
    (await fetch(api, { headers: token ? { authorization: `Bearer ${token}` } : {} })).status;

  assert.equal(await call(), 401);
  assert.equal(await call(mint.refresh_token), 401, 'a refresh token is not an access token');
  const pushed = await firstPush(base, mint.refresh_token);
  assert.equal(pushed.reason, 'renewal');
  assert.equal(await call(pushed.access_token), 200, 'pushed token accepted');

  assert.equal((await post(`${base}/auth/logout`, null, pushed.access_token)).status, 204);
  const exp = JSON.parse(Buffer.from(pushed.access_token.split('.')[1], 'base64url')).exp;
  if (Date.now() / 1000 < exp) assert.equal(await call(pushed.access_token), 200, 'valid until exp');
  while (Date.now() / 1000 <= exp + 3) await new Promise((r) => setTimeout(r, 250));
  assert.equal(await call(pushed.access_token), 401, 'expired token refused');
});
