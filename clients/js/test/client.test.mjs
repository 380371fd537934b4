// Unit tests of tokenpush-client with fakes (no browser, no server). Each test names the issue 12
// bug it covers; the client this package replaces (static/token-client.js, removed) failed each (noted per test).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, decodeClaims, TokenpushError } from '../dist/index.js';
import { FakeServer, FakeWebSocket, SharedStorage, installBrowser, tokens, record, jwt, sleep, until } from './fakes.mjs';

const BASE = 'http://app.test';
let cleanup = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});
function make(server, opts = {}) {
  const c = createClient({ baseUrl: BASE, fetch: server.fetch, storage: 'memory', ...opts });
  cleanup.push(() => c.dispose());
  return c;
}
function browser(opts) {
  const b = installBrowser(opts);
  cleanup.push(() => b.uninstall());
  return b;
}
const gen = (c) => decodeClaims(c.tokens?.access_token)?.gen;

// ---- 1: a generation never goes backwards; storage is the source of truth ----

test('1: a refresh response older than a push that landed meanwhile is not applied (old: _setTokens took it)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  shared.set('tokenpush.tokens', record(tokens('s1', 4)), { silent: true });
  let release;
  server.handlers['/auth/refresh'] = async () => {
    await new Promise((r) => (release = r));
    return server.json(200, tokens('s1', 5));
  };
  const c = make(server, { storage: shared.tab() });
  const p = c.refresh();
  await until(() => release, 1000, 'refresh sent');
  // A push (via another tab) stores generation 6 while the refresh is in flight.
  shared.set('tokenpush.tokens', record(tokens('s1', 6), 'renewal'));
  release();
  const t = await p;
  assert.equal(decodeClaims(t.access_token).gen, 6);
  assert.equal(gen(c), 6);
  assert.equal(JSON.parse(shared.map.get('tokenpush.tokens')).gen, 6, 'storage never went back to 5');
});

test('1: a tab re-reads storage before it presents a refresh token (old: used its in-memory copy)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  shared.set('tokenpush.tokens', record(tokens('s1', 3)), { silent: true });
  const c = make(server, { storage: shared.tab() });
  assert.equal(gen(c), 3);
  // Another tab rotated to 7 and this tab missed every event (frozen, bfcache).
  shared.set('tokenpush.tokens', record(tokens('s1', 7), 'renewal'), { silent: true });
  await c.refresh();
  assert.equal(server.last('/auth/refresh').body.refresh_token, 's1.7.mac');
  assert.equal(gen(c), 8);
});

test('1: storage events from other tabs are applied (old: no storage listener)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  shared.set('tokenpush.tokens', record(tokens('s1', 1)), { silent: true });
  const c = make(server, { storage: shared.tab() });
  const seen = [];
  c.on('tokens', (d) => seen.push([d.generation, d.source]));
  shared.set('tokenpush.tokens', record(tokens('s1', 2), 'renewal'));
  await until(() => gen(c) === 2, 1000, 'storage event applied');
  assert.deepEqual(seen, [[2, 'other-tab']]);
  // An older record written by a confused tab is not adopted.
  shared.set('tokenpush.tokens', record(tokens('s1', 1), 'renewal'));
  await sleep(20);
  assert.equal(gen(c), 2);
});

// ---- 2: a session change reopens the channel ----

test('2: logging in as someone else in another tab reopens the leader channel for the new session (old: kept the old one)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  const c = make(server, { storage: shared.tab() });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 2000, 'live');
  const first = server.streams[0];
  assert.equal(server.last('/auth/ticket').body.refresh_token, 's1.0.mac');
  // Another tab logs in as bob: session s2.
  shared.set('tokenpush.tokens', record(tokens('s2', 0)));
  await until(() => server.streams.length === 2, 2000, 'a second channel');
  assert.ok(first.closed, 'the old session channel was closed');
  assert.equal(server.last('/auth/ticket').body.refresh_token, 's2.0.mac');
  assert.equal(c.tokens.session_id, 's2');
  // A late push on the old session's channel is not applied.
  assert.equal(c.claims.sid, 's2');
});

