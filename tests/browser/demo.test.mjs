// End-to-end tests of the demo page and token-client.js in real headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { Server, PASSWORD } from './server.mjs';

const ARTIFACTS = resolve(import.meta.dirname, 'artifacts');
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
let browser;

before(async () => {
  server = new Server();
  await server.start();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function login(page, user = 'alice') {
  await page.goto(server.url + '/');
  await page.fill('#username', user);
  await page.fill('#password', PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForFunction(() => window.tp.state === 'live', null, { timeout: 10000 });
}

const gen = (page) => page.evaluate(() => Number(document.getElementById('gen').textContent));
const access = (page) => page.evaluate(() => window.tp.tokens && window.tp.tokens.access_token);

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

test('login through the form; /api/me every 200 ms sees no 401 over 3 renewals', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page);
  const startGen = await gen(page);
  const result = await page.evaluate(async () => {
    const seen = { ok: 0, bad: 0, gens: [], reasons: {} };
    window.tp.addEventListener('tokens', (e) => (seen.reasons[e.detail.reason] = (seen.reasons[e.detail.reason] || 0) + 1));
    const end = Date.now() + 14000;
    while (Date.now() < end) {
      const r = await window.tp.fetch('/api/me');
      if (r.status === 200) seen.ok++; else seen.bad++;
      seen.gens.push(Number(document.getElementById('gen').textContent));
      await new Promise((r) => setTimeout(r, 200));
    }
    return seen;
  });
  assert.equal(result.bad, 0, `${result.bad} calls refused`);
  assert.ok(result.reasons.renewal >= 3, `pushed renewals: ${JSON.stringify(result.reasons)}`);
  assert.equal(result.reasons.refresh, undefined, 'the channel kept the token fresh: no pull refresh was needed');
  assert.ok(result.ok > 50);
  assert.ok((await gen(page)) >= startGen + 3, `generation climbed from ${startGen} to ${await gen(page)}`);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.click('#call-me');
  await sleep(300);
  await page.screenshot({ path: resolve(ARTIFACTS, 'demo.png') });
  await context.close();
});

test('three tabs share one channel and the same tokens; closing the leader hands over', async () => {
  const context = await browser.newContext();
  const first = await context.newPage();
  await login(first);
  const tabs = [first, await context.newPage(), await context.newPage()];
  for (const p of tabs.slice(1)) await p.goto(server.url + '/');
  const sid = await first.evaluate(() => window.tp.tokens.session_id);
  const channelsOf = async (page) => {
    const s = (await server.sessions(await access(page))).find((x) => x.session_id === sid);
    return s.channels.sse + s.channels.ws;
  };
  await sleep(1000);
  assert.equal(await channelsOf(first), 1, 'exactly one live channel for three tabs');
  const g0 = await gen(first);
  await waitFor(async () => (await gen(first)) > g0, 8000, 'a renewal');
  await sleep(300);
  const tokens = await Promise.all(tabs.map(access));
  assert.ok(tokens.every((t) => t === tokens[0]), 'all tabs hold the same access token');

  const leaders = await Promise.all(tabs.map((p) => p.evaluate(() => window.tp.leader)));
  assert.equal(leaders.filter(Boolean).length, 1);
  const leader = tabs[leaders.indexOf(true)];
  const rest = tabs.filter((p) => p !== leader);
  await leader.close();
  const t0 = Date.now();
  await waitFor(async () => (await Promise.all(rest.map((p) => p.evaluate(() => window.tp.leader && window.tp.state === 'live')))).some(Boolean), 3000, 'a new leader');
  assert.ok(Date.now() - t0 < 3000);
  const g1 = await gen(rest[0]);
  await waitFor(async () => (await gen(rest[0])) > g1 && (await gen(rest[1])) > g1, 8000, 'renewals after handover');
  assert.equal(await channelsOf(rest[0]), 1);
  await context.close();
});

test('logging out in one tab logs out every tab within a second', async () => {
  const context = await browser.newContext();
  const a = await context.newPage();
  await login(a, 'bob');
  const b = await context.newPage();
  await b.goto(server.url + '/');
  await waitFor(() => b.evaluate(() => window.tp.state === 'follower' || window.tp.state === 'live'), 5000, 'tab b following');
  const t0 = Date.now();
  await b.click('#logout');
  await waitFor(async () => (await Promise.all([a, b].map((p) => p.evaluate(() => !document.getElementById('login-panel').hidden)))).every(Boolean), 1000, 'every tab logged out');
  assert.ok(Date.now() - t0 <= 1000);
  await context.close();
});

test('the page recovers from a server restart without a new login', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page);
  const sid = await page.evaluate(() => window.tp.tokens.session_id);
  await server.restart();
  await waitFor(() => page.evaluate(() => window.tp.state === 'live'), 15000, 'channel live again');
  const g = await gen(page);
  await waitFor(async () => (await gen(page)) > g, 8000, 'a renewal after restart');
  assert.equal(await page.evaluate(() => window.tp.tokens.session_id), sid, 'same session');
  assert.ok(await page.evaluate(() => document.getElementById('login-panel').hidden), 'still logged in');
  const status = await page.evaluate(async () => (await window.tp.fetch('/api/me')).status);
  assert.equal(status, 200);
  await context.close();
});

test('switching SSE → WS → SSE keeps renewing', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page);
  const sid = await page.evaluate(() => window.tp.tokens.session_id);
  for (const kind of ['ws', 'sse']) {
    await page.click(kind === 'ws' ? '#use-ws' : '#use-sse');
    await waitFor(() => page.evaluate((k) => window.tp.transport === k && window.tp.state === 'live', kind), 5000, `${kind} live`);
    const s = (await server.sessions(await access(page))).find((x) => x.session_id === sid);
    assert.equal(s.channels[kind], 1, `the server sees one ${kind} channel`);
    const g = await gen(page);
    await waitFor(async () => (await gen(page)) > g, 8000, `a renewal over ${kind}`);
  }
  await context.close();
});
