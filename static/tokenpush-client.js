// tokenpush-client, bundled from clients/js (TypeScript sources and comments there):
// `npm run build` in clients/js regenerates this file. Do not edit.

// util.js
var isObj = (v) => typeof v === "object" && v !== null;
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function")
    return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}
function lockManager() {
  const n = globalThis.navigator;
  const l = n?.locks;
  return l && typeof l.request === "function" ? l : null;
}
function autoTransport() {
  const g = globalThis;
  return typeof g.fetch === "function" && typeof g.ReadableStream === "function" ? "sse" : g.WebSocket ? "ws" : "sse";
}

// http.js
function retryAfterMs(r) {
  const h = r.headers.get("Retry-After");
  if (!h)
    return void 0;
  const s = Number(h);
  return Number.isFinite(s) ? Math.max(0, s * 1e3) : void 0;
}
async function errorFrom(r, what) {
  let body = null;
  try {
    body = await r.json();
  } catch {
  }
  return errorOf({ r, body }, what);
}
function errorOf({ r, body }, what) {
  const code = isObj(body) && typeof body.error === "string" ? body.error : `http_${r.status}`;
  const desc = isObj(body) && typeof body.error_description === "string" ? body.error_description : `HTTP ${r.status}`;
  return new TokenpushError(code, `${what}: ${desc}`, r.status, retryAfterMs(r));
}
var netError = (what, e) => e instanceof TokenpushError ? e : new TokenpushError("network", `${what}: ${e instanceof Error ? e.message : String(e)}`);
var isOutage = (e) => e.code === "network" || e.code === "timeout";
function isInvalidToken(r) {
  return r.status === 401 && /error\s*=\s*"?invalid_token/i.test(r.headers.get("WWW-Authenticate") ?? "");
}
async function postJson(fetchImpl, url, what, timeoutMs, opts = {}) {
  const abort = new AbortController();
  let timer;
  const timedOut = new Promise((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new TokenpushError("timeout", `${what}: no response within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  timedOut.catch(() => {
  });
  const headers = {};
  if (opts.body !== void 0)
    headers["Content-Type"] = "application/json";
  if (opts.bearer !== void 0)
    headers.Authorization = "Bearer " + opts.bearer;
  try {
    const init = { method: "POST", headers, signal: abort.signal };
    if (opts.body !== void 0)
      init.body = JSON.stringify(opts.body);
    if (opts.keepalive)
      init.keepalive = true;
    const r = await Promise.race([fetchImpl(url, init), timedOut]);
    const text = await Promise.race([r.text(), timedOut]);
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
    }
    return { r, body };
  } catch (e) {
    throw netError(what, e);
  } finally {
    clearTimeout(timer);
  }
}

// store.js
function validTokens(v) {
  return isObj(v) && typeof v.access_token === "string" && typeof v.refresh_token === "string" && typeof v.session_id === "string" && typeof v.expires_in === "number";
}
function pickTokens(v) {
  return {
    access_token: v.access_token,
    token_type: v.token_type ?? "Bearer",
    expires_in: v.expires_in,
    refresh_token: v.refresh_token,
    refresh_expires_in: v.refresh_expires_in,
    session_id: v.session_id
  };
}
function generationOf(t, claims) {
  if (claims && typeof claims.gen === "number")
    return claims.gen;
  const m = /^[^.]+\.(\d+)\./.exec(t.refresh_token);
  return m ? Number(m[1]) : 0;
}
function makeRec(t, reason, source, now) {
  const tokens = pickTokens(t);
  const claims = decodeClaims(tokens.access_token);
  return {
    v: 1,
    tokens,
    sid: tokens.session_id,
    gen: generationOf(tokens, claims),
    exp: typeof claims?.exp === "number" ? claims.exp : 0,
    expiresAt: now + tokens.expires_in * 1e3,
    reason,
    source
  };
}
var newer = (a, b) => a.gen > b.gen || a.gen === b.gen && a.exp > b.exp;
function parseRec(raw) {
  if (!raw)
    return null;
  try {
    const r = JSON.parse(raw);
    if (!isObj(r) || r.v !== 1 || !validTokens(r.tokens) || typeof r.gen !== "number")
      return null;
    return r;
  } catch {
    return null;
  }
}
var MemoryStorage = class {
  constructor() {
    this.m = /* @__PURE__ */ new Map();
    this.shared = false;
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.m.set(k, v);
  }
  removeItem(k) {
    this.m.delete(k);
  }
};
function webStorage(kind) {
  try {
    const s = kind === "local" ? globalThis.localStorage : globalThis.sessionStorage;
    if (!s)
      return null;
    const probe = "__tokenpush_probe__";
    s.setItem(probe, "1");
    s.removeItem(probe);
    const adapter = {
      getItem: (k) => s.getItem(k),
      setItem: (k, v) => s.setItem(k, v),
      removeItem: (k) => s.removeItem(k),
      shared: kind === "local"
    };
    const w = globalThis;
    if (kind === "local" && typeof w.addEventListener === "function") {
      adapter.subscribe = (cb) => {
        const h = (e) => {
          if (e.storageArea === s || e.storageArea === void 0)
            cb(e.key);
        };
        w.addEventListener("storage", h);
        return () => w.removeEventListener("storage", h);
      };
    }
    return adapter;
  } catch {
    return null;
  }
}
function identity(c) {
  if (!c)
    return "";
  const { iat: _i, nbf: _n, exp: _e, jti: _j, gen: _g, ...rest } = c;
  return JSON.stringify(Object.keys(rest).sort().map((k) => [k, rest[k]]));
}

// election.js
var LEADER_TICK_MS = 1e3;
var LEADER_STALE_MS = 3500;
var Election = class {
  constructor(host) {
    this.host = host;
    this.leader = false;
    this.competing = false;
    this.lockAbort = null;
    this.releaseLock = null;
    this.timer = null;
  }
  /** Starts competing for the channel (idempotent). */
  compete() {
    const h = this.host;
    if (!h.eligible() || this.competing)
      return;
    this.competing = true;
    if (h.alone()) {
      this.becomeLeader();
      return;
    }
    h.announce("hello");
    const locks = lockManager();
    if (locks) {
      const abort = new AbortController();
      this.lockAbort = abort;
      locks.request(h.lockName, { signal: abort.signal }, () => {
        if (abort.signal.aborted || !h.eligible())
          return;
        return new Promise((release) => {
          this.releaseLock = release;
          this.becomeLeader();
        });
      }).catch(() => {
      }).finally(() => {
        if (this.lockAbort === abort)
          this.lockAbort = null;
      });
      h.changed();
      return;
    }
    this.timer = setInterval(() => this.tick(), LEADER_TICK_MS);
    this.tick();
    h.changed();
  }
  /** Storage election: claim or refresh the record, or yield to a live one. */
  tick() {
    const h = this.host;
    if (!this.competing || h.alone() || lockManager())
      return;
    const now = Date.now();
    const cur = this.readRecord();
    if (cur && cur.id !== h.id && now - cur.at < LEADER_STALE_MS) {
      if (this.leader) {
        this.leader = false;
        h.lost();
      }
      return;
    }
    try {
      h.store.setItem(h.recordKey, JSON.stringify({ id: h.id, at: now }));
    } catch {
      return;
    }
    if (this.leader)
      return;
    setTimeout(() => {
      const again = this.readRecord();
      if (this.competing && !this.leader && again && again.id === h.id)
        this.becomeLeader();
    }, 150);
  }
  /** Storage election: removes this tab's record and tells the others to take over. */
  dropRecord() {
    const h = this.host;
    const cur = this.readRecord();
    try {
      if (cur && cur.id === h.id)
        h.store.removeItem(h.recordKey);
    } catch {
    }
    h.announce("leader-gone");
  }
  /**
   * Frees the lock (or record) for another tab but keeps leading this tab's own channel: for a
   * tab that stops sharing its tokens.
   */
  detach() {
    if (this.timer)
      clearInterval(this.timer);
    this.timer = null;
    if (this.leader && !this.host.alone() && !lockManager())
      this.dropRecord();
    this.lockAbort?.abort();
    this.lockAbort = null;
    const release = this.releaseLock;
    this.releaseLock = null;
    release?.();
  }
  /** Stops competing and leading; the lock goes to the next tab. */
  leave() {
    this.detach();
    this.competing = false;
    const was = this.leader;
    this.leader = false;
    if (was)
      this.host.changed();
  }
  becomeLeader() {
    if (this.leader || !this.host.eligible())
      return;
    this.leader = true;
    this.host.lead();
  }
  readRecord() {
    try {
      const v = JSON.parse(this.host.store.getItem(this.host.recordKey) ?? "null");
      return isObj(v) && typeof v.id === "string" && typeof v.at === "number" ? v : null;
    } catch {
      return null;
    }
  }
};

// refresh.js
var refreshMargin = (rec, skewMs) => Math.min(skewMs, rec.tokens.expires_in * 100);
var expiresSoon = (rec, skewMs, now = Date.now()) => rec.expiresAt - refreshMargin(rec, skewMs) <= now;
async function withLock(locks, name, maxWaitMs, fn) {
  if (!locks)
    return fn();
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), maxWaitMs);
  let ran = false;
  try {
    return await locks.request(name, { signal: abort.signal }, () => {
      clearTimeout(timer);
      ran = true;
      return fn();
    });
  } catch (e) {
    if (ran)
      throw e;
    return fn();
  } finally {
    clearTimeout(timer);
  }
}
var ExpiryTimers = class {
  constructor(host) {
    this.host = host;
    this.due = null;
    this.expiry = null;
    this.noticedExpiring = null;
    this.noticedExpired = null;
    this.retries = 0;
  }
  clear() {
    if (this.due)
      clearTimeout(this.due);
    if (this.expiry)
      clearTimeout(this.expiry);
    this.due = null;
    this.expiry = null;
  }
  /** (Re)arms the timers for the token the tab holds now. */
  schedule() {
    this.clear();
    const h = this.host;
    const rec = h.rec();
    if (!rec || !h.active())
      return;
    const margin = refreshMargin(rec, h.skewMs);
    const spread = h.leader() ? 0 : Math.random() * margin * 0.3;
    const due = Math.max(0, rec.expiresAt - margin - Date.now() + spread);
    const access = rec.tokens.access_token;
    this.expiry = setTimeout(() => {
      this.expiry = null;
      if (h.rec()?.tokens.access_token !== access || this.noticedExpired === access)
        return;
      this.noticedExpired = access;
      h.notice("expired", { expiresAt: rec.expiresAt, generation: rec.gen });
    }, Math.min(Math.max(0, rec.expiresAt - Date.now()), 2 ** 31 - 1));
    this.due = setTimeout(() => {
      this.due = null;
      if (!h.rec())
        return;
      h.sync();
      const cur = h.rec();
      if (cur && !expiresSoon(cur, h.skewMs)) {
        this.schedule();
        return;
      }
      if (cur && this.noticedExpiring !== cur.tokens.access_token) {
        this.noticedExpiring = cur.tokens.access_token;
        h.notice("expiring", { expiresAt: cur.expiresAt, generation: cur.gen });
      }
      h.ensureFresh().then(() => this.retries = 0, () => {
        if (!h.rec() || this.due)
          return;
        const wait = Math.min(3e4, 2e3 * 2 ** Math.min(this.retries++, 4));
        this.due = setTimeout(() => this.schedule(), wait);
      });
    }, Math.min(due, 2 ** 31 - 1));
  }
};

// sse.js
var sseStart = () => ({ buf: "", event: "", data: [], id: "" });
function parseSse(state, chunk) {
  let buf = state.buf + chunk;
  let event = state.event;
  let data = state.data.slice();
  let id = state.id;
  const events = [];
  let comments = 0;
  for (; ; ) {
    const nl = buf.search(/\r\n|\r|\n/);
    if (nl < 0)
      break;
    if (buf[nl] === "\r" && nl === buf.length - 1)
      break;
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
    if (line === "") {
      if (data.length > 0 || event)
        events.push({ event: event || "message", data: data.join("\n"), id });
      event = "";
      data = [];
      continue;
    }
    if (line.startsWith(":")) {
      comments++;
      continue;
    }
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" "))
      value = value.slice(1);
    if (field === "event")
      event = value;
    else if (field === "data")
      data.push(value);
    else if (field === "id")
      id = value;
  }
  return { state: { buf, event, data, id }, events, comments };
}

// transport.js
async function openSse(host, rec, ticket) {
  const abort = new AbortController();
  let closedWith = null;
  let wasLive = false;
  let reader = null;
  const close = (why) => {
    if (closedWith === null)
      closedWith = why;
    abort.abort();
    reader?.cancel().catch(() => {
    });
  };
  const conn = { close };
  host.attach(conn);
  host.seen();
  const stopDog = host.watchdog(close);
  const lastId = `${rec.sid}:${rec.gen}`;
  const connectTimer = setTimeout(() => close("connect timeout"), host.timeoutMs);
  try {
    let r;
    try {
      const opened = host.fetch(`${host.base}/events?ticket=${encodeURIComponent(ticket)}&last_event_id=${encodeURIComponent(lastId)}`, { headers: { Accept: "text/event-stream", "Last-Event-ID": lastId }, signal: abort.signal, cache: "no-store" });
      const aborted = new Promise((_, reject) => abort.signal.addEventListener("abort", () => reject(new Error("aborted"))));
      aborted.catch(() => {
      });
      r = await Promise.race([opened, aborted]);
    } catch (e) {
      if (closedWith !== null)
        return closedOutcome(host, closedWith, false);
      return { kind: "network", error: netError("channel", e) };
    } finally {
      clearTimeout(connectTimer);
    }
    if (!r.ok || !r.body) {
      const err = await errorFrom(r, "channel");
      return r.status >= 500 ? { kind: "network", error: err } : { kind: "refused", error: err };
    }
    reader = r.body.getReader();
    const body = reader;
    const dec = new TextDecoder();
    let parser = sseStart();
    let result = null;
    const dispatch = (e) => {
      let d = null;
      try {
        d = e.data ? JSON.parse(e.data) : {};
      } catch {
        return null;
      }
      if (!isObj(d))
        return null;
      switch (e.event) {
        case "ready":
          wasLive = true;
          host.ready(d, "sse");
          return null;
        case "tokens":
          if (host.push(d)) {
            const access = d.access_token;
            host.ack(access, generationOf(d, decodeClaims(access)));
          }
          return null;
        case "revoked":
          return host.revoked(typeof d.reason === "string" ? d.reason : "revoked") ? { kind: "revoked" } : { kind: "reopen" };
        case "reconnect":
          return { kind: "reconnect", retryMs: typeof d.retry_ms === "number" ? d.retry_ms : 1e3, wasLive };
        default:
          return null;
      }
    };
    try {
      while (result === null) {
        const { value, done } = await body.read();
        if (done)
          break;
        host.seen();
        if (!host.current())
          break;
        const out = parseSse(parser, dec.decode(value, { stream: true }));
        parser = out.state;
        for (const e of out.events)
          if ((result = dispatch(e)) !== null)
            break;
      }
    } catch (e) {
      if (closedWith !== null)
        return closedOutcome(host, closedWith, wasLive);
      return { kind: "network", wasLive, error: netError("channel", e) };
    } finally {
      abort.abort();
    }
    if (result)
      return { ...result, wasLive };
    if (closedWith !== null)
      return closedOutcome(host, closedWith, wasLive);
    host.activity("channel_closed", { reason: "server closed the stream" });
    return { kind: "closed", wasLive };
  } finally {
    stopDog();
    host.detach(conn);
  }
}
function closedOutcome(host, why, wasLive) {
  host.activity("channel_closed", { reason: why });
  if (why === "stopped")
    return { kind: "stopped", wasLive };
  if (why === "connect timeout") {
    return { kind: "network", wasLive, error: new TokenpushError("timeout", `channel: no connection within ${host.timeoutMs} ms`) };
  }
  if (why === "dropped" || why.startsWith("watchdog") || why === "heartbeat missed")
    return { kind: "closed", wasLive };
  return { kind: "reopen", wasLive };
}
function openWs(host, ticket) {
  const WS = globalThis.WebSocket;
  if (!WS)
    return Promise.resolve({ kind: "refused", error: new TokenpushError("unsupported", "no WebSocket here") });
  return new Promise((resolve) => {
    const url = `${host.base.replace(/^http/, "ws")}/ws?ticket=${encodeURIComponent(ticket)}`;
    let ws;
    try {
      ws = new WS(url);
    } catch (e) {
      resolve({ kind: "refused", error: netError("channel", e) });
      return;
    }
    let opened = false;
    let wasLive = false;
    let closedWith = null;
    let outcome = null;
    let stopDog = (() => {
      const t = setTimeout(() => close("connect timeout"), host.timeoutMs);
      return () => clearTimeout(t);
    })();
    let pinger = null;
    const send = (m) => {
      try {
        if (ws.readyState === 1)
          ws.send(JSON.stringify(m));
      } catch {
      }
    };
    const close = (why) => {
      if (closedWith === null)
        closedWith = why;
      try {
        ws.close(1e3);
      } catch {
      }
      finish();
    };
    const conn = { close };
    host.attach(conn);
    host.seen();
    let finished = false;
    const finish = (ev) => {
      if (finished)
        return;
      finished = true;
      stopDog();
      if (pinger)
        clearInterval(pinger);
      host.detach(conn);
      if (outcome)
        return resolve({ ...outcome, wasLive });
      if (closedWith !== null)
        return resolve(closedOutcome(host, closedWith, wasLive));
      const code = ev?.code ?? 1006;
      if (code === 4001) {
        resolve(host.revoked("revoked") ? { kind: "revoked", wasLive } : { kind: "reopen", wasLive });
        return;
      }
      host.activity("channel_closed", { reason: `close ${code}` });
      if (!opened) {
        const offline = globalThis.navigator?.onLine === false;
        resolve(offline ? { kind: "network", error: new TokenpushError("network", "channel: offline") } : { kind: "refused", error: new TokenpushError("ws_refused", "channel: WebSocket connect refused or failed") });
        return;
      }
      if (code === 1008 || code === 1009) {
        resolve({ kind: "refused", wasLive, error: new TokenpushError("policy", `channel: closed by the server (${code})`) });
        return;
      }
      if (code === 1012) {
        resolve({ kind: "reconnect", retryMs: 250 + Math.random() * 750, wasLive });
        return;
      }
      resolve({ kind: "closed", wasLive });
    };
    ws.onopen = () => {
      opened = true;
      host.seen();
      if (!host.current())
        return close("stopped");
      host.sendWith(send);
      stopDog();
      stopDog = host.watchdog(close);
      pinger = setInterval(() => send({ type: "ping" }), Math.max(1e3, host.heartbeatMs()));
    };
    ws.onmessage = (e) => {
      host.seen();
      if (!host.current())
        return;
      let m;
      try {
        m = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (!isObj(m))
        return;
      if (m.type === "ready") {
        wasLive = true;
        host.ready(m, "ws");
        if (pinger)
          clearInterval(pinger);
        pinger = setInterval(() => send({ type: "ping" }), Math.max(1e3, host.heartbeatMs()));
      } else if (m.type === "tokens") {
        const { type: _t, id, ...data } = m;
        if (host.push(data)) {
          send({ type: "ack", id });
          const generation = generationOf(data, decodeClaims(String(data.access_token)));
          host.activity("ack", { generation });
        }
      } else if (m.type === "revoked") {
        outcome = host.revoked(typeof m.reason === "string" ? m.reason : "revoked") ? { kind: "revoked" } : { kind: "reopen" };
      } else if (m.type === "reconnect") {
        outcome = { kind: "reconnect", retryMs: typeof m.retry_ms === "number" ? m.retry_ms : 1e3 };
      }
    };
    ws.onerror = () => {
    };
    ws.onclose = (ev) => finish(ev);
  });
}

// client.js
var DUP_CHECK_MS = 300;
var Client = class {
  constructor(opts) {
    this.degraded = false;
    this.id = randomId();
    this.rec = null;
    this.listeners = /* @__PURE__ */ new Map();
    this.authListeners = /* @__PURE__ */ new Set();
    this.bc = null;
    this.unsubs = [];
    this.disposed = false;
    this.suspended = false;
    this.gaveUp = false;
    this.tabId = null;
    this.dupCheck = null;
    this.onTabTaken = null;
    this.run = 0;
    this.conn = null;
    this.chState = "logged_out";
    this.connectingSince = 0;
    this.wake = null;
    this.lastSeen = 0;
    this.heartbeatMs = 15e3;
    this.loseNext = false;
    this.wsSend = null;
    this.remote = null;
    this.refreshing = null;
    this.lastNetworkReport = 0;
    const g = globalThis;
    this.browser = typeof g.window !== "undefined" && typeof g.document !== "undefined";
    const base = opts.baseUrl ?? g.location?.origin ?? "";
    this.base = base.replace(/\/+$/, "");
    let origin = null;
    try {
      origin = new URL(this.base || "x:", g.location?.href).origin;
      if (origin === "null")
        origin = null;
    } catch {
      origin = null;
    }
    this.origin = origin;
    this.key = opts.storageKey ?? "tokenpush";
    const s = opts.storage ?? "local";
    this.store = typeof s === "object" ? s : s === "memory" ? new MemoryStorage() : webStorage(s) ?? new MemoryStorage();
    this.shared = this.store.shared ?? true;
    this.election = new Election(this.electionHost());
    const f = opts.fetch ?? globalThis.fetch;
    this.fetchImpl = f ? ((input, init) => f(input, init)) : (() => Promise.reject(new TypeError("no fetch available")));
    this.onError = opts.onError;
    this.skewMs = opts.skewMs ?? 5e3;
    this.expiry = new ExpiryTimers({
      skewMs: this.skewMs,
      rec: () => this.rec,
      sync: () => this.sync(),
      active: () => !this.disposed && !this.suspended,
      leader: () => this.leader,
      ensureFresh: () => this.ensureFresh(),
      notice: (type, detail) => this.emit(type, detail)
    });
    this.maxBackoffMs = opts.maxBackoffMs ?? 1e4;
    this.maxFailures = opts.maxConnectFailures ?? 5;
    this.timeoutMs = opts.timeoutMs ?? 1e4;
    const wanted = opts.transport ?? "sse";
    const saved = this.store.getItem(this.k("transport"));
    this.kind = saved === "sse" || saved === "ws" ? saved : wanted === "auto" ? autoTransport() : wanted;
    this.rec = parseRec(this.store.getItem(this.k("tokens")));
    if (s === "session" && this.browser && !(this.store instanceof MemoryStorage))
      this.checkDuplicate();
    this.attach();
    if (this.rec) {
      const start = () => {
        if (!this.rec || this.disposed)
          return;
        this.scheduleExpiry();
        this.compete();
      };
      if (this.dupCheck)
        void this.dupCheck.then(start);
      else
        start();
    }
    this.retryPendingLogout();
  }
  /**
   * `storage: 'session'`: a duplicated tab starts with a copy of the original's sessionStorage,
   * tokens included, and two tabs rotating one session on their own push each other past the
   * grace window (theft). So each tab keeps its own id in sessionStorage; a tab that starts with
   * an id there asks over BroadcastChannel whether a live tab has it. If one answers, this tab
   * is the duplicate and drops its copy (the original keeps the session, which is not logged
   * out); after a reload nobody answers. Nothing presents the refresh token before this is known.
   */
  checkDuplicate() {
    const key = this.k("tab");
    let prior = null;
    try {
      prior = this.store.getItem(key);
      this.tabId = randomId();
      this.store.setItem(key, this.tabId);
    } catch {
      return;
    }
    const BC = globalThis.BroadcastChannel;
    if (!prior || !this.rec || !BC)
      return;
    const asked = prior;
    this.dupCheck = new Promise((resolve) => {
      const done = (duplicate) => {
        clearTimeout(timer);
        this.onTabTaken = null;
        this.dupCheck = null;
        if (duplicate && this.rec && !this.disposed) {
          try {
            this.store.removeItem(this.k("tokens"));
          } catch {
          }
          this.loggedOut("duplicated_tab");
        }
        resolve();
      };
      const timer = setTimeout(() => done(false), DUP_CHECK_MS);
      this.onTabTaken = (id) => id === asked && done(true);
    });
    queueMicrotask(() => this.post({ t: "tab?", id: asked }));
  }
  // ---- public API ----
  get baseUrl() {
    return this.base;
  }
  get tokens() {
    return this.rec ? this.rec.tokens : null;
  }
  get claims() {
    return this.rec ? decodeClaims(this.rec.tokens.access_token) : null;
  }
  get state() {
    if (!this.rec)
      return "logged_out";
    return this.leader ? this.chState : this.gaveUp && !this.remote ? "stopped" : "follower";
  }
  get transport() {
    return this.kind;
  }
  get isLeader() {
    return this.leader;
  }
  get channelInfo() {
    if (this.leader || !this.rec)
      return this.localInfo();
    return this.remote ?? { state: "follower", transport: this.kind, leaderId: null };
  }
  get debug() {
    return {
      dropChannel: () => this.leader ? this.conn?.close("dropped") : this.post({ t: "drop" }),
      requestPush: () => this.requestPush(),
      loseNextPush: () => {
        if (this.leader)
          this.loseNext = true;
        else
          this.post({ t: "lose" });
      }
    };
  }
  on(type, cb) {
    let set = this.listeners.get(type);
    if (!set)
      this.listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(cb);
    return () => set.delete(cb);
  }
  onAuthStateChange(cb) {
    this.authListeners.add(cb);
    queueMicrotask(() => {
      if (this.disposed || !this.authListeners.has(cb))
        return;
      this.sync();
      try {
        cb("INITIAL_SESSION", this.rec ? this.rec.tokens : null);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    });
    return () => this.authListeners.delete(cb);
  }
  async getSession() {
    await this.getAccessToken();
    const rec = this.rec;
    if (!rec)
      return null;
    return {
      ...rec.tokens,
      expires_at: Math.floor(rec.expiresAt / 1e3),
      user: decodeClaims(rec.tokens.access_token),
      generation: rec.gen
    };
  }
  async login(username, password, deviceId) {
    const body = { username, password };
    if (deviceId !== void 0)
      body.device_id = deviceId;
    let reply;
    try {
      reply = await this.postJson("login", "/auth/login", { body });
    } catch (e) {
      throw this.report(netError("login", e));
    }
    if (!reply.r.ok)
      throw this.report(errorOf(reply, "login"));
    const t = reply.body;
    if (!validTokens(t))
      throw this.report(new TokenpushError("invalid_response", "login: malformed token response", reply.r.status));
    const old = this.readStore();
    const rec = makeRec(t, "login", "login", Date.now());
    this.writeStore(rec);
    this.post({ t: "tokens" });
    this.adopt(rec, "login", "login");
    if (old && old.sid !== rec.sid)
      void this.sendLogout(old.tokens);
    return rec.tokens;
  }
  async logout() {
    const rec = this.readStore() ?? this.rec;
    if (rec)
      this.endStored(rec.sid, "logout");
    else
      this.store.removeItem(this.k("tokens"));
    this.loggedOut("logout");
    if (rec)
      await this.sendLogout(rec.tokens);
  }
  async getAccessToken() {
    this.sync();
    if (!this.rec)
      return null;
    if (!this.expiresSoon(this.rec))
      return this.rec.tokens.access_token;
    try {
      return (await this.ensureFresh()).access_token;
    } catch {
      this.sync();
      return this.rec && this.rec.expiresAt > Date.now() ? this.rec.tokens.access_token : null;
    }
  }
  refresh(opts = {}) {
    if (!this.refreshing) {
      const how = opts.rejected === void 0 ? { force: true } : { force: false, rejected: opts.rejected };
      this.refreshing = this.doRefresh(how).finally(() => this.refreshing = null);
    }
    return this.refreshing;
  }
  async fetch(input, init) {
    const target = typeof input === "string" || input instanceof URL ? this.resolve(String(input)) : input;
    const req = new Request(target, init);
    if (!this.origin || new URL(req.url).origin !== this.origin)
      return this.fetchImpl(req);
    const send = (token2) => {
      const copy = req.clone();
      if (token2 === null)
        return this.fetchImpl(copy);
      const headers = new Headers(copy.headers);
      headers.set("Authorization", "Bearer " + token2);
      return this.fetchImpl(new Request(copy, { headers }));
    };
    const token = await this.getAccessToken();
    const r = await send(token);
    if (token === null || !isInvalidToken(r))
      return r;
    this.sync();
    let next = null;
    if (this.rec && this.rec.tokens.access_token !== token)
      next = this.rec.tokens.access_token;
    else {
      try {
        next = (await this.refreshAfterReject(token)).access_token;
      } catch {
        return r;
      }
    }
    if (!next || next === token)
      return r;
    return send(next);
  }
  setTransport(kind) {
    if (kind !== "sse" && kind !== "ws")
      throw new TypeError('transport must be "sse" or "ws"');
    try {
      this.store.setItem(this.k("transport"), kind);
    } catch {
    }
    this.post({ t: "transport", kind });
    this.applyTransport(kind);
  }
  dispose() {
    if (this.disposed)
      return;
    this.disposed = true;
    this.stopChannel();
    this.election.leave();
    for (const u of this.unsubs.splice(0))
      u();
    this.bc?.close();
    this.bc = null;
    this.clearExpiryTimers();
    this.listeners.clear();
    this.authListeners.clear();
  }
  // ---- storage: the source of truth ----
  k(name) {
    return `${this.key}.${name}`;
  }
  url(path) {
    return this.base + path;
  }
  resolve(u) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(u))
      return u;
    if (u.startsWith("//"))
      return new URL(u, this.base || globalThis.location?.href).href;
    if (u.startsWith("/"))
      return this.base + u;
    const loc = globalThis.location;
    return new URL(u, loc?.href ?? this.base + "/").href;
  }
  readStore() {
    try {
      return parseRec(this.store.getItem(this.k("tokens")));
    } catch {
      return null;
    }
  }
  /** Stores `rec`; false when storage refused it (quota, disabled): the tab then degrades. */
  writeStore(rec) {
    try {
      this.store.setItem(this.k("tokens"), JSON.stringify(rec));
      return true;
    } catch (e) {
      this.degrade(e);
      return false;
    }
  }
  /**
   * Storage refused a write. Other tabs cannot see this tab's tokens any more, so it stops
   * sharing: it keeps its tokens in memory, leaves the election (another tab may lead) and runs
   * its own channel. It keeps reading storage (another tab's newer tokens are still welcome)
   * but never confirms what it could not store: acks, refreshes, tickets and `Last-Event-ID`
   * present the generation storage holds (see `presentable`), which the server answers with the
   * unconfirmed successor again (rotation rule, I2). Confirming it would leave the other tabs
   * one generation behind and turn their next refresh into a replay after the grace window.
   */
  degrade(e) {
    if (this.degraded)
      return;
    const wasLeader = this.leader;
    this.election.detach();
    this.degraded = true;
    this.shared = false;
    if (!wasLeader) {
      this.election.competing = false;
      queueMicrotask(() => this.compete());
    }
    this.report(new TokenpushError("storage_unavailable", `storage refused a write (${e instanceof Error ? e.name : String(e)}): this tab continues alone`));
  }
  /** Whether this tab may confirm `rec` to the server (ack it, present it). */
  confirmable(rec) {
    if (!this.degraded)
      return true;
    const stored = this.readStore();
    return !stored || stored.sid !== rec.sid || !newer(rec, stored);
  }
  /** The record whose refresh token this tab presents: its own, or (degraded) what storage holds. */
  presentable() {
    const rec = this.rec;
    if (!rec || this.confirmable(rec))
      return rec;
    return this.readStore();
  }
  /**
   * Offers tokens this tab obtained (push or pull). They are taken only when they belong to the
   * stored session and are newer than what is stored; returns whether they were taken and may
   * be confirmed (acked) to the server.
   */
  offer(t, reason, source) {
    const rec = makeRec(t, reason, source, Date.now());
    const cur = this.readStore();
    const base = this.degraded ? this.rec : this.shared || cur ? cur : this.rec;
    if (!base || base.sid !== rec.sid || !newer(rec, base)) {
      this.sync();
      return false;
    }
    const stored = this.writeStore(rec);
    this.post({ t: "tokens" });
    this.adopt(rec, reason, source);
    return stored || this.confirmable(rec);
  }
  /**
   * Ends session `sid` in storage for every tab, leaving a note of why: the other tabs learn it
   * from the `storage` event or the broadcast, whichever comes first, with the same reason.
   */
  endStored(sid, reason) {
    try {
      this.store.setItem(this.k("ended"), JSON.stringify({ sid, reason }));
      const cur = this.readStore();
      if (!cur || cur.sid === sid)
        this.store.removeItem(this.k("tokens"));
    } catch {
    }
    this.post({ t: "revoked", reason, sid });
  }
  /** Why session `sid` ended, as the tab that saw it wrote down; default `logout`. */
  endReason(sid) {
    try {
      const v = JSON.parse(this.store.getItem(this.k("ended")) ?? "null");
      if (isObj(v) && v.sid === sid && typeof v.reason === "string")
        return v.reason;
    } catch {
    }
    return "logout";
  }
  /** Re-reads storage and applies what another tab did (new tokens, new session, logout). */
  sync() {
    if (this.disposed)
      return;
    const cur = this.readStore();
    const mine = this.rec;
    if (!cur) {
      if (mine && this.shared)
        this.loggedOut(this.endReason(mine.sid));
      return;
    }
    if (this.degraded && mine && cur.sid !== mine.sid)
      return;
    if (!mine || cur.sid !== mine.sid || newer(cur, mine)) {
      const source = cur.source === "login" ? "login" : "other-tab";
      this.adopt(cur, cur.reason ?? "storage", source);
    }
  }
  /** Makes `rec` this tab's tokens and tells listeners. */
  adopt(rec, reason, source) {
    const prev = this.rec;
    if (prev && prev.tokens.access_token === rec.tokens.access_token)
      return;
    this.rec = rec;
    const sessionChanged = !prev || prev.sid !== rec.sid;
    this.scheduleExpiry();
    this.emit("tokens", { tokens: rec.tokens, reason, generation: rec.gen, expiresAt: rec.expiresAt, source });
    const claimsChanged = !sessionChanged && identity(decodeClaims(prev.tokens.access_token)) !== identity(decodeClaims(rec.tokens.access_token));
    this.emitAuth(sessionChanged ? "SIGNED_IN" : claimsChanged ? "USER_UPDATED" : "TOKEN_REFRESHED", rec.tokens);
    if (sessionChanged) {
      if (this.leader)
        this.reopen("session changed");
      this.compete();
      if (!prev)
        this.emitState();
    }
  }
  loggedOut(reason) {
    const had = this.rec;
    this.rec = null;
    this.clearExpiryTimers();
    this.stopChannel();
    this.election.leave();
    this.gaveUp = false;
    this.chState = "logged_out";
    if (!had)
      return;
    this.emitState();
    this.emit("revoked", { reason });
    this.emitAuth("SIGNED_OUT", null);
  }
  // ---- refresh ----
  expiresSoon(rec, now = Date.now()) {
    return expiresSoon(rec, this.skewMs, now);
  }
  /** Refreshes only if, after re-reading storage, the token still needs it. */
  ensureFresh() {
    this.sync();
    if (this.rec && !this.expiresSoon(this.rec))
      return Promise.resolve(this.rec.tokens);
    if (!this.refreshing)
      this.refreshing = this.doRefresh({ force: false }).finally(() => this.refreshing = null);
    return this.refreshing;
  }
  refreshAfterReject(rejected) {
    this.sync();
    if (this.rec && this.rec.tokens.access_token !== rejected)
      return Promise.resolve(this.rec.tokens);
    return this.refresh({ rejected });
  }
  /**
   * One pull refresh. `force`: even if the token is fresh; `rejected`: only if storage still
   * holds that (refused) access token once this tab has the refresh lock.
   */
  async doRefresh(how) {
    if (this.dupCheck)
      await this.dupCheck;
    return withLock(this.shared ? lockManager() : null, `${this.key}:refresh`, 3e3, async () => {
      this.sync();
      const mine = this.rec;
      if (!mine)
        throw this.report(new TokenpushError("not_logged_in", "refresh: not logged in"));
      if (how.rejected !== void 0 ? mine.tokens.access_token !== how.rejected : !how.force && !this.expiresSoon(mine)) {
        return mine.tokens;
      }
      const rec = this.presentable() ?? mine;
      this.activity("pull", { generation: rec.gen });
      let reply;
      try {
        reply = await this.postJson("refresh", "/auth/refresh", { body: { refresh_token: rec.tokens.refresh_token } });
      } catch (e) {
        throw this.renewFailed(netError("refresh", e));
      }
      const r = reply.r;
      if (r.ok) {
        const t = reply.body;
        if (!validTokens(t))
          throw this.renewFailed(new TokenpushError("invalid_response", "refresh: malformed token response", r.status));
        this.offer(t, "refresh", "pull");
        this.sync();
        return this.rec ? this.rec.tokens : t;
      }
      const err = errorOf(reply, "refresh");
      if (err.code === "invalid_grant") {
        this.sync();
        const now = this.readStore();
        if (now && (now.sid !== rec.sid || newer(now, rec)))
          return now.tokens;
        this.endStored(rec.sid, "invalid_grant");
        this.loggedOut("invalid_grant");
      }
      throw this.renewFailed(err);
    });
  }
  renewFailed(e) {
    this.emit("renew_error", e);
    return this.report(e);
  }
  postJson(what, path, opts = {}) {
    return postJson(this.fetchImpl, this.url(path), what, this.timeoutMs, opts);
  }
  clearExpiryTimers() {
    this.expiry.clear();
  }
  scheduleExpiry() {
    this.expiry.schedule();
  }
  async sendLogout(t) {
    const body = JSON.stringify({ refresh_token: t.refresh_token });
    try {
      const { r } = await this.postJson("logout", "/auth/logout", { body: { refresh_token: t.refresh_token }, keepalive: true });
      if (r.status >= 500)
        throw new Error(`HTTP ${r.status}`);
      this.store.removeItem(this.k("pending-logout"));
    } catch {
      try {
        this.store.setItem(this.k("pending-logout"), body);
      } catch {
      }
    }
  }
  retryPendingLogout() {
    let body = null;
    try {
      body = this.store.getItem(this.k("pending-logout"));
    } catch {
      return;
    }
    if (!body)
      return;
    this.store.removeItem(this.k("pending-logout"));
    try {
      const t = JSON.parse(body);
      if (isObj(t) && typeof t.refresh_token === "string")
        void this.sendLogout(t);
    } catch {
    }
  }
  async requestPush() {
    if (this.leader && this.wsSend) {
      this.wsSend({ type: "renew" });
      return;
    }
    const token = await this.getAccessToken();
    if (!token)
      return;
    const reply = await this.postJson("renew", "/auth/renew", { bearer: token }).catch((e) => {
      throw this.report(netError("renew", e));
    });
    if (!reply.r.ok)
      throw this.report(errorOf(reply, "renew"));
  }
  // ---- events ----
  emit(type, detail) {
    for (const cb of [...this.listeners.get(type) ?? []]) {
      try {
        cb(detail);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
  emitAuth(e, t) {
    for (const cb of [...this.authListeners]) {
      try {
        cb(e, t);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
  report(e) {
    if (isOutage(e)) {
      const now = Date.now();
      if (now - this.lastNetworkReport < 1e4)
        return e;
      this.lastNetworkReport = now;
    } else {
      this.lastNetworkReport = 0;
    }
    this.emit("error", e);
    try {
      this.onError?.(e);
    } catch {
    }
    return e;
  }
  activity(kind, detail) {
    const a = { kind, at: Date.now(), detail };
    this.emit("activity", a);
    if (this.leader)
      this.post({ t: "activity", a });
  }
  localInfo() {
    return {
      state: this.state,
      transport: this.kind,
      leaderId: this.leader ? this.id : null,
      connectionId: this.leader ? this.connectionId : void 0
    };
  }
  emitState() {
    const info = this.channelInfo;
    this.emit("state", { state: this.state, transport: this.kind, leader: this.leader, channel: info.state });
    if (this.leader)
      this.post({ t: "state", info: this.localInfo() });
  }
  setChState(s) {
    if (this.chState === s)
      return;
    this.chState = s;
    this.emitState();
  }
  // ---- cross-tab ----
  attach() {
    if (!this.shared) {
      if (this.tabId)
        this.openBc();
      return;
    }
    if (this.store.subscribe) {
      this.unsubs.push(this.store.subscribe((key) => {
        if (key === null || key === this.k("tokens"))
          this.sync();
        else if (key === this.k("transport")) {
          const v = this.store.getItem(this.k("transport"));
          if (v === "sse" || v === "ws")
            this.applyTransport(v);
        } else if (key === this.k("leader") && !lockManager())
          this.election.tick();
      }));
    }
    if (!this.browser)
      return;
    this.openBc();
    const w = globalThis;
    const d = globalThis.document;
    const listen = (t, type, h) => {
      if (!t || typeof t.addEventListener !== "function")
        return;
      t.addEventListener(type, h);
      this.unsubs.push(() => t.removeEventListener(type, h));
    };
    listen(w, "online", () => this.recover("online"));
    listen(w, "offline", () => {
      if (this.leader && this.chState !== "live")
        this.setChState("offline");
    });
    listen(w, "focus", () => this.recover("focus"));
    listen(d, "visibilitychange", () => {
      if (d?.visibilityState === "visible")
        this.recover("visible");
    });
    listen(d, "resume", () => this.recover("resume"));
    listen(w, "pageshow", (e) => {
      if (e.persisted)
        this.resumePage();
      else
        this.recover("pageshow");
    });
    listen(w, "pagehide", (e) => {
      if (e.persisted)
        this.suspendPage();
      else if (this.leader && !lockManager())
        this.election.dropRecord();
    });
  }
  openBc() {
    const BC = globalThis.BroadcastChannel;
    if (!BC || this.bc)
      return;
    try {
      this.bc = new BC(this.key);
      this.bc.onmessage = (e) => this.onMessage(e.data);
    } catch {
      this.bc = null;
    }
  }
  post(m) {
    if (!this.shared && m.t !== "revoked" && m.t !== "tab?" && m.t !== "tab!")
      return;
    try {
      this.bc?.postMessage(m);
    } catch {
    }
  }
  onMessage(m) {
    if (this.disposed || !isObj(m))
      return;
    if (m.t === "tab?") {
      if (m.id === this.tabId)
        this.post({ t: "tab!", id: m.id });
      return;
    }
    if (m.t === "tab!") {
      this.onTabTaken?.(m.id);
      return;
    }
    if (!this.shared && !(this.degraded && (m.t === "tokens" || m.t === "revoked")))
      return;
    switch (m.t) {
      case "tokens":
        this.sync();
        break;
      case "revoked":
        if (this.rec && this.rec.sid === m.sid && !this.readStore())
          this.loggedOut(m.reason);
        else
          this.sync();
        break;
      case "state":
        if (!this.leader) {
          this.remote = m.info;
          this.emitState();
        }
        break;
      case "activity":
        if (!this.leader)
          this.emit("activity", m.a);
        break;
      case "transport":
        this.applyTransport(m.kind);
        break;
      case "hello":
        if (this.leader)
          this.post({ t: "state", info: this.localInfo() });
        break;
      case "drop":
        if (this.leader)
          this.conn?.close("dropped");
        break;
      case "lose":
        if (this.leader)
          this.loseNext = true;
        break;
      case "leader-gone":
        if (!lockManager())
          this.election.tick();
        break;
    }
  }
  applyTransport(kind) {
    if (kind === this.kind)
      return;
    this.kind = kind;
    if (this.leader)
      this.reopen("transport changed");
    this.emitState();
  }
  /** The page came back (visible, online, focus, resumed): check freshness and the channel now. */
  recover(why) {
    if (this.disposed || this.suspended)
      return;
    this.sync();
    this.retryPendingLogout();
    if (!this.rec)
      return;
    if (this.expiresSoon(this.rec))
      this.ensureFresh().catch(() => {
      });
    else
      this.scheduleExpiry();
    if (!lockManager())
      this.election.tick();
    if (this.gaveUp)
      this.compete();
    if (!this.leader)
      return;
    const stale = Date.now() - this.lastSeen > 2 * this.heartbeatMs;
    if (this.chState === "stopped")
      this.startChannel();
    else if (this.chState === "backoff" || this.chState === "offline")
      this.wake?.();
    else if (this.chState === "live" && stale)
      this.conn?.close(`watchdog (${why})`);
    else if (this.chState === "connecting" && Date.now() - this.connectingSince > 2 * this.timeoutMs)
      this.startChannel();
  }
  suspendPage() {
    this.suspended = true;
    this.stopChannel();
    this.election.leave();
    this.clearExpiryTimers();
    this.bc?.close();
    this.bc = null;
  }
  resumePage() {
    if (this.disposed)
      return;
    this.suspended = false;
    this.openBc();
    this.sync();
    if (this.rec) {
      this.scheduleExpiry();
      this.compete();
      if (this.expiresSoon(this.rec))
        this.ensureFresh().catch(() => {
        });
    }
  }
  // ---- leader election (election.ts) ----
  get leader() {
    return this.election.leader;
  }
  /** Starts competing for the channel (idempotent). */
  compete() {
    if (!this.election.competing && this.eligible())
      this.gaveUp = false;
    this.election.compete();
  }
  eligible() {
    return !!this.rec && !this.disposed && !this.suspended;
  }
  electionHost() {
    return {
      lockName: `${this.key}:channel`,
      recordKey: this.k("leader"),
      id: this.id,
      store: this.store,
      eligible: () => this.eligible(),
      alone: () => !this.browser || !this.shared,
      lead: () => {
        this.remote = null;
        this.activity("leader", { leader: true, id: this.id });
        this.scheduleExpiry();
        this.startChannel();
      },
      lost: () => {
        this.stopChannel();
        this.chState = "logged_out";
        this.activity("leader", { leader: false });
        this.emitState();
        this.post({ t: "hello" });
      },
      announce: (t) => this.post({ t }),
      changed: () => this.emitState()
    };
  }
  /** A stopped leader leaves the election, so another tab (whose connects may work) can lead. */
  giveUpLeadership() {
    if (!this.browser || !this.shared)
      return;
    this.gaveUp = true;
    this.election.leave();
  }
  // ---- the channel (leader) ----
  startChannel() {
    this.stopChannel();
    const run = ++this.run;
    void this.channelLoop(run);
  }
  /** Ends the loop: every await in it checks its run number, so nothing opens after this. */
  stopChannel() {
    this.run++;
    const c = this.conn;
    this.conn = null;
    this.wsSend = null;
    c?.close("stopped");
    this.wake?.();
  }
  reopen(reason) {
    if (this.conn)
      this.conn.close(reason);
    else
      this.wake?.();
  }
  sleep(ms, run) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
      if (run !== this.run)
        done();
    });
  }
  async channelLoop(run) {
    let attempt = 0;
    let failures = 0;
    let reportedNetwork = false;
    const alive = () => run === this.run && this.leader && !!this.rec && !this.disposed;
    while (alive()) {
      this.connectingSince = Date.now();
      this.setChState("connecting");
      let out;
      try {
        out = await this.connectOnce(run);
      } catch (e) {
        out = { kind: "network", error: netError("channel", e) };
      }
      if (!alive())
        break;
      let wait;
      if (out.kind === "revoked" || out.kind === "stopped")
        break;
      if (out.wasLive) {
        attempt = 0;
        failures = 0;
        reportedNetwork = false;
      }
      if (out.kind === "reopen") {
        attempt = 0;
        this.activity("reconnect", { delayMs: 0, reason: "reopen" });
        continue;
      }
      if (out.kind === "reconnect") {
        wait = Math.min(out.retryMs ?? 0, this.maxBackoffMs);
        attempt = 0;
      } else {
        attempt++;
        if (out.kind === "refused") {
          failures++;
          if (out.error)
            this.report(out.error);
          if (failures >= this.maxFailures) {
            this.setChState("stopped");
            this.activity("channel_closed", { reason: `gave up after ${failures} refused connects` });
            this.giveUpLeadership();
            return;
          }
          if (out.error?.retryAfterMs !== void 0)
            attempt = Math.max(attempt, 1);
        } else if (out.kind === "network" && out.error && !reportedNetwork) {
          reportedNetwork = true;
          this.report(out.error);
        }
        const cap = Math.min(this.maxBackoffMs, 250 * 2 ** Math.min(attempt, 16));
        wait = out.wasLive ? 100 + Math.random() * 400 : cap / 2 + Math.random() * cap / 2;
        if (out.error?.retryAfterMs !== void 0)
          wait = Math.max(wait, Math.min(out.error.retryAfterMs, this.maxBackoffMs));
      }
      const offline = globalThis.navigator?.onLine === false;
      this.setChState(offline ? "offline" : "backoff");
      this.activity("reconnect", { delayMs: wait, reason: out.error?.code ?? out.kind });
      await this.sleep(wait, run);
    }
  }
  /** One ticket + one channel connection, until it ends. */
  async connectOnce(run) {
    this.sync();
    const rec = this.presentable();
    if (!rec || run !== this.run)
      return { kind: "stopped" };
    let reply;
    try {
      reply = await this.postJson("ticket", "/auth/ticket", { body: { refresh_token: rec.tokens.refresh_token } });
    } catch (e) {
      return { kind: "network", error: netError("ticket", e) };
    }
    const r = reply.r;
    if (run !== this.run)
      return { kind: "stopped" };
    if (!r.ok) {
      const err = errorOf(reply, "ticket");
      if (err.code === "invalid_grant") {
        this.sync();
        const now = this.readStore();
        if (now && (now.sid !== rec.sid || newer(now, rec)))
          return { kind: "reopen" };
        this.endStored(rec.sid, "invalid_grant");
        this.report(err);
        this.loggedOut("invalid_grant");
        return { kind: "revoked" };
      }
      if (r.status >= 500)
        return { kind: "network", error: err };
      return { kind: "refused", error: err };
    }
    const body = reply.body;
    const ticket = isObj(body) && typeof body.ticket === "string" ? body.ticket : null;
    if (!ticket)
      return { kind: "network", error: new TokenpushError("invalid_response", "ticket: malformed response", r.status) };
    if (run !== this.run)
      return { kind: "stopped" };
    const host = this.host(run, rec);
    return this.kind === "ws" ? openWs(host, ticket) : openSse(host, rec, ticket);
  }
  /** What one connection of channel run `run` (session of `rec`) may do to this client. */
  host(run, rec) {
    return {
      fetch: this.fetchImpl,
      base: this.base,
      timeoutMs: this.timeoutMs,
      current: () => run === this.run,
      seen: () => void (this.lastSeen = Date.now()),
      heartbeatMs: () => this.heartbeatMs,
      watchdog: (close) => this.watchdog(run, close),
      attach: (conn) => void (this.conn = conn),
      sendWith: (send) => void (this.wsSend = send),
      detach: (conn) => {
        if (this.conn !== conn)
          return;
        this.conn = null;
        this.wsSend = null;
      },
      ready: (d, kind) => this.onReady(d, kind),
      push: (d) => this.onPush(d, rec.sid),
      revoked: (reason) => this.onRevoked(reason, rec.sid),
      ack: (access, generation) => void this.postJson("ack", "/auth/ack", { bearer: access }).then(({ r }) => r.ok && this.activity("ack", { generation })).catch(() => {
      }),
      activity: (kind, detail) => this.activity(kind, detail)
    };
  }
  onReady(d, kind) {
    const hb = typeof d.heartbeat_secs === "number" && d.heartbeat_secs > 0 ? d.heartbeat_secs : 15;
    this.heartbeatMs = hb * 1e3;
    this.connectionId = typeof d.connection_id === "string" ? d.connection_id : void 0;
    this.lastSeen = Date.now();
    this.activity("channel_open", { transport: kind, connectionId: this.connectionId });
    this.setChState("live");
    this.post({ t: "state", info: this.localInfo() });
  }
  /** A pushed `tokens`: apply unless stale; returns whether to ack. */
  onPush(d, chSid) {
    if (!validTokens(d))
      return false;
    const claims = decodeClaims(d.access_token);
    const generation = generationOf(d, claims);
    if (this.loseNext) {
      this.loseNext = false;
      this.activity("push_ignored", { generation });
      return false;
    }
    const reason = typeof d.reason === "string" ? d.reason : "renewal";
    this.activity("push", { generation, reason });
    this.sync();
    if (!this.rec || this.rec.sid !== d.session_id || chSid !== d.session_id) {
      this.reopen("stale session");
      return false;
    }
    if (this.offer(d, reason, "push"))
      return true;
    return !!this.rec && this.rec.tokens.access_token === d.access_token && this.confirmable(this.rec);
  }
  onRevoked(reason, sid) {
    this.sync();
    if (!this.rec || this.rec.sid !== sid) {
      this.reopen("old session revoked");
      return false;
    }
    this.endStored(sid, reason);
    this.loggedOut(reason);
    return true;
  }
  watchdog(run, close) {
    const t = setInterval(() => {
      if (run !== this.run)
        return;
      if (Date.now() - this.lastSeen > 2 * this.heartbeatMs)
        close("heartbeat missed");
    }, 1e3);
    return () => clearInterval(t);
  }
};

// index.js
var TokenpushError = class extends Error {
  constructor(code, message, status, retryAfterMs2) {
    super(message);
    this.name = "TokenpushError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs2;
  }
};
function decodeClaims(jwt) {
  try {
    if (!jwt)
      return null;
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(part + "=".repeat((4 - part.length % 4) % 4));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++)
      bytes[i] = bin.charCodeAt(i);
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}
function createClient(opts = {}) {
  return new Client(opts);
}
export {
  TokenpushError,
  createClient,
  decodeClaims
};