test('2: login while logged in replaces the session, logs out the old one, and reopens the channel', async () => {
  const server = new FakeServer();
  let n = 0;
  server.handlers['/auth/login'] = () => server.json(200, tokens(`s${++n}`, 0));
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 2000, 'live');
  await c.login('bob', 'pw');
  await until(() => server.streams.length === 2 && c.state === 'live', 2000, 'reopened');
  assert.equal(server.last('/auth/ticket').body.refresh_token, 's2.0.mac');
  await until(() => server.count('/auth/logout') === 1, 1000, 'old session logged out');
  assert.equal(server.last('/auth/logout').body.refresh_token, 's1.0.mac');
  // The old session's `revoked` on its (closed) channel must not log the new one out.
  assert.equal(c.tokens.session_id, 's2');
});

// ---- 3: no hard dependency on navigator.locks; SSR-safe ----

test('3: construction without window, document or storage (SSR) does not throw', () => {
  const c = createClient({ baseUrl: BASE, fetch: async () => new Response('{}') });
  assert.equal(c.state, 'logged_out');
  assert.equal(c.tokens, null);
  c.dispose();
  const d = createClient();
  d.dispose();
});

test('3: without navigator.locks a tab still leads via the storage election, and one follower takes over (old: start() threw)', async () => {
  browser({ locks: false });
  const server = new FakeServer();
  const shared = new SharedStorage();
  const a = make(server, { storage: shared.tab() });
  await a.login('alice', 'pw');
  await until(() => a.isLeader && a.state === 'live', 3000, 'a leads');
  const b = make(server, { storage: shared.tab() });
  await sleep(1300);
  assert.equal(b.isLeader, false, 'b follows while a leads');
  assert.equal(b.state, 'follower');
  a.dispose();
  await until(() => b.isLeader && b.state === 'live', 3000, 'b takes over');
});

test('3: with Web Locks exactly one of two tabs leads; disposing the leader hands over', async () => {
  browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const a = make(server, { storage: shared.tab() });
  await a.login('alice', 'pw');
  const b = make(server, { storage: shared.tab() });
  await until(() => a.state === 'live', 2000, 'a live');
  await sleep(50);
  assert.equal(b.isLeader, false);
  a.dispose();
  await until(() => b.isLeader && b.state === 'live', 2000, 'b takes over');
});

// ---- 4: the fetch wrapper ----

test('4: a Request argument keeps its headers and gets the Bearer token (old: lost them)', async () => {
  const server = new FakeServer();
  server.handlers['/api/data'] = () => server.json(200, {});
  const c = make(server);
  await c.login('alice', 'pw');
  await c.fetch(new Request(BASE + '/api/data', { headers: { 'X-Trace': 'abc' } }));
  const r = server.last('/api/data');
  assert.equal(r.headers.get('x-trace'), 'abc');
  assert.equal(r.headers.get('authorization'), 'Bearer ' + c.tokens.access_token);
});

test('4: the 401 retry sends the body again (old: re-sent a consumed body)', async () => {
  const server = new FakeServer();
  let calls = 0;
  server.handlers['/api/post'] = () =>
    ++calls === 1
      ? new Response(null, { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="tokenpush", error="invalid_token"' } })
      : server.json(200, {});
  const c = make(server);
  await c.login('alice', 'pw');
  const stream = new ReadableStream({ start: (ctl) => (ctl.enqueue(new TextEncoder().encode('{"a":1}')), ctl.close()) });
  const r = await c.fetch('/api/post', { method: 'POST', body: stream, duplex: 'half' });
  assert.equal(r.status, 200);
  const posts = server.requests.filter((x) => x.path === '/api/post');
  assert.equal(posts.length, 2);
  assert.equal(posts[1].text, '{"a":1}');
  assert.notEqual(posts[0].headers.get('authorization'), posts[1].headers.get('authorization'));
  assert.equal(server.count('/auth/refresh'), 1);
});

test('4: no Bearer token for other origins (old: attached it to any URL)', async () => {
  const server = new FakeServer();
  const c = make(server);
  await c.login('alice', 'pw');
  await c.fetch('https://third-party.example/collect');
  const r = server.requests.find((x) => x.url.origin === 'https://third-party.example');
  assert.equal(r.headers.get('authorization'), null);
});

test('4: only 401 invalid_token triggers a refresh (old: any 401 rotated the token)', async () => {
  const server = new FakeServer();
  server.handlers['/api/app401'] = () => new Response(null, { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="app"' } });
  const c = make(server);
  await c.login('alice', 'pw');
  const r = await c.fetch('/api/app401');
  assert.equal(r.status, 401);
  assert.equal(server.count('/auth/refresh'), 0);
});

test('4: a refresh that ends in logout gives the 401 back, no TypeError (old: threw on null tokens)', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 1 }));
  server.handlers['/auth/refresh'] = () => server.json(400, { error: 'invalid_grant', error_description: 'revoked' });
  server.handlers['/api/me'] = () => new Response(null, { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
  const c = make(server, { skewMs: 5000 });
  await c.login('alice', 'pw');
  const revoked = [];
  c.on('revoked', (d) => revoked.push(d.reason));
  const r = await c.fetch('/api/me');
  assert.equal(r.status, 401);
  assert.equal(c.tokens, null);
  assert.deepEqual(revoked, ['invalid_grant']);
});

// ---- 5: stop/dispose race ----

test('5: dispose while the ticket request is in flight opens no channel (old: orphan channel)', async () => {
  const server = new FakeServer();
  let release;
  server.handlers['/auth/ticket'] = async () => {
    await new Promise((r) => (release = r));
    return server.json(200, { ticket: 't', expires_in: 30 });
  };
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => release, 1000, 'ticket requested');
  c.dispose();
  release();
  await sleep(50);
  assert.equal(server.count('/events'), 0);
});

test('5: logout while the ticket request is in flight opens no channel', async () => {
  const server = new FakeServer();
  let release;
  server.handlers['/auth/ticket'] = async () => {
    await new Promise((r) => (release = r));
    return server.json(200, { ticket: 't', expires_in: 30 });
  };
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => release, 1000, 'ticket requested');
  await c.logout();
  release();
  await sleep(50);
  assert.equal(server.count('/events'), 0);
  assert.equal(c.state, 'logged_out');
});

