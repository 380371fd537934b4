// Unit tests of the issue 20 hardening (faults never log anyone out) and the supabase-like API.
// Each test names the bug it covers; the client before issue 20 failed each one.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, decodeClaims, TokenpushError } from '../dist/index.js';
import { attachAxios } from '../dist/axios.js';
import { FakeServer, FakeWebSocket, SharedStorage, installBrowser, tokens, record, sleep, until } from './fakes.mjs';

const BASE = 'http://app.test';
const INVALID = { 'WWW-Authenticate': 'Bearer realm="tokenpush", error="invalid_token"' };
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
function setGlobal(name, value) {
  const saved = Object.getOwnPropertyDescriptor(globalThis, name);
  Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  cleanup.push(() => (saved ? Object.defineProperty(globalThis, name, saved) : delete globalThis[name]));
}
function fakeWs() {
  setGlobal('WebSocket', FakeWebSocket);
  FakeWebSocket.all = [];
}
const gen = (c) => decodeClaims(c.tokens?.access_token)?.gen;
/** Every test here is bounded: the old client hung in some of them. */
const tst = (name, fn) => test(name, { timeout: 20000 }, fn);
const never = () => new Promise(() => {});

/** A Web Storage (sessionStorage-like) whose contents can be copied, as a duplicated tab gets. */
class WebStorage {
  constructor(entries = []) {
    this.m = new Map(entries);
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.m.set(k, String(v));
  }
  removeItem(k) {
    this.m.delete(k);
  }
  copy() {
    return new WebStorage(this.m);
  }
}

/** A tab's adapter over `shared` whose token writes fail while `full.on` (quota exceeded). */
function fullable(shared, full) {
  const tab = shared.tab();
  const setItem = tab.setItem;
  tab.setItem = (k, v) => {
    if (full.on && k.endsWith('.tokens')) throw new DOMException('quota', 'QuotaExceededError');
    return setItem(k, v);
  };
  return tab;
}

// ---- WebSocket connect timeout ----

tst('20: a black-holed WebSocket upgrade times out and is retried (old: parked the leader forever)', async () => {
  fakeWs();
  const server = new FakeServer();
  const errors = [];
  const c = make(server, { transport: 'ws', timeoutMs: 200, maxBackoffMs: 20 });
  c.on('error', (e) => errors.push(e.code));
  await c.login('alice', 'pw');
  await until(() => FakeWebSocket.all.length === 1, 1000, 'ws created');
  // Never opened: the connect must give up on its own.
  await until(() => FakeWebSocket.all.length === 2, 2000, 'a second connect after the timeout');
  assert.equal(FakeWebSocket.all[0].readyState, 3, 'the stuck socket was closed');
  assert.deepEqual(errors, ['timeout']);
  FakeWebSocket.all[1].open();
  assert.equal(c.state, 'live');
});

tst('20: coming back to the page restarts a connect stuck in `connecting` (old: recover() ignored it)', async () => {
  const b = browser();
  fakeWs();
  const server = new FakeServer();
  const c = make(server, { transport: 'ws', timeoutMs: 60000, storage: new SharedStorage().tab() });
  await c.login('alice', 'pw');
  await until(() => FakeWebSocket.all.length === 1 && c.state === 'connecting', 1000, 'connecting');
  // The tab was asleep (timers frozen) for longer than the connect timeouts.
  const realNow = Date.now;
  Date.now = () => realNow() + 121000;
  cleanup.push(() => (Date.now = realNow));
  b.fire(b.doc, 'visibilitychange');
  await until(() => FakeWebSocket.all.length === 2, 1000, 'reconnected on wake');
});

// ---- request timeouts ----

tst('20: a hung /auth/refresh times out, so getAccessToken() and fetch() return (old: hung forever)', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 0 }));
  server.handlers['/auth/refresh'] = never;
  server.handlers['/api/me'] = () => server.json(200, {});
  const renewErrors = [];
  const c = make(server, { timeoutMs: 150 });
  c.on('renew_error', (e) => renewErrors.push(e.code));
  await c.login('alice', 'pw');
  const t0 = Date.now();
  assert.equal(await c.getAccessToken(), null, 'expired and not renewed: no token');
  const r = await c.fetch('/api/me');
  assert.equal(r.status, 200);
  await assert.rejects(c.refresh(), (e) => e instanceof TokenpushError && e.code === 'timeout');
  assert.ok(Date.now() - t0 < 3000);
  assert.ok(server.requests.filter((x) => x.path === '/auth/refresh').every((x) => x.signal?.aborted), 'the request was aborted');
  assert.ok(renewErrors.length >= 1 && renewErrors.every((c) => c === 'timeout'));
  assert.equal(gen(c), 0, 'tokens kept');
});

