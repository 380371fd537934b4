// The client front: the public API, the tokens this tab holds and how it keeps them in step
// with storage and the other tabs, the pull refresh, events and the channel loop. The leader
// election is in election.ts, refresh timing in refresh.ts, the wire protocols in transport.ts
// (SSE parsing in sse.ts), records and storage adapters in store.ts, HTTP in http.ts.

import { TokenpushError, decodeClaims } from './index.js';
import type {
  ActivityKind,
  AuthChangeEvent,
  ChannelInfo,
  ChannelState,
  ClientOptions,
  Events,
  Session,
  StorageAdapter,
  Tokens,
  TokenpushClient,
  TokensReason,
  TokensSource,
  TransportKind,
} from './index.js';
import { errorOf, isInvalidToken, isOutage, netError, postJson } from './http.js';
import type { Reply } from './http.js';
import { MemoryStorage, generationOf, identity, makeRec, newer, parseRec, validTokens, webStorage } from './store.js';
import type { Rec } from './store.js';
import { Election } from './election.js';
import { ExpiryTimers, expiresSoon, withLock } from './refresh.js';
import type { ElectionHost } from './election.js';
import { openSse, openWs } from './transport.js';
import type { ChannelHost, Conn, Outcome } from './transport.js';
import { autoTransport, isObj, lockManager, randomId } from './util.js';

/** BroadcastChannel messages between the tabs. */
type Msg =
  | { t: 'tokens' }
  | { t: 'revoked'; reason: string; sid: string }
  | { t: 'state'; info: ChannelInfo }
  | { t: 'activity'; a: Events['activity'] }
  | { t: 'transport'; kind: TransportKind }
  | { t: 'hello' }
  | { t: 'drop' }
  | { t: 'lose' }
  | { t: 'leader-gone' }
  | { t: 'tab?'; id: string }
  | { t: 'tab!'; id: string };

/** How long a `storage: 'session'` tab waits for the tab it may be a duplicate of to answer. */
const DUP_CHECK_MS = 300;

/** The client behind `createClient`. */
export class Client implements TokenpushClient {
  private readonly base: string;
  private readonly origin: string | null;
  private readonly store: StorageAdapter;
  /** Whether other tabs share this tab's tokens through storage (false once storage failed). */
  private shared: boolean;
  /** Storage refused a write: this tab runs alone with its tokens in memory (see `writeStore`). */
  private degraded = false;
  private readonly key: string;
  private readonly fetchImpl: typeof fetch;
  private readonly onError?: (e: TokenpushError) => void;
  private readonly skewMs: number;
  private readonly maxBackoffMs: number;
  private readonly maxFailures: number;
  private readonly timeoutMs: number;
  private readonly browser: boolean;
  private readonly id = randomId();

  private rec: Rec | null = null;
  private kind: TransportKind;
  private listeners = new Map<string, Set<(d: any) => void>>();
  private authListeners = new Set<(e: AuthChangeEvent, t: Tokens | null) => void>();
  private bc: BroadcastChannel | null = null;
  private unsubs: Array<() => void> = [];
  private disposed = false;
  private suspended = false;

  // leadership
  private readonly election: Election;
  /** This tab gave the channel up (`stopped`) and left the election until the page comes back. */
  private gaveUp = false;
  /** `storage: 'session'`: this tab's id in sessionStorage, which a duplicated tab inherits. */
  private tabId: string | null = null;
  /** Settles once this tab knows it is not a duplicate; nothing presents a refresh token before. */
  private dupCheck: Promise<void> | null = null;
  private onTabTaken: ((id: string) => void) | null = null;

  // channel (leader only)
  private run = 0;
  private conn: Conn | null = null;
  private chState: ChannelState = 'logged_out';
  private connectingSince = 0;
  private wake: (() => void) | null = null;
  private lastSeen = 0;
  private heartbeatMs = 15000;
  private loseNext = false;
  private connectionId: string | undefined;
  private wsSend: ((msg: object) => void) | null = null;
  private remote: ChannelInfo | null = null;

  // refresh
  private refreshing: Promise<Tokens> | null = null;
  private readonly expiry: ExpiryTimers;

  private lastNetworkReport = 0;

