// tokenpush-client in real headless Chromium against the real server (issue 12, "Done when" 2):
// (a) five tabs for 3 minutes with 10 s access tokens while tabs are frozen, reloaded, sent
// through back/forward navigation and the leader closed; (b) offline longer than the access
// TTL; (c) server restart; (d) no navigator.locks; (e) the axios adapter.
//
// Freezing: headless Chromium keeps every page "visible", and Page.setWebLifecycleState
// ignores a freeze request for a visible page, so `freeze` sends it AND pauses the page's
// JavaScript with the debugger (no timers, no event handlers, network data queues up: what a
// frozen tab experiences).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { Server, PASSWORD } from './server.mjs';
import { routeTestPage, FLAGS } from './client-page.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TTL = ['--access-ttl', '10s', '--renew-lead', '3s', '--renew-jitter', '0s', '--heartbeat', '2s', '--grace', '5s'];

let server;
let browser;

before(async () => {
  server = new Server(TTL);
  await server.start();
  // Playwright turns the back/forward cache off by default; these tests want it. The test page
  // is fulfilled by Playwright (no server address), which Chromium's Local Network Access
  // checks count as public, blocking its WebSocket to 127.0.0.1; pages the server itself
  // serves are loopback and unaffected (the demo tests use WebSocket that way).
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [...FLAGS, '--disable-features=LocalNetworkAccessChecks'],
    ignoreDefaultArgs: ['--disable-back-forward-cache'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => false);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A context with the test page routed, events reported, and /auth + /api responses counted. */
async function harness({ init } = {}) {
  const context = await browser.newContext();
  if (init) await context.addInitScript(init);
  await routeTestPage(context);
  const h = {
    context,
    events: [],
    responses: [],
    count: (kind, pred = () => true) => h.events.filter((e) => e.kind === kind && pred(e.data)).length,
    status: (path, status) => h.responses.filter((r) => r.path === path && (status === undefined || r.status === status)).length,
  };
  await context.exposeBinding('report', ({ page }, kind, data) => {
    h.events.push({ at: Date.now(), tab: new URL(page.url()).searchParams.get('tab'), kind, data });
  });
  context.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/auth/') || u.pathname.startsWith('/api/')) h.responses.push({ at: Date.now(), path: u.pathname, status: r.status() });
  });
  let n = 0;
  h.open = async (query = 'loop=700') => {
    const page = await context.newPage();
    const tab = String(++n);
    await page.goto(`${server.url}/client-test/page.html?tab=${tab}&${query}`);
    await page.waitForFunction(() => window.ready === true);
    return { page, tab, cdp: await context.newCDPSession(page), frozen: false };
  };
  return h;
}

async function freeze(t) {
  await t.cdp.send('Page.setWebLifecycleState', { state: 'frozen' }).catch(() => {});
  await t.cdp.send('Debugger.enable');
  await t.cdp.send('Debugger.pause');
  t.frozen = true;
}

async function unfreeze(t) {
  await t.cdp.send('Debugger.resume').catch(() => {});
  await t.cdp.send('Debugger.disable').catch(() => {});
  await t.cdp.send('Page.setWebLifecycleState', { state: 'active' }).catch(() => {});
  t.frozen = false;
}

const isLeader = (t) => Promise.race([t.page.evaluate(() => window.tp.isLeader), sleep(2000).then(() => false)]);

async function leaderOf(tabs) {
  return waitFor(async () => {
    for (const t of tabs) if (!t.frozen && (await isLeader(t))) return t;
    return null;
  }, 8000, 'a leader tab');
}

async function login(t, user = 'alice') {
  await t.page.evaluate(([u, pw]) => window.tp.login(u, pw), [user, PASSWORD]);
}

const adminAccess = (t) => t.page.evaluate(() => window.tp.getAccessToken());

