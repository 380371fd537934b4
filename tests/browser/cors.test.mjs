// CORS in real headless Chromium: a single-page app on another origin (a tiny node server on
// another loopback port) may call the JSON routes only when --allowed-origins lists it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { Server, PASSWORD } from './server.mjs';

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A static origin serving one empty page, standing in for someone's SPA. */
async function spaOrigin() {
  const http = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>spa</title>');
  });
  await new Promise((ok) => http.listen(0, '127.0.0.1', ok));
  return { http, url: `http://127.0.0.1:${http.address().port}` };
}

let allowed;
let other;
let server;
let browser;

before(async () => {
  allowed = await spaOrigin();
  other = await spaOrigin();
  server = new Server(['--allowed-origins', allowed.url]);
  await server.start();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  allowed?.http.close();
  other?.http.close();
});

async function login() {
  const r = await fetch(server.url + '/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'alice', password: PASSWORD }),
  });
  assert.equal(r.status, 200);
  return r.json();
}

/** In a page of `origin`: POST /auth/refresh (JSON, so preflighted), then GET /api/me with
 *  the new Bearer. Returns statuses, or the error the browser raised. */
async function crossOriginCalls(origin, refreshToken) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(origin + '/');
  const result = await page.evaluate(async ({ api, refreshToken }) => {
    try {
      const r = await fetch(api + '/auth/refresh', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
      const body = await r.json();
      const me = await fetch(api + '/api/me', { headers: { authorization: 'Bearer ' + body.access_token } });
      return { refresh: r.status, hasToken: typeof body.refresh_token === 'string', me: me.status };
    } catch (e) {
      return { error: e.name };
    }
  }, { api: server.url, refreshToken });
  await context.close();
  return result;
}

test('an allowed origin can refresh and call the API cross-origin', async () => {
  const tokens = await login();
  const r = await crossOriginCalls(allowed.url, tokens.refresh_token);
  assert.deepEqual(r, { refresh: 200, hasToken: true, me: 200 });
});

test('another origin is blocked by the browser, and its request never reaches the server', async () => {
  const tokens = await login();
  const r = await crossOriginCalls(other.url, tokens.refresh_token);
  assert.deepEqual(r, { error: 'TypeError' });
  // The preflight failed, so the POST was never sent: the session has not rotated.
  const sessions = await server.sessions(tokens.access_token);
  const mine = sessions.find((s) => s.session_id === tokens.session_id);
  assert.equal(mine.generation, 0);
});