// ---- 6: liveness ----

test('6: a silent channel (no ping for 2 x heartbeat) is reconnected (old: live forever)', async () => {
  const server = new FakeServer();
  server.handlers['/events'] = (rec) => server.openStream(rec, { heartbeat: 1 });
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  // `: ping` comments keep it alive...
  const s = server.streams[0];
  for (let i = 0; i < 4; i++) {
    await sleep(700);
    s.write(': ping\n\n');
  }
  assert.equal(server.count('/events'), 1);
  // ...silence does not.
  await until(() => server.count('/events') === 2, 4000, 'reconnect after silence');
  assert.ok(s.closed);
  assert.ok(server.last('/events').url.searchParams.get('last_event_id').startsWith('s1:'));
});

test('6: 429 on the ticket surfaces as an error with the server code and retries stop (old: every 10 s forever)', async () => {
  const server = new FakeServer();
  server.handlers['/auth/ticket'] = () => server.json(429, { error: 'rate_limited', error_description: 'slow down' }, { 'Retry-After': '0' });
  const errors = [];
  const c = make(server, { maxBackoffMs: 20, maxConnectFailures: 3, onError: (e) => errors.push(e) });
  await c.login('alice', 'pw');
  await until(() => c.state === 'stopped', 3000, 'stopped');
  await sleep(100);
  assert.equal(server.count('/auth/ticket'), 3);
  assert.ok(errors.length >= 3 && errors.every((e) => e instanceof TokenpushError && e.code === 'rate_limited' && e.status === 429));
});

test('6: 401 invalid_ticket on the channel surfaces and stops too', async () => {
  const server = new FakeServer();
  server.handlers['/events'] = () => server.json(401, { error: 'invalid_ticket' });
  const errors = [];
  const c = make(server, { maxBackoffMs: 20, maxConnectFailures: 2 });
  c.on('error', (e) => errors.push(e.code));
  await c.login('alice', 'pw');
  await until(() => c.state === 'stopped', 3000, 'stopped');
  assert.deepEqual(errors, ['invalid_ticket', 'invalid_ticket']);
});

test('6: the backoff caps the server retry_ms', async () => {
  const server = new FakeServer();
  const c = make(server, { maxBackoffMs: 200 });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  server.streams[0].send('reconnect', { retry_ms: 600000 });
  server.streams[0].end();
  await until(() => server.count('/events') === 2, 1500, 'reconnected within the cap');
});

