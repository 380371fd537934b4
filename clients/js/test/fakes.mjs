// Fakes for the unit tests: a browser-ish global environment (window/document events, storage
// shared between "tabs", BroadcastChannel, Web Locks), a scripted tokenpush server behind a fake
// `fetch` (SSE as a controllable stream), and a fake WebSocket.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(fn, ms = 3000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const b64u = (s) => Buffer.from(s, 'utf8').toString('base64url');

/** An unsigned JWT with the given claims (the client never verifies). */
export function jwt(claims) {
  return `${b64u(JSON.stringify({ alg: 'EdDSA', typ: 'at+jwt' }))}.${b64u(JSON.stringify(claims))}.sig`;
}

/** A TokenResponse for session `sid`, generation `gen`. */
export function tokens(sid, gen, { ttl = 60, extra = {}, stamp = 0 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    access_token: jwt({ sub: 'alice', sid, gen, iat: now, exp: now + ttl + stamp, ...extra }),
    token_type: 'Bearer',
    expires_in: ttl,
    refresh_token: `${sid}.${gen}.mac`,
    refresh_expires_in: 3600,
    session_id: sid,
  };
}

/** A storage record the way the client stores it. */
export function record(t, reason = 'login', expiresAt = Date.now() + t.expires_in * 1000) {
  const claims = JSON.parse(Buffer.from(t.access_token.split('.')[1], 'base64url').toString());
  return JSON.stringify({ v: 1, tokens: t, sid: t.session_id, gen: claims.gen, exp: claims.exp, expiresAt, reason, source: reason === 'login' ? 'login' : 'pull' });
}

/** Storage shared by several tabs: each tab gets an adapter; writes notify the other tabs. */
export class SharedStorage {
  constructor() {
    this.map = new Map();
    this.subs = new Set();
  }
  tab() {
    const self = this;
    let mine = null;
    return {
      shared: true,
      getItem: (k) => (self.map.has(k) ? self.map.get(k) : null),
      setItem(k, v) {
        self.map.set(k, String(v));
        self.notify(k, mine);
      },
      removeItem(k) {
        self.map.delete(k);
        self.notify(k, mine);
      },
      subscribe(cb) {
        mine = cb;
        self.subs.add(cb);
        return () => self.subs.delete(cb);
      },
    };
  }
  notify(k, except) {
    for (const cb of [...this.subs]) if (cb !== except) queueMicrotask(() => cb(k));
  }
  /** Writes as another tab would, optionally without telling anyone (a missed event). */
  set(k, v, { silent = false } = {}) {
    this.map.set(k, v);
    if (!silent) this.notify(k, null);
  }
}

/** Web Locks with exclusive FIFO locks and AbortSignal support. */
export class FakeLocks {
  constructor() {
    this.held = new Map();
  }
  request(name, options, cb) {
    if (typeof options === 'function') [cb, options] = [options, {}];
    return new Promise((resolve, reject) => {
      const q = this.held.get(name) ?? { busy: false, waiters: [] };
      this.held.set(name, q);
      const entry = { cb, resolve, reject, signal: options.signal };
      const grant = () => {
        q.busy = true;
        Promise.resolve()
          .then(() => cb({ name }))
          .then(resolve, reject)
          .finally(() => {
            q.busy = false;
            const next = q.waiters.shift();
            if (next) next.grant();
          });
      };
      entry.grant = grant;
      if (options.signal) {
        if (options.signal.aborted) return reject(new DOMException('aborted', 'AbortError'));
        options.signal.addEventListener('abort', () => {
          const i = q.waiters.indexOf(entry);
          if (i >= 0) {
            q.waiters.splice(i, 1);
            reject(new DOMException('aborted', 'AbortError'));
          }
        });
      }
      if (!q.busy) grant();
      else q.waiters.push(entry);
    });
  }
}

