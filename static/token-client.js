// tokenpush browser client: an ES module with no dependencies and no DOM code.
//
// One channel per browser: the tab holding the Web Lock "tokenpush-channel" opens the SSE or
// WebSocket channel; the other tabs follow over a BroadcastChannel and take over when the
// leader goes away. That is only an optimisation: if two tabs both hold channels, the server
// sends both the same tokens, so correctness never depends on the lock.
//
// Tokens are kept in localStorage so every tab of the origin (and a reload) shares them. That
// is the usual trade-off for single-page apps: script injection on this origin could read them,
// and refresh-token rotation with reuse detection limits what a stolen copy is worth.

const STORAGE_KEY = 'tokenpush.tokens';
const LOCK_NAME = 'tokenpush-channel';
const BC_NAME = 'tokenpush';

/**
 * @typedef {Object} Tokens
 * @property {string} access_token
 * @property {string} refresh_token
 * @property {number} expires_in
 * @property {number} refresh_expires_in
 * @property {string} session_id
 * @property {string} token_type
 */

/**
 * @typedef {'logged_out'|'connecting'|'live'|'follower'|'backoff'} ChannelState
 */

/** Decodes a JWT's claims without verifying (the server verifies; this is for display and timing). */
export function decodeClaims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Keeps a user logged in: holds the tokens, runs the push channel, wraps fetch.
 *
 * Events (all `CustomEvent`s, read `event.detail`):
 * - `tokens` `{tokens, reason}` whenever this tab gets new tokens (login, push, refresh, another tab)
 * - `revoked` `{reason}` when the session ends (logout anywhere, reuse detected, admin)
 * - `state` `{state, transport, leader}` when the channel state changes
 * - `log` `{message}` a human-readable line for debugging UIs
 */
export class TokenClient extends EventTarget {
  /**
   * @param {Object} [opts]
   * @param {string} [opts.baseUrl] server origin, default this page's
   * @param {'sse'|'ws'} [opts.transport] channel kind, default `sse`
   * @param {number} [opts.skewMs] refresh this much before expiry (capped at 10 % of the token's
   *   lifetime), default 5000. Expiry is timed from when the token arrived plus `expires_in`, so a
   *   client clock that is off does not matter.
   * @param {number} [opts.maxBackoffMs] cap of the reconnect backoff, default 10000
   */
  constructor(opts = {}) {
    super();
    this.baseUrl = opts.baseUrl ?? location.origin;
    this.transport = opts.transport ?? localStorage.getItem('tokenpush.transport') ?? 'sse';
    this.skewMs = opts.skewMs ?? 5000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 10000;
    /** @type {ChannelState} */
    this.state = 'logged_out';
    this.leader = false;
    this._tokens = this._load();
    this._refreshing = null;
    this._channel = null; // {close()} of the open SSE/WS channel
    this._lockAbort = null;
    this._releaseLock = null;
    this._lastEventId = null;
    this._bc = new BroadcastChannel(BC_NAME);
    this._bc.onmessage = (e) => this._onBroadcast(e.data);
    if (this._tokens) queueMicrotask(() => this.start());
  }

  /** @returns {Tokens|null} the current tokens, shared by every tab */
  get tokens() {
    return this._tokens;
  }

  /** @returns {object|null} the access token's claims */
  get claims() {
    return this._tokens ? decodeClaims(this._tokens.access_token) : null;
  }

  /** Logs in, stores the tokens for every tab, and starts the channel. */
  async login(username, password, deviceId = navigator.userAgent.slice(0, 100)) {
    const r = await fetch(this.baseUrl + '/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password, device_id: deviceId }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(body.error_description || body.error || `HTTP ${r.status}`), { status: r.status, code: body.error });
    this._setTokens(body, 'login', true);
    this.start();
    return body;
  }

  /** Logs out this session everywhere (all tabs, all channels). */
  async logout() {
    const t = this._tokens;
    this._loggedOut('logout', true);
    if (t) {
      await fetch(this.baseUrl + '/auth/logout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: t.refresh_token }),
      }).catch(() => {});
    }
  }

  /** Switches between SSE and WebSocket; the leader reopens its channel. */
  setTransport(kind) {
    if (kind !== 'sse' && kind !== 'ws') throw new Error('transport must be sse or ws');
    this.transport = kind;
    localStorage.setItem('tokenpush.transport', kind);
    this._bc.postMessage({ type: 'transport', kind });
    this._reopen();
  }