test('(a) five tabs, 3 minutes, 10 s tokens: freeze, reload, back/forward, leader closed: no 401, no revocation, no re-login', async () => {
  const h = await harness();
  const tabs = [await h.open()];
  await login(tabs[0]);
  for (let i = 0; i < 4; i++) tabs.push(await h.open());
  const start = Date.now();
  const leaderFrozen = []; // [from, to] windows in which pulls are allowed
  const log = [];
  let cycle = 0;
  while (Date.now() - start < 175000) {
    const leader = await leaderOf(tabs);
    const followers = tabs.filter((t) => t !== leader);
    switch (cycle++ % 5) {
      case 0: {
        // The leader freezes for longer than the access lifetime: followers must pull.
        const from = Date.now();
        await freeze(leader);
        await sleep(13000);
        await unfreeze(leader);
        leaderFrozen.push([from, Date.now() + 3000]);
        log.push(`froze leader ${leader.tab} 13 s`);
        break;
      }
      case 1: {
        const f = followers[0];
        await freeze(f);
        await sleep(13000);
        await unfreeze(f);
        log.push(`froze follower ${f.tab} 13 s`);
        break;
      }
      case 2:
        await followers[1].page.reload();
        await sleep(2000);
        await leader.page.reload();
        log.push(`reloaded follower ${followers[1].tab} and leader ${leader.tab}`);
        break;
      case 3:
        // Away and back: restored from the back/forward cache (pageshow persisted) when allowed.
        for (const t of [followers[2], leader]) {
          await t.page.goto(server.url + '/healthz');
          await sleep(1500);
          await t.page.goBack({ waitUntil: 'commit' });
          await t.page.waitForFunction(() => window.ready === true);
          log.push(`${t === leader ? 'leader' : 'follower'} ${t.tab} away and back`);
          await sleep(1000);
        }
        break;
      case 4: {
        const i = tabs.indexOf(leader);
        await leader.page.close();
        tabs.splice(i, 1, await h.open());
        log.push(`closed leader ${leader.tab}, opened ${tabs[i].tab}`);
        break;
      }
    }
    await sleep(4000);
  }
  await sleep(3000);
  const elapsed = Date.now() - start;

  const me = h.status('/api/me');
  const me401 = h.status('/api/me', 401);
  const refused = h.responses.filter((r) => r.path.startsWith('/auth/') && r.status >= 400 && r.status < 500);
  const pulls = h.responses.filter((r) => r.path === '/auth/refresh');
  const pushes = h.count('tokens', (d) => d.source === 'push');
  const strayPulls = pulls.filter((p) => !leaderFrozen.some(([a, b]) => p.at >= a && p.at <= b));
  const bfcache = h.count('pageshow', (d) => d.persisted);
  const summary = { elapsedMs: elapsed, me, me401, pushes, pulls: pulls.length, strayPulls: strayPulls.length, leaderFrozenWindows: leaderFrozen.length, bfcacheRestores: bfcache, refused, log };
  console.log('# five tabs:', JSON.stringify(summary));

  assert.ok(elapsed >= 175000);
  assert.ok(me > 500, `calls made: ${me}`);
  assert.equal(me401, 0, '/api/me answered 401');
  assert.equal(h.count('revoked'), 0, 'revocations');
  assert.deepEqual(refused, [], 'refused /auth calls (invalid_grant would mean a stale generation)');
  assert.equal(h.status('/auth/login'), 1, 're-logins');
  assert.ok(pushes >= 15, `renewals pushed: ${pushes}`);
  assert.deepEqual(strayPulls, [], 'pull refreshes happen only while the leader is frozen');
  assert.ok(pulls.length >= 1, 'the frozen leader made the followers pull');
  assert.ok(bfcache >= 1, 'pages were restored from the back/forward cache');

  // Every tab agrees on the tokens, exactly one leads and its channel is live.
  const views = await Promise.all(tabs.map((t) => t.page.evaluate(() => [window.tp.tokens?.access_token, window.tp.isLeader, window.tp.channelInfo.state])));
  assert.equal(new Set(views.map((v) => v[0])).size, 1, 'all tabs hold the same token');
  assert.equal(views.filter((v) => v[1]).length, 1, 'one leader');
  assert.ok(views.every((v) => v[2] === 'live'), `channel states: ${views.map((v) => v[2])}`);
  const sessions = await server.sessions(await adminAccess(tabs[0]));
  assert.equal(sessions.length, 1, 'one live session');
  await h.context.close();
});