test('6: WebSocket: close 4001 logs out; 1012 reconnects; pings are sent; pushes are acked by id', async () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = FakeWebSocket;
  cleanup.push(() => (globalThis.WebSocket = saved));
  FakeWebSocket.all = [];
  const server = new FakeServer();
  const c = make(server, { transport: 'ws' });
  await c.login('alice', 'pw');
  await until(() => FakeWebSocket.all.length === 1, 1000, 'ws');
  FakeWebSocket.all[0].open({ type: 'ready', session_id: 's1', connection_id: 'w', heartbeat_secs: 1 });
  assert.equal(c.state, 'live');
  const t = tokens('s1', 1);
  FakeWebSocket.all[0].serverSend({ type: 'tokens', id: 's1:1', reason: 'renewal', ...t });
  assert.equal(gen(c), 1);
  assert.deepEqual(FakeWebSocket.all[0].sent.find((m) => m.type === 'ack'), { type: 'ack', id: 's1:1' });
  await sleep(1100);
  assert.ok(FakeWebSocket.all[0].sent.some((m) => m.type === 'ping'), 'app-level ping');
  FakeWebSocket.all[0].closeFromServer(1012);
  await until(() => FakeWebSocket.all.length === 2, 2000, 'reconnect after 1012');
  FakeWebSocket.all[1].open();
  FakeWebSocket.all[1].closeFromServer(4001);
  await until(() => c.state === 'logged_out', 1000, 'logged out on 4001');
});

// ---- 7: failures are reported; logout is robust ----

test('7: refresh() rejects with the server error and keeps the tokens on 503 / network / 429 (old: resolved undefined)', async () => {
  const server = new FakeServer();
  const c = make(server);
  await c.login('alice', 'pw');
  for (const [h, code] of [
    [() => server.json(503, { error: 'temporarily_unavailable' }, { 'Retry-After': '1' }), 'temporarily_unavailable'],
    [() => server.json(429, { error: 'rate_limited' }), 'rate_limited'],
    [() => Promise.reject(new TypeError('Failed to fetch')), 'network'],
  ]) {
    server.handlers['/auth/refresh'] = h;
    await assert.rejects(c.refresh(), (e) => e instanceof TokenpushError && e.code === code);
    assert.equal(gen(c), 0, 'tokens kept');
  }
});

test('7: logout uses keepalive, and an offline logout is sent again when back online (old: session stayed live)', async () => {
  const b = browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const c = make(server, { storage: shared.tab() });
  await c.login('alice', 'pw');
  server.handlers['/auth/logout'] = () => Promise.reject(new TypeError('offline'));
  await c.logout();
  assert.equal(server.last('/auth/logout').keepalive, true);
  assert.equal(c.tokens, null);
  delete server.handlers['/auth/logout'];
  b.fire(b.win, 'online');
  await until(() => server.count('/auth/logout') === 2, 1000, 'logout re-sent');
  assert.equal(server.last('/auth/logout').body.refresh_token, 's1.0.mac');
});

// ---- 8: UTF-8 claims, namespaces, dispose, wake-up events ----

test('8: non-ASCII claims decode as UTF-8 (old: atob garbled them)', () => {
  const c = decodeClaims(jwt({ name: 'Zoë Ångström 李雷 🚀', sub: 'z' }));
  assert.equal(c.name, 'Zoë Ångström 李雷 🚀');
  assert.equal(decodeClaims('garbage'), null);
});

test('8: storageKey namespaces storage, so two apps on one origin do not collide (old: fixed names)', async () => {
  browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const a = make(server, { storage: shared.tab(), storageKey: 'app-a' });
  const b = make(server, { storage: shared.tab(), storageKey: 'app-b' });
  await a.login('alice', 'pw');
  await sleep(30);
  assert.equal(b.tokens, null);
  assert.ok(shared.map.has('app-a.tokens'));
  assert.ok(!shared.map.has('tokenpush.tokens'));
  // Both lead their own channel: different lock names.
  await b.login('bob', 'pw');
  await until(() => a.isLeader && b.isLeader, 2000, 'both lead');
});

test('8: dispose removes listeners and timers', async () => {
  const b = browser();
  const server = new FakeServer();
  const c = make(server, { storage: new SharedStorage().tab() });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  let events = 0;
  c.on('tokens', () => events++);
  c.dispose();
  assert.ok(server.streams[0].closed);
  b.fire(b.win, 'online');
  b.fire(b.doc, 'visibilitychange');
  await sleep(50);
  assert.equal(events, 0);
  assert.equal(server.count('/auth/ticket'), 1);
});