/** Installs a browser-like global environment; returns helpers and an uninstall function. */
export function installBrowser({ locks = true } = {}) {
  const win = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const saved = {};
  const set = (k, v) => {
    saved[k] = Object.getOwnPropertyDescriptor(globalThis, k);
    Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true });
  };
  set('window', win);
  set('document', doc);
  set('addEventListener', win.addEventListener.bind(win));
  set('removeEventListener', win.removeEventListener.bind(win));
  const fakeLocks = locks ? new FakeLocks() : undefined;
  set('navigator', { onLine: true, locks: fakeLocks });
  return {
    win,
    doc,
    locks: fakeLocks,
    fire: (target, type, props = {}) => target.dispatchEvent(Object.assign(new Event(type), props)),
    uninstall() {
      for (const [k, d] of Object.entries(saved)) {
        if (d) Object.defineProperty(globalThis, k, d);
        else delete globalThis[k];
      }
    },
  };
}

/**
 * A scripted server behind `fetch`. Default behaviour follows DESIGN.md's rotation rule
 * loosely; tests override `handlers[path]`. Every request is recorded.
 */
export class FakeServer {
  constructor(base = 'http://app.test') {
    this.base = base;
    this.requests = [];
    this.streams = [];
    this.gen = new Map();
    this.handlers = {};
    this.fetch = this.fetch.bind(this);
  }
  count(path) {
    return this.requests.filter((r) => r.path === path).length;
  }
  last(path) {
    return this.requests.filter((r) => r.path === path).at(-1);
  }
  json(status, body, headers = {}) {
    return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
  }
  async fetch(input, init) {
    const req = input instanceof Request ? new Request(input, init) : new Request(String(input), init);
    const url = new URL(req.url);
    const text = req.method === 'GET' || req.method === 'HEAD' ? '' : await req.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {}
    const rec = { path: url.pathname, url, method: req.method, headers: req.headers, body, text, keepalive: init?.keepalive ?? req.keepalive, signal: init?.signal ?? req.signal };
    this.requests.push(rec);
    if (url.origin !== this.base) return this.handlers.external ? this.handlers.external(rec) : new Response('third party', { status: 200 });
    const h = this.handlers[url.pathname];
    if (h) {
      const r = await h(rec, this);
      if (r) return r;
    }
    return this.default(rec);
  }
  default(rec) {
    switch (rec.path) {
      case '/auth/login':
        return this.json(200, tokens('s1', 0));
      case '/auth/refresh': {
        const [sid, g] = rec.body.refresh_token.split('.');
        return this.json(200, tokens(sid, Number(g) + 1));
      }
      case '/auth/ticket':
        return this.json(200, { ticket: 'tk' + this.requests.length, expires_in: 30 });
      case '/auth/ack':
      case '/auth/logout':
        return new Response(null, { status: 204 });
      case '/events':
        return this.openStream(rec);
      default:
        return this.json(404, { error: 'not_found' });
    }
  }
  /** An SSE response whose body the test writes to (`stream.send(event, data)`). */
  openStream(rec, { ready = true, heartbeat = 15 } = {}) {
    let ctl;
    const enc = new TextEncoder();
    const body = new ReadableStream({ start: (c) => (ctl = c) });
    const stream = {
      rec,
      closed: false,
      write: (s) => {
        if (!stream.closed) ctl.enqueue(enc.encode(s));
      },
      send: (event, data, id) => stream.write(`event: ${event}\n${id ? `id: ${id}\n` : ''}data: ${JSON.stringify(data)}\n\n`),
      end: () => {
        if (!stream.closed) {
          stream.closed = true;
          ctl.close();
        }
      },
    };
    rec.signal?.addEventListener('abort', () => {
      if (!stream.closed) {
        stream.closed = true;
        ctl.error(new DOMException('aborted', 'AbortError'));
      }
    });
    this.streams.push(stream);
    if (ready) stream.send('ready', { session_id: 's', connection_id: String(this.streams.length), heartbeat_secs: heartbeat });
    return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  }
}

/** A fake WebSocket: the test drives `serverSend`, `open`, `closeFromServer`. */
export class FakeWebSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.all.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  open(ready = { type: 'ready', session_id: 's', connection_id: 'w', heartbeat_secs: 15 }) {
    this.readyState = 1;
    this.onopen?.({});
    if (ready) this.serverSend(ready);
  }
  serverSend(m) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  closeFromServer(code) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}