test('(b) offline longer than the access TTL, then online: recovers without re-login', async () => {
  const h = await harness();
  const a = await h.open();
  await login(a, 'bob');
  const b = await h.open();
  await waitFor(() => a.page.evaluate(() => window.tp.state === 'live'), 5000, 'live');
  const before = await a.page.evaluate(() => window.tp.tokens.session_id);
  await h.context.setOffline(true);
  // An open stream can survive the emulated outage; a real network change kills it: drop it too.
  await a.page.evaluate(() => window.tp.debug.dropChannel());
  await sleep(13000);
  const offlineState = await a.page.evaluate(() => window.tp.state);
  const offlineFailures = h.count('fetch_error');
  assert.ok(['offline', 'backoff', 'connecting'].includes(offlineState), `state while offline: ${offlineState}`);
  assert.ok(offlineFailures > 0, 'requests failed while offline');
  await h.context.setOffline(false);
  await waitFor(() => a.page.evaluate(() => window.tp.state === 'live' || window.tp.channelInfo.state === 'live'), 10000, 'live again');
  for (const t of [a, b]) {
    const r = await t.page.evaluate(async () => (await window.tp.fetch('/api/me')).status);
    assert.equal(r, 200);
  }
  assert.equal(await a.page.evaluate(() => window.tp.tokens.session_id), before);
  assert.equal(h.count('revoked'), 0);
  assert.equal(h.status('/auth/login'), 1);
  assert.equal(h.status('/api/me', 401), 0);
  console.log('# offline:', JSON.stringify({ offlineState, offlineFailures, pulls: h.status('/auth/refresh'), errors: h.events.filter((e) => e.kind === 'error').map((e) => e.data.code) }));
  await h.context.close();
});

for (const transport of ['sse', 'ws']) {
test(`(c) server restart over ${transport}: every tab resumes`, async () => {
  const h = await harness();
  const tabs = [await h.open()];
  await login(tabs[0]);
  tabs.push(await h.open(), await h.open());
  await waitFor(() => tabs[0].page.evaluate(() => window.tp.state === 'live'), 5000, 'live');
  if (transport === 'ws') {
    await tabs[1].page.evaluate(() => window.tp.setTransport('ws'));
    await waitFor(async () => {
      const s = await Promise.all(tabs.map((t) => t.page.evaluate(() => [window.tp.channelInfo.transport, window.tp.channelInfo.state])));
      return s.every(([k, st]) => k === 'ws' && st === 'live');
    }, 8000, 'every tab sees a live WebSocket channel');
    await waitFor(async () => h.count('tokens', (d) => d.source === 'push') >= 1, 12000, 'a push over WebSocket');
  }
  await server.restart();
  const t0 = Date.now();
  await waitFor(async () => {
    const s = await Promise.all(tabs.map((t) => t.page.evaluate(() => window.tp.channelInfo.state)));
    return s.every((x) => x === 'live');
  }, 15000, 'every tab sees a live channel again');
  const resumedMs = Date.now() - t0;
  // Tokens keep coming after the restart: a push on the new channel within one renewal period.
  const pushesBefore = h.count('tokens', (d) => d.source === 'push' && d.reason !== 'resume');
  await waitFor(async () => h.count('tokens', (d) => d.source === 'push' && d.reason !== 'resume') > pushesBefore, 12000, 'a renewal after the restart');
  for (const t of tabs) assert.equal(await t.page.evaluate(async () => (await window.tp.fetch('/api/me')).status), 200);
  assert.equal(h.count('revoked'), 0);
  assert.equal(h.status('/auth/login'), 1);
  assert.equal(h.status('/api/me', 401), 0);
  console.log('# restart:', JSON.stringify({ transport, resumedMs }));
  await h.context.close();
});
}