tst('20: a hung /auth/ticket times out and the channel retries (old: never connected)', async () => {
  const server = new FakeServer();
  let n = 0;
  server.handlers['/auth/ticket'] = () => (++n === 1 ? never() : undefined);
  const c = make(server, { timeoutMs: 150, maxBackoffMs: 20 });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 2000, 'live after the retry');
  assert.equal(server.count('/auth/ticket'), 2);
});

// ---- a stopped leader lets another tab lead ----

tst('20: a leader that gave up (`stopped`) releases its Web Lock so another tab takes over (old: kept it)', async () => {
  browser();
  const server = new FakeServer();
  let n = 0;
  server.handlers['/auth/ticket'] = () => (++n <= 2 ? server.json(429, { error: 'rate_limited' }, { 'Retry-After': '0' }) : undefined);
  const shared = new SharedStorage();
  const opts = { maxConnectFailures: 2, maxBackoffMs: 20 };
  const a = make(server, { storage: shared.tab(), ...opts });
  const states = [];
  a.on('state', (s) => states.push(s.state));
  await a.login('alice', 'pw');
  await until(() => a.isLeader, 1000, 'a leads');
  const b = make(server, { storage: shared.tab(), ...opts });
  await until(() => b.isLeader && b.state === 'live', 3000, 'b takes over');
  assert.equal(a.isLeader, false);
  assert.ok(states.includes('stopped'), 'a reported that it stopped');
  await until(() => a.state === 'follower' && a.channelInfo.state === 'live', 1000, 'a follows b');
});

// ---- storage failures ----

tst('20: storage full at login: the tab keeps the session in memory (old: the next sync logged it out)', async () => {
  browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const full = { on: true };
  const errors = [];
  const c = make(server, { storage: fullable(shared, full) });
  c.on('error', (e) => errors.push(e.code));
  const signedOut = [];
  c.on('revoked', (d) => signedOut.push(d.reason));
  const t = await c.login('alice', 'pw');
  assert.equal(await c.getAccessToken(), t.access_token);
  await until(() => c.state === 'live', 2000, 'its own channel');
  // A push is applied and, as no other tab can have this session, acked.
  server.streams[0].send('tokens', { ...tokens('s1', 1), reason: 'renewal' }, 's1:1');
  await until(() => gen(c) === 1, 1000, 'push applied');
  await until(() => server.count('/auth/ack') === 1, 1000, 'acked');
  assert.deepEqual(signedOut, []);
  assert.ok(errors.includes('storage_unavailable'));
});

tst('20: storage fills later: a push that could not be stored is used but never acked (old: acked, other tabs later replayed)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  const full = { on: false };
  const c = make(server, { storage: fullable(shared, full) });
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  full.on = true;
  server.streams[0].send('tokens', { ...tokens('s1', 1), reason: 'renewal' }, 's1:1');
  await until(() => gen(c) === 1, 1000, 'applied in memory');
  await sleep(50);
  assert.equal(server.count('/auth/ack'), 0, 'not acked: other tabs still hold generation 0');
  assert.equal(JSON.parse(shared.map.get('tokenpush.tokens')).gen, 0);
  // Refreshes and reconnects present what the other tabs can present too (no confirmation).
  await c.refresh();
  assert.equal(server.last('/auth/refresh').body.refresh_token, 's1.0.mac');
  c.debug.dropChannel();
  await until(() => server.count('/events') === 2, 2000, 'reconnected');
  assert.equal(server.last('/auth/ticket').body.refresh_token, 's1.0.mac');
  assert.equal(server.last('/events').url.searchParams.get('last_event_id'), 's1:0');
  assert.equal(c.tokens.session_id, 's1');
});