  constructor(opts: ClientOptions) {
    const g = globalThis as { location?: Location; window?: unknown; document?: unknown };
    this.browser = typeof g.window !== 'undefined' && typeof g.document !== 'undefined';
    const base = opts.baseUrl ?? g.location?.origin ?? '';
    this.base = base.replace(/\/+$/, '');
    let origin: string | null = null;
    try {
      origin = new URL(this.base || 'x:', g.location?.href).origin;
      if (origin === 'null') origin = null;
    } catch {
      origin = null;
    }
    this.origin = origin;
    this.key = opts.storageKey ?? 'tokenpush';
    const s = opts.storage ?? 'local';
    this.store =
      typeof s === 'object' ? s : s === 'memory' ? new MemoryStorage() : (webStorage(s) ?? new MemoryStorage());
    this.shared = this.store.shared ?? true;
    this.election = new Election(this.electionHost());
    const f = opts.fetch ?? (globalThis.fetch as typeof fetch | undefined);
    this.fetchImpl = f
      ? (((input: RequestInfo | URL, init?: RequestInit) => f(input, init)) as typeof fetch)
      : (((): Promise<Response> => Promise.reject(new TypeError('no fetch available'))) as typeof fetch);
    this.onError = opts.onError;
    this.skewMs = opts.skewMs ?? 5000;
    this.expiry = new ExpiryTimers({
      skewMs: this.skewMs,
      rec: () => this.rec,
      sync: () => this.sync(),
      active: () => !this.disposed && !this.suspended,
      leader: () => this.leader,
      ensureFresh: () => this.ensureFresh(),
      notice: (type, detail) => this.emit(type, detail),
    });
    this.maxBackoffMs = opts.maxBackoffMs ?? 10000;
    this.maxFailures = opts.maxConnectFailures ?? 5;
    this.timeoutMs = opts.timeoutMs ?? 10000;
    const wanted = opts.transport ?? 'sse';
    const saved = this.store.getItem(this.k('transport'));
    this.kind = saved === 'sse' || saved === 'ws' ? saved : wanted === 'auto' ? autoTransport() : wanted;
    this.rec = parseRec(this.store.getItem(this.k('tokens')));
    if (s === 'session' && this.browser && !(this.store instanceof MemoryStorage)) this.checkDuplicate();
    this.attach();
    if (this.rec) {
      const start = () => {
        if (!this.rec || this.disposed) return;
        this.scheduleExpiry();
        this.compete();
      };
      if (this.dupCheck) void this.dupCheck.then(start);
      else start();
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
  private checkDuplicate() {
    const key = this.k('tab');
    let prior: string | null = null;
    try {
      prior = this.store.getItem(key);
      this.tabId = randomId();
      this.store.setItem(key, this.tabId);
    } catch {
      return;
    }
    const BC = (globalThis as { BroadcastChannel?: unknown }).BroadcastChannel;
    if (!prior || !this.rec || !BC) return;
    const asked = prior;
    this.dupCheck = new Promise<void>((resolve) => {
      const done = (duplicate: boolean) => {
        clearTimeout(timer);
        this.onTabTaken = null;
        this.dupCheck = null;
        if (duplicate && this.rec && !this.disposed) {
          try {
            this.store.removeItem(this.k('tokens'));
          } catch {
            /* the copy goes away with the tab anyway */
          }
          this.loggedOut('duplicated_tab');
        }
        resolve();
      };
      const timer = setTimeout(() => done(false), DUP_CHECK_MS);
      this.onTabTaken = (id) => id === asked && done(true);
    });
    // After attach() has opened the BroadcastChannel.
    queueMicrotask(() => this.post({ t: 'tab?', id: asked }));
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
  get state(): ChannelState {
    if (!this.rec) return 'logged_out';
    // A tab that gave up shows `stopped` until another tab reports that it leads.
    return this.leader ? this.chState : this.gaveUp && !this.remote ? 'stopped' : 'follower';
  }
  get transport() {
    return this.kind;
  }
  get isLeader() {
    return this.leader;
  }
  get channelInfo(): ChannelInfo {
    if (this.leader || !this.rec) return this.localInfo();
    return this.remote ?? { state: 'follower', transport: this.kind, leaderId: null };
  }
  get debug() {
    return {
      dropChannel: () => (this.leader ? this.conn?.close('dropped') : this.post({ t: 'drop' })),
      requestPush: () => this.requestPush(),
      loseNextPush: () => {
        if (this.leader) this.loseNext = true;
        else this.post({ t: 'lose' });
      },
    };
  }

  on<K extends keyof Events>(type: K, cb: (detail: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(cb);
    return () => set!.delete(cb);
  }

  onAuthStateChange(cb: (event: AuthChangeEvent, tokens: Tokens | null) => void): () => void {
    this.authListeners.add(cb);
    // Asynchronously, as supabase-js does: the caller gets its unsubscribe function first.
    queueMicrotask(() => {
      if (this.disposed || !this.authListeners.has(cb)) return;
      this.sync();
      try {
        cb('INITIAL_SESSION', this.rec ? this.rec.tokens : null);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    });
    return () => this.authListeners.delete(cb);
  }

  async getSession(): Promise<Session | null> {
    await this.getAccessToken();
    const rec = this.rec;
    if (!rec) return null;
    return {
      ...rec.tokens,
      expires_at: Math.floor(rec.expiresAt / 1000),
      user: decodeClaims(rec.tokens.access_token),
      generation: rec.gen,
    };
  }

  async login(username: string, password: string, deviceId?: string): Promise<Tokens> {
    const body: Record<string, string> = { username, password };
    if (deviceId !== undefined) body.device_id = deviceId;
    let reply: Reply;
    try {
      reply = await this.postJson('login', '/auth/login', { body });
    } catch (e) {
      throw this.report(netError('login', e));
    }
    if (!reply.r.ok) throw this.report(errorOf(reply, 'login'));
    const t = reply.body;
    if (!validTokens(t)) throw this.report(new TokenpushError('invalid_response', 'login: malformed token response', reply.r.status));
    const old = this.readStore();
    const rec = makeRec(t, 'login', 'login', Date.now());
    this.writeStore(rec);
    this.post({ t: 'tokens' });
    this.adopt(rec, 'login', 'login');
    // The session this browser had before is replaced: end it on the server too.
    if (old && old.sid !== rec.sid) void this.sendLogout(old.tokens);
    return rec.tokens;
  }

  async logout(): Promise<void> {
    const rec = this.readStore() ?? this.rec;
    if (rec) this.endStored(rec.sid, 'logout');
    else this.store.removeItem(this.k('tokens'));
    this.loggedOut('logout');
    if (rec) await this.sendLogout(rec.tokens);
  }

  async getAccessToken(): Promise<string | null> {
    this.sync();
    if (!this.rec) return null;
    if (!this.expiresSoon(this.rec)) return this.rec.tokens.access_token;
    try {
      return (await this.ensureFresh()).access_token;
    } catch {
      // Keep serving the token we have while it is valid (network blip, 503); null once logged out.
      this.sync();
      return this.rec && this.rec.expiresAt > Date.now() ? this.rec.tokens.access_token : null;
    }
  }

  refresh(opts: { rejected?: string } = {}): Promise<Tokens> {
    if (!this.refreshing) {
      const how = opts.rejected === undefined ? { force: true } : { force: false, rejected: opts.rejected };
      this.refreshing = this.doRefresh(how).finally(() => (this.refreshing = null));
    }
    return this.refreshing;
  }

  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const target = typeof input === 'string' || input instanceof URL ? this.resolve(String(input)) : input;
    // One Request built once: it keeps a Request argument's headers and method, and each send
    // uses a clone so the body can be sent again on the retry.
    const req = new Request(target, init);
    if (!this.origin || new URL(req.url).origin !== this.origin) return this.fetchImpl(req);
    const send = (token: string | null) => {
      const copy = req.clone();
      if (token === null) return this.fetchImpl(copy);
      const headers = new Headers(copy.headers);
      headers.set('Authorization', 'Bearer ' + token);
      return this.fetchImpl(new Request(copy, { headers }));
    };
    const token = await this.getAccessToken();
    const r = await send(token);
    if (token === null || !isInvalidToken(r)) return r;
    // Only a rejected token triggers a refresh; another tab may already have a newer one.
    this.sync();
    let next: string | null = null;
    if (this.rec && this.rec.tokens.access_token !== token) next = this.rec.tokens.access_token;
    else {
      try {
        next = (await this.refreshAfterReject(token)).access_token;
      } catch {
        return r;
      }
    }
    if (!next || next === token) return r;
    return send(next);
  }

  setTransport(kind: TransportKind): void {
    if (kind !== 'sse' && kind !== 'ws') throw new TypeError('transport must be "sse" or "ws"');
    try {
      this.store.setItem(this.k('transport'), kind);
    } catch {
      /* storage full: the broadcast still tells the other tabs */
    }
    this.post({ t: 'transport', kind });
    this.applyTransport(kind);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.stopChannel();
    this.election.leave();
    for (const u of this.unsubs.splice(0)) u();
    this.bc?.close();
    this.bc = null;
    this.clearExpiryTimers();
    this.listeners.clear();
    this.authListeners.clear();
  }

  // ---- storage: the source of truth ----

  private k(name: string) {
    return `${this.key}.${name}`;
  }

  private url(path: string) {
    return this.base + path;
  }

  private resolve(u: string): string {
    if (/^[a-z][a-z0-9+.-]*:/i.test(u)) return u;
    if (u.startsWith('//')) return new URL(u, this.base || (globalThis as { location?: Location }).location?.href).href;
    if (u.startsWith('/')) return this.base + u;
    const loc = (globalThis as { location?: Location }).location;
    return new URL(u, loc?.href ?? this.base + '/').href;
  }

  private readStore(): Rec | null {
    try {
      return parseRec(this.store.getItem(this.k('tokens')));
    } catch {
      return null;
    }
  }

  /** Stores `rec`; false when storage refused it (quota, disabled): the tab then degrades. */
  private writeStore(rec: Rec): boolean {
    try {
      this.store.setItem(this.k('tokens'), JSON.stringify(rec));
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
  private degrade(e: unknown) {
    if (this.degraded) return;
    const wasLeader = this.leader;
    // Out of the shared election, but a channel this tab already runs stays open.
    this.election.detach();
    this.degraded = true;
    this.shared = false;
    if (!wasLeader) {
      this.election.competing = false;
      queueMicrotask(() => this.compete());
    }
    this.report(
      new TokenpushError('storage_unavailable', `storage refused a write (${e instanceof Error ? e.name : String(e)}): this tab continues alone`),
    );
  }

  /** Whether this tab may confirm `rec` to the server (ack it, present it). */
  private confirmable(rec: Rec): boolean {
    if (!this.degraded) return true;
    const stored = this.readStore();
    return !stored || stored.sid !== rec.sid || !newer(rec, stored);
  }

  /** The record whose refresh token this tab presents: its own, or (degraded) what storage holds. */
  private presentable(): Rec | null {
    const rec = this.rec;
    if (!rec || this.confirmable(rec)) return rec;
    return this.readStore();
  }

  /**
   * Offers tokens this tab obtained (push or pull). They are taken only when they belong to the
   * stored session and are newer than what is stored; returns whether they were taken and may
   * be confirmed (acked) to the server.
   */
  private offer(t: Tokens, reason: TokensReason, source: TokensSource): boolean {
    const rec = makeRec(t, reason, source, Date.now());
    const cur = this.readStore();
    const base = this.degraded ? this.rec : this.shared || cur ? cur : this.rec;
    if (!base || base.sid !== rec.sid || !newer(rec, base)) {
      this.sync();
      return false;
    }
    const stored = this.writeStore(rec);
    this.post({ t: 'tokens' });
    this.adopt(rec, reason, source);
    return stored || this.confirmable(rec);
  }

  /**
   * Ends session `sid` in storage for every tab, leaving a note of why: the other tabs learn it
   * from the `storage` event or the broadcast, whichever comes first, with the same reason.
   */
  private endStored(sid: string, reason: string) {
    try {
      this.store.setItem(this.k('ended'), JSON.stringify({ sid, reason }));
      const cur = this.readStore();
      if (!cur || cur.sid === sid) this.store.removeItem(this.k('tokens'));
    } catch {
      /* storage unavailable */
    }
    this.post({ t: 'revoked', reason, sid });
  }

  /** Why session `sid` ended, as the tab that saw it wrote down; default `logout`. */
  private endReason(sid: string): string {
    try {
      const v = JSON.parse(this.store.getItem(this.k('ended')) ?? 'null');
      if (isObj(v) && v.sid === sid && typeof v.reason === 'string') return v.reason;
    } catch {
      /* ignore */
    }
    return 'logout';
  }

  /** Re-reads storage and applies what another tab did (new tokens, new session, logout). */
  private sync(): void {
    if (this.disposed) return;
    const cur = this.readStore();
    const mine = this.rec;
    if (!cur) {
      // Non-shared stores only ever change through this tab.
      if (mine && this.shared) this.loggedOut(this.endReason(mine.sid));
      return;
    }
    if (this.degraded && mine && cur.sid !== mine.sid) return; // an old record this tab could not overwrite
    if (!mine || cur.sid !== mine.sid || newer(cur, mine)) {
      const source: TokensSource = cur.source === 'login' ? 'login' : 'other-tab';
      this.adopt(cur, cur.reason ?? 'storage', source);
    }
  }

  /** Makes `rec` this tab's tokens and tells listeners. */
  private adopt(rec: Rec, reason: TokensReason, source: TokensSource) {
    const prev = this.rec;
    if (prev && prev.tokens.access_token === rec.tokens.access_token) return;
    this.rec = rec;
    const sessionChanged = !prev || prev.sid !== rec.sid;
    this.scheduleExpiry();
    this.emit('tokens', { tokens: rec.tokens, reason, generation: rec.gen, expiresAt: rec.expiresAt, source });
    const claimsChanged =
      !sessionChanged && identity(decodeClaims(prev.tokens.access_token)) !== identity(decodeClaims(rec.tokens.access_token));
    this.emitAuth(sessionChanged ? 'SIGNED_IN' : claimsChanged ? 'USER_UPDATED' : 'TOKEN_REFRESHED', rec.tokens);
    if (sessionChanged) {
      // A new session needs its own channel: the old one would keep pushing the old session.
      if (this.leader) this.reopen('session changed');
      this.compete();
      if (!prev) this.emitState();
    }
  }

  private loggedOut(reason: string) {
    const had = this.rec;
    this.rec = null;
    this.clearExpiryTimers();
    this.stopChannel();
    this.election.leave();
    this.gaveUp = false;
    this.chState = 'logged_out';
    if (!had) return;
    this.emitState();
    this.emit('revoked', { reason });
    this.emitAuth('SIGNED_OUT', null);
  }

  // ---- refresh ----

  private expiresSoon(rec: Rec, now = Date.now()) {
    return expiresSoon(rec, this.skewMs, now);
  }

  /** Refreshes only if, after re-reading storage, the token still needs it. */
  private ensureFresh(): Promise<Tokens> {
    this.sync();
    if (this.rec && !this.expiresSoon(this.rec)) return Promise.resolve(this.rec.tokens);
    if (!this.refreshing) this.refreshing = this.doRefresh({ force: false }).finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private refreshAfterReject(rejected: string): Promise<Tokens> {
    this.sync();
    if (this.rec && this.rec.tokens.access_token !== rejected) return Promise.resolve(this.rec.tokens);
    return this.refresh({ rejected });
  }

  /**
   * One pull refresh. `force`: even if the token is fresh; `rejected`: only if storage still
   * holds that (refused) access token once this tab has the refresh lock.
   */
  private async doRefresh(how: { force: boolean; rejected?: string }): Promise<Tokens> {
    if (this.dupCheck) await this.dupCheck;
    return withLock(this.shared ? lockManager() : null, `${this.key}:refresh`, 3000, async () => {
      this.sync();
      const mine = this.rec;
      if (!mine) throw this.report(new TokenpushError('not_logged_in', 'refresh: not logged in'));
      // Another tab may have refreshed while this one waited for the lock.
      if (how.rejected !== undefined ? mine.tokens.access_token !== how.rejected : !how.force && !this.expiresSoon(mine)) {
        return mine.tokens;
      }
      const rec = this.presentable() ?? mine;
      this.activity('pull', { generation: rec.gen });
      let reply: Reply;
      try {
        reply = await this.postJson('refresh', '/auth/refresh', { body: { refresh_token: rec.tokens.refresh_token } });
      } catch (e) {
        throw this.renewFailed(netError('refresh', e));
      }
      const r = reply.r;
      if (r.ok) {
        const t = reply.body;
        if (!validTokens(t)) throw this.renewFailed(new TokenpushError('invalid_response', 'refresh: malformed token response', r.status));
        this.offer(t, 'refresh', 'pull');
        this.sync();
        // Storage may hold something even newer (a push that landed meanwhile): that wins.
        return this.rec ? this.rec.tokens : t;
      }
      const err = errorOf(reply, 'refresh');
      if (err.code === 'invalid_grant') {
        // Another tab may have logged in again or rotated meanwhile: only our own stale view is dead.
        this.sync();
        const now = this.readStore();
        if (now && (now.sid !== rec.sid || newer(now, rec))) return now.tokens;
        this.endStored(rec.sid, 'invalid_grant');
        this.loggedOut('invalid_grant');
      }
      throw this.renewFailed(err);
    });
  }

  private renewFailed(e: TokenpushError): TokenpushError {
    this.emit('renew_error', e);
    return this.report(e);
  }

  private postJson(what: string, path: string, opts: { body?: unknown; bearer?: string; keepalive?: boolean } = {}): Promise<Reply> {
    return postJson(this.fetchImpl, this.url(path), what, this.timeoutMs, opts);
  }

  private clearExpiryTimers() {
    this.expiry.clear();
  }

  private scheduleExpiry() {
    this.expiry.schedule();
  }

  private async sendLogout(t: Tokens) {
    const body = JSON.stringify({ refresh_token: t.refresh_token });
    try {
      const { r } = await this.postJson('logout', '/auth/logout', { body: { refresh_token: t.refresh_token }, keepalive: true });
      if (r.status >= 500) throw new Error(`HTTP ${r.status}`);
      this.store.removeItem(this.k('pending-logout'));
    } catch {
      // Offline: remember it and send it when back online (or on the next page load).
      try {
        this.store.setItem(this.k('pending-logout'), body);
      } catch {
        /* ignore */
      }
    }
  }

  private retryPendingLogout() {
    let body: string | null = null;
    try {
      body = this.store.getItem(this.k('pending-logout'));
    } catch {
      return;
    }
    if (!body) return;
    this.store.removeItem(this.k('pending-logout'));
    try {
      const t = JSON.parse(body);
      if (isObj(t) && typeof t.refresh_token === 'string') void this.sendLogout(t as unknown as Tokens);
    } catch {
      /* ignore */
    }
  }

  private async requestPush() {
    if (this.leader && this.wsSend) {
      this.wsSend({ type: 'renew' });
      return;
    }
    const token = await this.getAccessToken();
    if (!token) return;
    const reply = await this.postJson('renew', '/auth/renew', { bearer: token }).catch((e) => {
      throw this.report(netError('renew', e));
    });
    if (!reply.r.ok) throw this.report(errorOf(reply, 'renew'));
  }

  // ---- events ----

  private emit<K extends keyof Events>(type: K, detail: Events[K]) {
    for (const cb of [...(this.listeners.get(type) ?? [])]) {
      try {
        cb(detail);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  private emitAuth(e: AuthChangeEvent, t: Tokens | null) {
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

  private report(e: TokenpushError): TokenpushError {
    // An outage fails every background attempt: tell the app once, not every few seconds.
    if (isOutage(e)) {
      const now = Date.now();
      if (now - this.lastNetworkReport < 10000) return e;
      this.lastNetworkReport = now;
    } else {
      this.lastNetworkReport = 0;
    }
    this.emit('error', e);
    try {
      this.onError?.(e);
    } catch {
      /* the app's handler must not break the client */
    }
    return e;
  }

  private activity(kind: ActivityKind, detail?: unknown) {
    const a = { kind, at: Date.now(), detail };
    this.emit('activity', a);
    if (this.leader) this.post({ t: 'activity', a });
  }

  private localInfo(): ChannelInfo {
    return {
      state: this.state,
      transport: this.kind,
      leaderId: this.leader ? this.id : null,
      connectionId: this.leader ? this.connectionId : undefined,
    };
  }

  private emitState() {
    const info = this.channelInfo;
    this.emit('state', { state: this.state, transport: this.kind, leader: this.leader, channel: info.state });
    if (this.leader) this.post({ t: 'state', info: this.localInfo() });
  }

  private setChState(s: ChannelState) {
    if (this.chState === s) return;
    this.chState = s;
    this.emitState();
  }

  // ---- cross-tab ----

  private attach() {
    if (!this.shared) {
      if (this.tabId) this.openBc(); // only to answer duplicate checks
      return;
    }
    if (this.store.subscribe) {
      this.unsubs.push(
        this.store.subscribe((key) => {
          if (key === null || key === this.k('tokens')) this.sync();
          else if (key === this.k('transport')) {
            const v = this.store.getItem(this.k('transport'));
            if (v === 'sse' || v === 'ws') this.applyTransport(v);
          } else if (key === this.k('leader') && !lockManager()) this.election.tick();
        }),
      );
    }
    if (!this.browser) return;
    this.openBc();
    const w = globalThis as unknown as Window;
    const d = (globalThis as { document?: Document }).document;
    const listen = (t: EventTarget | undefined, type: string, h: (e: Event) => void) => {
      if (!t || typeof t.addEventListener !== 'function') return;
      t.addEventListener(type, h);
      this.unsubs.push(() => t.removeEventListener(type, h));
    };
    listen(w, 'online', () => this.recover('online'));
    listen(w, 'offline', () => {
      if (this.leader && this.chState !== 'live') this.setChState('offline');
    });
    listen(w, 'focus', () => this.recover('focus'));
    listen(d, 'visibilitychange', () => {
      if (d?.visibilityState === 'visible') this.recover('visible');
    });
    listen(d, 'resume', () => this.recover('resume'));
    listen(w, 'pageshow', (e) => {
      if ((e as PageTransitionEvent).persisted) this.resumePage();
      else this.recover('pageshow');
    });
    listen(w, 'pagehide', (e) => {
      if ((e as PageTransitionEvent).persisted) this.suspendPage();
      else if (this.leader && !lockManager()) this.election.dropRecord();
    });
  }

  private openBc() {
    const BC = (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
    if (!BC || this.bc) return;
    try {
      this.bc = new BC(this.key);
      this.bc.onmessage = (e) => this.onMessage(e.data as Msg);
    } catch {
      this.bc = null;
    }
  }

  private post(m: Msg) {
    // A tab that does not share its tokens (session storage, degraded) shares nothing else either,
    // except what keeps other tabs from replaying: revocations and duplicate checks.
    if (!this.shared && m.t !== 'revoked' && m.t !== 'tab?' && m.t !== 'tab!') return;
    try {
      this.bc?.postMessage(m);
    } catch {
      /* closed */
    }
  }

  private onMessage(m: Msg) {
    if (this.disposed || !isObj(m)) return;
    if (m.t === 'tab?') {
      if (m.id === this.tabId) this.post({ t: 'tab!', id: m.id });
      return;
    }
    if (m.t === 'tab!') {
      this.onTabTaken?.(m.id);
      return;
    }
    if (!this.shared && !(this.degraded && (m.t === 'tokens' || m.t === 'revoked'))) return;
    switch (m.t) {
      case 'tokens':
        this.sync();
        break;
      case 'revoked':
        if (this.rec && this.rec.sid === m.sid && !this.readStore()) this.loggedOut(m.reason);
        else this.sync();
        break;
      case 'state':
        if (!this.leader) {
          this.remote = m.info;
          this.emitState();
        }
        break;
      case 'activity':
        if (!this.leader) this.emit('activity', m.a);
        break;
      case 'transport':
        this.applyTransport(m.kind);
        break;
      case 'hello':
        if (this.leader) this.post({ t: 'state', info: this.localInfo() });
        break;
      case 'drop':
        if (this.leader) this.conn?.close('dropped');
        break;
      case 'lose':
        if (this.leader) this.loseNext = true;
        break;
      case 'leader-gone':
        if (!lockManager()) this.election.tick();
        break;
    }
  }

  private applyTransport(kind: TransportKind) {
    if (kind === this.kind) return;
    this.kind = kind;
    if (this.leader) this.reopen('transport changed');
    this.emitState();
  }

  /** The page came back (visible, online, focus, resumed): check freshness and the channel now. */
  private recover(why: string) {
    if (this.disposed || this.suspended) return;
    this.sync();
    this.retryPendingLogout();
    if (!this.rec) return;
    if (this.expiresSoon(this.rec)) this.ensureFresh().catch(() => {});
    else this.scheduleExpiry();
    if (!lockManager()) this.election.tick();
    if (this.gaveUp) this.compete(); // it stopped and left the election: try again
    if (!this.leader) return;
    const stale = Date.now() - this.lastSeen > 2 * this.heartbeatMs;
    if (this.chState === 'stopped') this.startChannel();
    else if (this.chState === 'backoff' || this.chState === 'offline') this.wake?.();
    else if (this.chState === 'live' && stale) this.conn?.close(`watchdog (${why})`);
    // A connect (ticket, then channel: a timeout each) the timers should have ended, but timers
    // do not run in a frozen tab: start over.
    else if (this.chState === 'connecting' && Date.now() - this.connectingSince > 2 * this.timeoutMs) this.startChannel();
  }

  private suspendPage() {
    // Leave nothing open so the page can enter the back/forward cache.
    this.suspended = true;
    this.stopChannel();
    this.election.leave();
    this.clearExpiryTimers();
    this.bc?.close();
    this.bc = null;
  }

  private resumePage() {
    if (this.disposed) return;
    this.suspended = false;
    this.openBc();
    this.sync();
    if (this.rec) {
      this.scheduleExpiry();
      this.compete();
      if (this.expiresSoon(this.rec)) this.ensureFresh().catch(() => {});
    }
  }

  // ---- leader election (election.ts) ----

  private get leader(): boolean {
    return this.election.leader;
  }

  /** Starts competing for the channel (idempotent). */
  private compete() {
    if (!this.election.competing && this.eligible()) this.gaveUp = false;
    this.election.compete();
  }

  private eligible(): boolean {
    return !!this.rec && !this.disposed && !this.suspended;
  }

  private electionHost(): ElectionHost {
    return {
      lockName: `${this.key}:channel`,
      recordKey: this.k('leader'),
      id: this.id,
      store: this.store,
      eligible: () => this.eligible(),
      alone: () => !this.browser || !this.shared,
      lead: () => {
        this.remote = null;
        this.activity('leader', { leader: true, id: this.id });
        this.scheduleExpiry();
        this.startChannel();
      },
      lost: () => {
        this.stopChannel();
        this.chState = 'logged_out';
        this.activity('leader', { leader: false });
        this.emitState();
        this.post({ t: 'hello' });
      },
      announce: (t) => this.post({ t }),
      changed: () => this.emitState(),
    };
  }

  /** A stopped leader leaves the election, so another tab (whose connects may work) can lead. */
  private giveUpLeadership() {
    if (!this.browser || !this.shared) return; // alone: it stays the leader, `stopped`
    this.gaveUp = true;
    this.election.leave();
  }

  // ---- the channel (leader) ----

  private startChannel() {
    this.stopChannel();
    const run = ++this.run;
    void this.channelLoop(run);
  }

  /** Ends the loop: every await in it checks its run number, so nothing opens after this. */
  private stopChannel() {
    this.run++;
    const c = this.conn;
    this.conn = null;
    this.wsSend = null;
    c?.close('stopped');
    this.wake?.();
  }

  private reopen(reason: string) {
    if (this.conn) this.conn.close(reason);
    else this.wake?.();
  }

  private sleep(ms: number, run: number): Promise<void> {
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
      if (run !== this.run) done();
    });
  }

  private async channelLoop(run: number) {
    let attempt = 0;
    let failures = 0;
    let reportedNetwork = false;
    const alive = () => run === this.run && this.leader && !!this.rec && !this.disposed;
    while (alive()) {
      this.connectingSince = Date.now();
      this.setChState('connecting');
      let out: Outcome;
      try {
        out = await this.connectOnce(run);
      } catch (e) {
        out = { kind: 'network', error: netError('channel', e) };
      }
      if (!alive()) break;
      let wait: number;
      if (out.kind === 'revoked' || out.kind === 'stopped') break;
      if (out.wasLive) {
        attempt = 0;
        failures = 0;
        reportedNetwork = false;
      }
      if (out.kind === 'reopen') {
        attempt = 0;
        this.activity('reconnect', { delayMs: 0, reason: 'reopen' });
        continue;
      }
      if (out.kind === 'reconnect') {
        wait = Math.min(out.retryMs ?? 0, this.maxBackoffMs);
        attempt = 0;
      } else {
        attempt++;
        if (out.kind === 'refused') {
          failures++;
          if (out.error) this.report(out.error);
          if (failures >= this.maxFailures) {
            this.setChState('stopped');
            this.activity('channel_closed', { reason: `gave up after ${failures} refused connects` });
            this.giveUpLeadership();
            return;
          }
          if (out.error?.retryAfterMs !== undefined) attempt = Math.max(attempt, 1);
        } else if (out.kind === 'network' && out.error && !reportedNetwork) {
          reportedNetwork = true;
          this.report(out.error);
        }
        const cap = Math.min(this.maxBackoffMs, 250 * 2 ** Math.min(attempt, 16));
        wait = out.wasLive ? 100 + Math.random() * 400 : cap / 2 + (Math.random() * cap) / 2;
        if (out.error?.retryAfterMs !== undefined) wait = Math.max(wait, Math.min(out.error.retryAfterMs, this.maxBackoffMs));
      }
      const offline = (globalThis as { navigator?: Navigator }).navigator?.onLine === false;
      this.setChState(offline ? 'offline' : 'backoff');
      this.activity('reconnect', { delayMs: wait, reason: out.error?.code ?? out.kind });
      await this.sleep(wait, run);
    }
  }

  /** One ticket + one channel connection, until it ends. */
  private async connectOnce(run: number): Promise<Outcome> {
    // Present the newest refresh token any tab has: an older one may count as theft.
    this.sync();
    const rec = this.presentable();
    if (!rec || run !== this.run) return { kind: 'stopped' };
    let reply: Reply;
    try {
      reply = await this.postJson('ticket', '/auth/ticket', { body: { refresh_token: rec.tokens.refresh_token } });
    } catch (e) {
      return { kind: 'network', error: netError('ticket', e) };
    }
    const r = reply.r;
    if (run !== this.run) return { kind: 'stopped' };
    if (!r.ok) {
      const err = errorOf(reply, 'ticket');
      if (err.code === 'invalid_grant') {
        this.sync();
        const now = this.readStore();
        if (now && (now.sid !== rec.sid || newer(now, rec))) return { kind: 'reopen' };
        this.endStored(rec.sid, 'invalid_grant');
        this.report(err);
        this.loggedOut('invalid_grant');
        return { kind: 'revoked' };
      }
      if (r.status >= 500) return { kind: 'network', error: err };
      return { kind: 'refused', error: err };
    }
    const body = reply.body;
    const ticket = isObj(body) && typeof body.ticket === 'string' ? body.ticket : null;
    if (!ticket) return { kind: 'network', error: new TokenpushError('invalid_response', 'ticket: malformed response', r.status) };
    if (run !== this.run) return { kind: 'stopped' };
    const host = this.host(run, rec);
    return this.kind === 'ws' ? openWs(host, ticket) : openSse(host, rec, ticket);
  }

  /** What one connection of channel run `run` (session of `rec`) may do to this client. */
  private host(run: number, rec: Rec): ChannelHost {
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
        if (this.conn !== conn) return;
        this.conn = null;
        this.wsSend = null;
      },
      ready: (d, kind) => this.onReady(d, kind),
      push: (d) => this.onPush(d, rec.sid),
      revoked: (reason) => this.onRevoked(reason, rec.sid),
      ack: (access, generation) =>
        void this.postJson('ack', '/auth/ack', { bearer: access })
          .then(({ r }) => r.ok && this.activity('ack', { generation }))
          .catch(() => {}),
      activity: (kind, detail) => this.activity(kind, detail),
    };
  }

  private onReady(d: Record<string, unknown>, kind: TransportKind) {
    const hb = typeof d.heartbeat_secs === 'number' && d.heartbeat_secs > 0 ? d.heartbeat_secs : 15;
    this.heartbeatMs = hb * 1000;
    this.connectionId = typeof d.connection_id === 'string' ? d.connection_id : undefined;
    this.lastSeen = Date.now();
    this.activity('channel_open', { transport: kind, connectionId: this.connectionId });
    this.setChState('live');
    this.post({ t: 'state', info: this.localInfo() });
  }

  /** A pushed `tokens`: apply unless stale; returns whether to ack. */
  private onPush(d: Record<string, unknown>, chSid: string): boolean {
    if (!validTokens(d)) return false;
    const claims = decodeClaims(d.access_token);
    const generation = generationOf(d, claims);
    if (this.loseNext) {
      this.loseNext = false;
      this.activity('push_ignored', { generation });
      return false;
    }
    const reason = (typeof d.reason === 'string' ? d.reason : 'renewal') as TokensReason;
    this.activity('push', { generation, reason });
    this.sync();
    if (!this.rec || this.rec.sid !== d.session_id || chSid !== d.session_id) {
      // A channel of a session this browser no longer uses.
      this.reopen('stale session');
      return false;
    }
    if (this.offer(d, reason, 'push')) return true;
    // Same tokens as stored (another tab pulled them) are still worth confirming.
    return !!this.rec && this.rec.tokens.access_token === d.access_token && this.confirmable(this.rec);
  }

  private onRevoked(reason: string, sid: string): boolean {
    this.sync();
    if (!this.rec || this.rec.sid !== sid) {
      this.reopen('old session revoked');
      return false;
    }
    this.endStored(sid, reason);
    this.loggedOut(reason);
    return true;
  }

  private watchdog(run: number, close: (why: string) => void): () => void {
    const t = setInterval(() => {
      if (run !== this.run) return;
      if (Date.now() - this.lastSeen > 2 * this.heartbeatMs) close('heartbeat missed');
    }, 1000);
    return () => clearInterval(t);
  }

}