test('(d) without navigator.locks (non-secure origin): one leader by storage election, hand-over on close', async () => {
  const h = await harness({ init: () => delete Navigator.prototype.locks });
  const a = await h.open();
  assert.equal(await a.page.evaluate(() => 'locks' in navigator), false);
  await login(a);
  const b = await h.open();
  const c = await h.open();
  const tabs = [a, b, c];
  await waitFor(() => a.page.evaluate(() => window.tp.state === 'live'), 5000, 'a live');
  await sleep(2500);
  const leaders = await Promise.all(tabs.map(isLeader));
  assert.deepEqual(leaders, [true, false, false]);
  await waitFor(async () => h.count('tokens', (d) => d.source === 'push') >= 1, 12000, 'a push');
  await a.page.close();
  await waitFor(async () => (await isLeader(b)) || (await isLeader(c)), 6000, 'a follower takes over');
  await sleep(1000);
  const now = await Promise.all([b, c].map(isLeader));
  assert.equal(now.filter(Boolean).length, 1, `leaders after hand-over: ${now}`);
  for (const t of [b, c]) assert.equal(await t.page.evaluate(async () => (await window.tp.fetch('/api/me')).status), 200);
  assert.equal(h.count('revoked'), 0);
  assert.equal(h.count('error'), 0);
  await h.context.close();
});

test('(e) axios adapter: 20 concurrent requests on an expired token make exactly one refresh', async () => {
  const own = new Server(['--access-ttl', '60s', '--renew-lead', '10s', '--renew-jitter', '0s']);
  await own.start();
  const context = await browser.newContext();
  try {
    await routeTestPage(context);
    let refreshes = 0;
    context.on('request', (r) => new URL(r.url()).pathname === '/auth/refresh' && refreshes++);
    const page = await context.newPage();
    await page.goto(own.url + '/client-test/page.html?tab=1');
    await page.waitForFunction(() => window.ready === true);
    const run = (mode) =>
      page.evaluate(
        async ([pw, mode]) => {
          const { default: axios } = await import('/client-test/axios.js');
          const { attachAxios } = await import('/client-test/tokenpush-axios.js');
          const { createClient } = await import('/tokenpush-client.js');
          if (!window.tp.tokens) await window.tp.login('alice', pw);
          const rec = JSON.parse(localStorage.getItem('tokenpush.tokens'));
          let tp;
          if (mode === 'expired') {
            // A client that finds an expired token in its storage (the tab slept past expiry).
            rec.expiresAt = Date.now() - 1000;
            localStorage.setItem('ax.tokens', JSON.stringify(rec));
            tp = window.ax = createClient({ storageKey: 'ax' });
          } else {
            // The server rejects the token the client believes valid (revoked key, clock skew).
            tp = window.ax;
            const cur = JSON.parse(localStorage.getItem('ax.tokens'));
            cur.exp += 1; // an update the tab adopts
            cur.tokens.access_token = cur.tokens.access_token.slice(0, -4) + 'AAAA';
            localStorage.setItem('ax.tokens', JSON.stringify(cur));
          }
          const api = axios.create();
          attachAxios(api, tp);
          const rs = await Promise.all(Array.from({ length: 20 }, () => api.get('/api/me').then((r) => r.status, (e) => e.response?.status ?? String(e))));
          return rs;
        },
        [PASSWORD, mode],
      );
    const expired = await run('expired');
    assert.deepEqual(expired, Array(20).fill(200));
    assert.equal(refreshes, 1, 'one refresh for 20 requests on a locally expired token');
    refreshes = 0;
    const rejected = await run('rejected');
    assert.deepEqual(rejected, Array(20).fill(200));
    assert.equal(refreshes, 1, 'one refresh for 20 requests answered 401 invalid_token');
    // A third-party origin never gets the token.
    const leaked = await page.evaluate(async () => {
      const { default: axios } = await import('/client-test/axios.js');
      const { attachAxios } = await import('/client-test/tokenpush-axios.js');
      let auth = 'none';
      // An adapter instead of the network: it sees the final headers.
      const api = axios.create({
        adapter: async (config) => {
          auth = config.headers.get('Authorization') ?? 'none';
          return { status: 200, statusText: 'OK', data: {}, headers: {}, config };
        },
      });
      attachAxios(api, window.tp);
      await api.get('http://third-party.invalid/x').catch(() => {});
      return auth;
    });
    assert.equal(leaked, 'none');
  } finally {
    await context.close();
    await own.stop();
  }
});