// ---- after a 401 ----

tst('20: after a 401 the fetch wrapper uses what another tab refreshed while it waited for the lock (old: forced a refresh)', async () => {
  const b = browser();
  const server = new FakeServer();
  const shared = new SharedStorage();
  const c = make(server, { storage: shared.tab() });
  const first = (await c.login('alice', 'pw')).access_token;
  server.handlers['/api/x'] = (rec) =>
    rec.headers.get('authorization') === 'Bearer ' + first ? new Response(null, { status: 401, headers: INVALID }) : server.json(200, {});
  // Another tab is refreshing: it holds the refresh lock.
  let release;
  b.locks.request('tokenpush:refresh', () => new Promise((r) => (release = r)));
  await until(() => release, 1000, 'lock held');
  const p = c.fetch('/api/x');
  await until(() => b.locks.held.get('tokenpush:refresh').waiters.length === 1, 1000, 'waiting for the lock');
  // ... and stores generation 1 before it lets go (this tab misses the event: frozen).
  shared.set('tokenpush.tokens', record(tokens('s1', 1), 'refresh'), { silent: true });
  release();
  const r = await p;
  assert.equal(r.status, 200);
  assert.equal(server.count('/auth/refresh'), 0);
  assert.equal(gen(c), 1);
});

tst('20: the axios adapter re-reads storage after a 401 (old: read client.tokens and rotated again)', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  const c = make(server, { storage: shared.tab() });
  const first = (await c.login('alice', 'pw')).access_token;
  const handlers = {};
  const retried = [];
  const instance = {
    interceptors: {
      request: { use: (f) => ((handlers.req = f), 1), eject() {} },
      response: { use: (_ok, err) => ((handlers.err = err), 1), eject() {} },
    },
    request: async (config) => (retried.push(config), { status: 200 }),
  };
  attachAxios(instance, c);
  // Another tab refreshed; this tab missed the storage event.
  shared.set('tokenpush.tokens', record(tokens('s1', 1), 'refresh'), { silent: true });
  const res = await handlers.err({
    config: { url: '/api/x', baseURL: BASE, headers: { Authorization: 'Bearer ' + first } },
    response: { status: 401, headers: { 'www-authenticate': INVALID['WWW-Authenticate'] } },
  });
  assert.equal(res.status, 200);
  assert.equal(server.count('/auth/refresh'), 0);
  assert.equal(decodeClaims(retried[0].headers.Authorization.slice(7)).gen, 1);
});

// ---- storage: 'session' duplicated tabs ----

tst('20: storage "session": a duplicated tab drops its copied session instead of rotating it too (old: two independent copies)', async () => {
  browser();
  const server = new FakeServer();
  const s1 = new WebStorage();
  setGlobal('sessionStorage', s1);
  const a = make(server, { storage: 'session' });
  await a.login('alice', 'pw');
  await until(() => a.state === 'live', 1000, 'a live');
  // Duplicating the tab copies its sessionStorage.
  setGlobal('sessionStorage', s1.copy());
  const b = make(server, { storage: 'session' });
  const reasons = [];
  b.on('revoked', (d) => reasons.push(d.reason));
  await until(() => b.tokens === null, 2000, 'the duplicate dropped its copy');
  await sleep(50);
  assert.deepEqual(reasons, ['duplicated_tab']);
  assert.equal(server.count('/auth/ticket'), 1, 'only the original opened a channel');
  assert.equal(server.count('/auth/logout'), 0, 'the session itself lives on');
  assert.equal(a.tokens.session_id, 's1');
  // A reload (the old page is gone) keeps the session.
  a.dispose();
  setGlobal('sessionStorage', s1);
  const c = make(server, { storage: 'session' });
  await until(() => c.state === 'live', 2000, 'reloaded tab live');
  assert.equal(c.tokens.session_id, 's1');
});

// ---- supabase-like API ----