test('8: visibilitychange / online end a backoff wait at once', async () => {
  const b = browser();
  const server = new FakeServer();
  let fail = true;
  server.handlers['/auth/ticket'] = () => (fail ? Promise.reject(new TypeError('offline')) : undefined);
  const c = make(server, { storage: new SharedStorage().tab(), maxBackoffMs: 60000, maxConnectFailures: 100 });
  await c.login('alice', 'pw');
  await until(() => server.count('/auth/ticket') >= 3, 5000, 'a few failures');
  fail = false;
  const n = server.count('/auth/ticket');
  await sleep(30);
  b.fire(b.doc, 'visibilitychange');
  await until(() => c.state === 'live', 500, 'recovered at once');
  assert.equal(server.count('/auth/ticket'), n + 1);
});

test('8: a stale token is refreshed when the page becomes visible again', async () => {
  const b = browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const c = make(server, { storage: shared.tab() });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  // This tab was frozen past expiry; meanwhile storage got generation 1, itself about to expire.
  shared.set('tokenpush.tokens', record(tokens('s1', 1), 'renewal', Date.now() - 1000), { silent: true });
  b.fire(b.doc, 'visibilitychange');
  await until(() => server.count('/auth/refresh') === 1, 1000, 'refresh on wake');
});

test('getAccessToken refreshes single-flight', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 0 }));
  const c = make(server);
  await c.login('alice', 'pw');
  const all = await Promise.all(Array.from({ length: 10 }, () => c.getAccessToken()));
  assert.equal(server.count('/auth/refresh'), 1);
  assert.equal(new Set(all).size, 1);
});

test('debug hooks: loseNextPush ignores (no apply, no ack) one push; requestPush posts /auth/renew for SSE', async () => {
  const server = new FakeServer();
  server.handlers['/auth/renew'] = () => new Response(null, { status: 202 });
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  const kinds = [];
  c.on('activity', (a) => kinds.push(a.kind));
  c.debug.loseNextPush();
  server.streams[0].send('tokens', { ...tokens('s1', 1), reason: 'renewal' }, 's1:1');
  await sleep(30);
  assert.equal(gen(c), 0);
  assert.equal(server.count('/auth/ack'), 0);
  server.streams[0].send('tokens', { ...tokens('s1', 1, { stamp: 1 }), reason: 'renewal' }, 's1:1');
  await until(() => gen(c) === 1, 1000, 'next push applied');
  await until(() => server.count('/auth/ack') === 1, 1000, 'acked');
  assert.equal(server.last('/auth/ack').headers.get('authorization'), 'Bearer ' + c.tokens.access_token);
  await c.debug.requestPush();
  assert.equal(server.count('/auth/renew'), 1);
  assert.deepEqual(kinds.slice(0, 2), ['push_ignored', 'push']);
});

test('onAuthStateChange reports INITIAL_SESSION, SIGNED_IN, TOKEN_REFRESHED, SIGNED_OUT and unsubscribes', async () => {
  const server = new FakeServer();
  const c = make(server);
  const seen = [];
  const off = c.onAuthStateChange((e) => seen.push(e));
  await c.login('alice', 'pw');
  await c.refresh();
  await c.logout();
  off();
  await c.login('alice', 'pw');
  assert.deepEqual(seen, ['INITIAL_SESSION', 'SIGNED_IN', 'TOKEN_REFRESHED', 'SIGNED_OUT']);
});

test('revocation reason reaches other tabs even when the storage event beats the broadcast', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  const a = make(server, { storage: shared.tab() });
  await a.login('alice', 'pw');
  const b = make(server, { storage: shared.tab() });
  const reasons = [];
  b.on('revoked', (d) => reasons.push(d.reason));
  await until(() => server.streams.length === 2, 2000, 'both channels (no browser: no election)');
  server.streams[0].send('revoked', { reason: 'admin' });
  await until(() => b.tokens === null, 1000, 'b logged out');
  assert.deepEqual(reasons, ['admin']);
});

test('an outage is reported once, not on every background retry', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 0 }));
  const errors = [];
  const c = make(server, { maxBackoffMs: 30, maxConnectFailures: 100 });
  c.on('error', (e) => errors.push(e.code));
  await c.login('alice', 'pw');
  server.handlers['/auth/refresh'] = () => Promise.reject(new TypeError('offline'));
  server.handlers['/auth/ticket'] = () => Promise.reject(new TypeError('offline'));
  for (let i = 0; i < 5; i++) await c.getAccessToken();
  await sleep(300);
  assert.ok(server.count('/auth/refresh') >= 5 && server.count('/auth/ticket') >= 3);
  assert.deepEqual(errors, ['network']);
});