  /**
   * `fetch` with `Authorization: Bearer`. Refreshes first (single-flight, other calls wait)
   * when the access token is about to expire, and retries once after a 401.
   */
  async fetch(input, init = {}) {
    if (!this._tokens) throw new Error('not logged in');
    if (this._expiresSoon()) await this.refresh();
    const send = () => {
      const headers = new Headers(init.headers || {});
      headers.set('Authorization', 'Bearer ' + this._tokens.access_token);
      return fetch(typeof input === 'string' && input.startsWith('/') ? this.baseUrl + input : input, { ...init, headers });
    };
    let r = await send();
    if (r.status === 401 && this._tokens) {
      await this.refresh();
      if (this._tokens) r = await send();
    }
    return r;
  }

  /** Pull refresh, single-flight: concurrent callers share one request. */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._doRefresh().finally(() => (this._refreshing = null));
    }
    return this._refreshing;
  }

  async _doRefresh() {
    const t = this._tokens;
    if (!t) return;
    let r;
    try {
      r = await fetch(this.baseUrl + '/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: t.refresh_token }),
      });
    } catch {
      return; // network down: keep the tokens, try again later
    }
    const body = await r.json().catch(() => ({}));
    if (r.ok) this._setTokens(body, 'refresh', true);
    else if (r.status === 400 && body.error === 'invalid_grant') this._loggedOut('invalid_grant', true);
  }

  /** Starts competing for the channel (called after login and on page load with tokens). */
  start() {
    if (!this._tokens || this._lockAbort) return;
    this._setState('follower');
    this._lockAbort = new AbortController();
    navigator.locks
      .request(LOCK_NAME, { signal: this._lockAbort.signal }, () => {
        if (!this._tokens) return;
        this.leader = true;
        this._log('this tab leads: it holds the channel');
        return new Promise((release) => {
          this._releaseLock = release;
          this._runChannel();
        });
      })
      .catch(() => {})
      .finally(() => {
        this.leader = false;
        this._lockAbort = null;
        this._releaseLock = null;
      });
  }

  /** Stops competing and closes this tab's channel (logout, or page teardown). */
  stop() {
    this._lockAbort?.abort();
    this._closeChannel();
    if (this._releaseLock) this._releaseLock();
  }

  async _runChannel() {
    let attempt = 0;
    while (this.leader && this._tokens) {
      this._setState('connecting');
      let outcome;
      try {
        const ticket = await this._ticket();
        if (!ticket) break; // logged out
        outcome = await (this.transport === 'ws' ? this._openWs(ticket) : this._openSse(ticket));
      } catch (e) {
        outcome = { error: String(e) };
      }
      if (!this.leader || !this._tokens) break;
      if (outcome.reopen) {
        attempt = 0;
        continue;
      }
      let wait;
      if (outcome.retryMs !== undefined) {
        wait = outcome.retryMs;
        attempt = 0;
        this._log(`server asked to reconnect in ${wait} ms`);
      } else {
        attempt = outcome.wasLive ? 1 : attempt + 1;
        const base = Math.min(this.maxBackoffMs, 250 * 2 ** attempt);
        wait = base / 2 + Math.random() * (base / 2);
        this._log(`channel lost (${outcome.error || 'closed'}); retrying in ${Math.round(wait)} ms`);
      }
      this._setState('backoff');
      await sleep(wait);
    }
    this._closeChannel();
  }

  async _ticket() {
    for (let attempt = 0; this._tokens; attempt++) {
      const t = this._tokens;
      let r;
      try {
        r = await fetch(this.baseUrl + '/auth/ticket', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: t.refresh_token }),
        });
      } catch {
        r = null;
      }
      if (r && r.ok) return (await r.json()).ticket;
      if (r && r.status === 400) {
        const body = await r.json().catch(() => ({}));
        if (body.error === 'invalid_grant') {
          this._loggedOut('invalid_grant', true);
          return null;
        }
      }
      const base = Math.min(this.maxBackoffMs, 250 * 2 ** attempt);
      this._setState('backoff');
      await sleep(base / 2 + Math.random() * (base / 2));
      this._setState('connecting');
    }
    return null;
  }

  _openSse(ticket) {
    return new Promise((resolve) => {
      let url = `${this.baseUrl}/events?ticket=${encodeURIComponent(ticket)}`;
      if (this._lastEventId) url += `&last_event_id=${encodeURIComponent(this._lastEventId)}`;
      const es = new EventSource(url);
      let wasLive = false;
      const done = (outcome) => {
        es.close();
        this._channel = null;
        resolve({ wasLive, ...outcome });
      };
      this._channel = { kind: 'sse', close: () => done({ reopen: true }) };
      es.addEventListener('ready', () => {
        wasLive = true;
        this._setState('live');
      });
      es.addEventListener('tokens', (e) => {
        const data = JSON.parse(e.data);
        this._lastEventId = e.lastEventId;
        this._pushed(data);
        // SSE cannot talk back: prove we hold this generation with its access token.
        fetch(this.baseUrl + '/auth/ack', { method: 'POST', headers: { Authorization: 'Bearer ' + data.access_token } }).catch(() => {});
      });
      es.addEventListener('revoked', (e) => {
        this._loggedOut(JSON.parse(e.data).reason, true);
        done({});
      });
      es.addEventListener('reconnect', (e) => done({ retryMs: JSON.parse(e.data).retry_ms }));
      // Tickets are single-use, so EventSource's own retry can never succeed: we reconnect.
      es.onerror = () => done({ error: 'sse error' });
    });
  }

  _openWs(ticket) {
    return new Promise((resolve) => {
      const url = `${this.baseUrl.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(ticket)}`;
      const ws = new WebSocket(url);
      let wasLive = false;
      let outcome = null;
      const finish = () => {
        this._channel = null;
        resolve({ wasLive, ...(outcome || { error: 'ws closed' }) });
      };
      this._channel = {
        kind: 'ws',
        close: () => {
          outcome = outcome || { reopen: true };
          ws.close(1000);
        },
      };
      ws.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;
        }
        if (msg.type === 'ready') {
          wasLive = true;
          this._setState('live');
        } else if (msg.type === 'tokens') {
          this._lastEventId = msg.id;
          const { type, id, ...data } = msg;
          this._pushed(data);
          ws.send(JSON.stringify({ type: 'ack', id }));
        } else if (msg.type === 'revoked') {
          outcome = {};
          this._loggedOut(msg.reason, true);
        } else if (msg.type === 'reconnect') {
          outcome = { retryMs: msg.retry_ms };
        }
      };
      ws.onclose = finish;
    });
  }

  _pushed(data) {
    const { reason, ...tokens } = data;
    this._setTokens(tokens, reason, true);
  }

  _closeChannel() {
    const ch = this._channel;
    this._channel = null;
    ch?.close();
  }

  _reopen() {
    if (this.leader && this._channel) {
      this._setState('connecting');
      this._channel.close();
    }
  }

  _expiresSoon() {
    const t = this._tokens;
    if (!t || !t.expires_at_local) return true;
    const margin = Math.min(this.skewMs, (t.expires_in * 1000) / 10);
    return t.expires_at_local - margin <= Date.now();
  }

  _setTokens(tokens, reason, broadcast) {
    // Local-clock expiry, stamped once where the tokens arrived and shared with the other tabs.
    if (!tokens.expires_at_local) tokens = { ...tokens, expires_at_local: Date.now() + tokens.expires_in * 1000 };
    this._tokens = tokens;
    localStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
    if (broadcast) this._bc.postMessage({ type: 'tokens', tokens, reason });
    this._log(`tokens: generation ${decodeClaims(tokens.access_token)?.gen} (${reason})`);
    this.dispatchEvent(new CustomEvent('tokens', { detail: { tokens, reason } }));
  }

  _loggedOut(reason, broadcast) {
    if (!this._tokens && this.state === 'logged_out') return;
    this._tokens = null;
    this._lastEventId = null;
    localStorage.removeItem(STORAGE_KEY);
    if (broadcast) this._bc.postMessage({ type: 'revoked', reason });
    this.stop();
    this._setState('logged_out');
    this._log(`logged out (${reason})`);
    this.dispatchEvent(new CustomEvent('revoked', { detail: { reason } }));
  }

  _onBroadcast(msg) {
    if (msg.type === 'tokens') {
      this._setTokens(msg.tokens, msg.reason, false);
      this.start();
    } else if (msg.type === 'revoked') {
      this._loggedOut(msg.reason, false);
    } else if (msg.type === 'transport') {
      this.transport = msg.kind;
      this._reopen();
    }
  }

  _load() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY));
    } catch {
      return null;
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, transport: this.transport, leader: this.leader } }));
  }

  _log(message) {
    this.dispatchEvent(new CustomEvent('log', { detail: { message } }));
  }
}