tst('20: onAuthStateChange starts with INITIAL_SESSION; getSession() returns the session', async () => {
  const server = new FakeServer();
  const shared = new SharedStorage();
  shared.set('tokenpush.tokens', record(tokens('s1', 3)), { silent: true });
  const c = make(server, { storage: shared.tab() });
  const seen = [];
  c.onAuthStateChange((e, t) => seen.push([e, t?.session_id ?? null]));
  await sleep(0);
  assert.deepEqual(seen, [['INITIAL_SESSION', 's1']]);
  const s = await c.getSession();
  assert.equal(s.session_id, 's1');
  assert.equal(s.generation, 3);
  assert.equal(s.user.sub, 'alice');
  assert.equal(s.access_token, c.tokens.access_token);
  assert.ok(Math.abs(s.expires_at - Date.now() / 1000 - 60) < 2);
  const empty = make(new FakeServer());
  const none = [];
  empty.onAuthStateChange((e, t) => none.push([e, t]));
  await sleep(0);
  assert.deepEqual(none, [['INITIAL_SESSION', null]]);
  assert.equal(await empty.getSession(), null);
});

tst('20: a push with changed claims is USER_UPDATED, a plain renewal TOKEN_REFRESHED (old: both TOKEN_REFRESHED)', async () => {
  const server = new FakeServer();
  const c = make(server);
  await c.login('alice', 'pw');
  await until(() => c.state === 'live', 1000, 'live');
  const seen = [];
  c.onAuthStateChange((e) => seen.push(e));
  server.streams[0].send('tokens', { ...tokens('s1', 1), reason: 'renewal' }, 's1:1');
  await until(() => gen(c) === 1, 1000, 'renewal');
  server.streams[0].send('tokens', { ...tokens('s1', 2, { extra: { roles: ['admin'] } }), reason: 'claims_changed' }, 's1:2');
  await until(() => gen(c) === 2, 1000, 'claims change');
  assert.deepEqual(seen, ['INITIAL_SESSION', 'TOKEN_REFRESHED', 'USER_UPDATED']);
});

tst('20: expiring, renew_error and expired events when no new token comes', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 1 }));
  server.handlers['/auth/ticket'] = () => server.json(503, { error: 'temporarily_unavailable' });
  server.handlers['/auth/refresh'] = () => server.json(503, { error: 'temporarily_unavailable' });
  const c = make(server, { maxBackoffMs: 5000 });
  const seen = [];
  for (const k of ['expiring', 'renew_error', 'expired']) c.on(k, (d) => seen.push(k === 'renew_error' ? `${k}:${d.code}` : k));
  await c.login('alice', 'pw');
  await until(() => seen.includes('expired'), 6000, 'expired');
  await until(() => seen.includes('renew_error:temporarily_unavailable'), 6000, 'renew_error');
  assert.equal(seen[0], 'expiring');
  // Once per access token, however often the refresh is retried.
  assert.equal(seen.filter((k) => k !== 'renew_error:temporarily_unavailable').join(), 'expiring,expired');
});

tst('20: a refresh timer that fires early by the wall clock arms again (old: skipped, the token expired unrenewed)', async () => {
  const server = new FakeServer();
  server.handlers['/auth/login'] = () => server.json(200, tokens('s1', 0, { ttl: 2 }));
  const c = make(server);
  await c.login('alice', 'pw');
  // The wall clock steps back 500 ms (NTP, or Node's timers measuring from a stale loop time).
  const realNow = Date.now;
  Date.now = () => realNow() - 500;
  cleanup.push(() => (Date.now = realNow));
  await until(() => server.count('/auth/refresh') === 1, 5000, 'pull refresh');
  assert.equal(gen(c), 1);
});

tst('20: the watchdog ends a stalled SSE body even when the body ignores the abort (old: the read hung)', async () => {
  const server = new FakeServer();
  let n = 0;
  server.handlers['/events'] = (rec) => {
    if (++n > 1) return server.openStream(rec);
    // A `ready` with a 1 s heartbeat, then silence; this body never reacts to the abort signal.
    const enc = new TextEncoder();
    const body = new ReadableStream({
      start: (c) => c.enqueue(enc.encode('event: ready\ndata: {"heartbeat_secs":1}\n\n')),
    });
    return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  };
  const c = make(server, { maxBackoffMs: 20 });
  await c.login('alice', 'pw');
  await until(() => server.count('/events') === 2, 6000, 'reconnected after the missed heartbeats');
  await until(() => c.state === 'live', 1000, 'live again');
});
