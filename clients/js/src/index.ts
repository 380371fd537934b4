// tokenpush-client: keeps a browser user logged in against a tokenpush server.
//
// One channel per browser: the leader tab (Web Lock, or a storage election where Web Locks are
// missing) opens the SSE or WebSocket channel and receives pushed tokens; the other tabs follow
// through storage and a BroadcastChannel. That is an optimisation only: if two tabs both hold
// channels the server sends both the same tokens.
//
// Storage is the source of truth. Every tab re-reads it before it presents a refresh token
// (refresh, ticket, logout), applies `storage` events, and never lets a generation go backwards:
// presenting an old generation after the grace window is what the server calls theft.
//
// SSE is read with a streaming fetch, not EventSource: it sees the server's `: ping` heartbeat
// comments (for the liveness watchdog) and the HTTP status of a refused connect (401, 429).

/** The server's token response (DESIGN.md `TokenResponse`). */
export interface Tokens {
  access_token: string;
  token_type: string;
  /** Seconds the access token is valid from when it was issued. */
  expires_in: number;
  refresh_token: string;
  refresh_expires_in: number;
  session_id: string;
}

/** Decoded access-token claims (not verified here: the server verifies). */
export interface Claims {
  sub?: string;
  name?: string;
  roles?: string[];
  sid?: string;
  gen?: number;
  device?: string;
  ip?: string;
  iat?: number;
  nbf?: number;
  exp?: number;
  iss?: string;
  aud?: string | string[];
  jti?: string;
  [claim: string]: unknown;
}

/**
 * This tab's channel state. `follower`: another tab holds the channel; `stopped`: connecting
 * was refused repeatedly (see the `error` events) and the client stopped retrying until the
 * page becomes visible, goes online, or logs in again.
 */
export type ChannelState = 'logged_out' | 'connecting' | 'live' | 'follower' | 'backoff' | 'offline' | 'stopped';

/** The kind of push channel. */
export type TransportKind = 'sse' | 'ws';

/** Why a `tokens` event happened. */
export type TokensReason =
  | 'login'
  | 'renewal'
  | 'claims_changed'
  | 'resume'
  | 'requested'
  | 'refresh'
  | 'storage'
  | 'broadcast';

/** Where tokens came from: pushed on this tab's channel, pulled by this tab, a login, another tab. */
export type TokensSource = 'push' | 'pull' | 'login' | 'other-tab';

/** A synchronous key-value store shared by the tabs that should share a login. */
export interface StorageAdapter {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  /** Whether other tabs see this storage (default true for custom adapters). */
  shared?: boolean;
  /** Calls `cb` when another tab changed `key`; returns an unsubscribe function. */
  subscribe?(cb: (key: string | null) => void): () => void;
}

/** An error the client reports: the server's error code, or `network`. */
export class TokenpushError extends Error {
  /** The server's `error` code (`invalid_grant`, `rate_limited`, `invalid_ticket`, …) or `network`. */
  readonly code: string;
  /** HTTP status, when there was a response. */
  readonly status?: number;
  /** The server's `Retry-After`, in milliseconds, when it sent one. */
  readonly retryAfterMs?: number;
  constructor(code: string, message: string, status?: number, retryAfterMs?: number) {
    super(message);
    this.name = 'TokenpushError';
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Payloads of the typed events (`client.on(type, cb)`). */
export interface Events {
  tokens: {
    tokens: Tokens;
    reason: TokensReason;
    generation: number;
    /** Local-clock expiry of the access token in ms since the epoch (receipt + `expires_in`). */
    expiresAt: number;
    source: TokensSource;
  };
  revoked: { reason: string };
  state: { state: ChannelState; transport: TransportKind; leader: boolean; channel: ChannelState };
  error: TokenpushError;
  activity: { kind: ActivityKind; at: number; detail?: any };
  /**
   * The access token is within the refresh margin of its expiry and no newer one came: the
   * client pulls a refresh now (once per access token).
   */
  expiring: { expiresAt: number; generation: number };
  /** The access token expired and no newer one came (once per access token). */
  expired: { expiresAt: number; generation: number };
  /** A refresh failed (the tokens are kept; background refreshes retry with backoff). */
  renew_error: TokenpushError;
}

/** Channel activity, for timelines and debugging views. */
export type ActivityKind =
  | 'push'
  | 'ack'
  | 'pull'
  | 'reconnect'
  | 'resume'
  | 'push_ignored'
  | 'channel_open'
  | 'channel_closed'
  | 'leader';

/** Options of `createClient`. */
export interface ClientOptions {
  /** Server origin (and path prefix); default `location.origin`. */
  baseUrl?: string;
  /** Channel kind; default `sse`. `auto`: SSE where streaming fetch exists, else WebSocket. */
  transport?: TransportKind | 'auto';
  /** Where tokens live; default `local` (shared by every tab of the origin). */
  storage?: 'local' | 'session' | 'memory' | StorageAdapter;
  /** Namespace of the storage keys, lock and BroadcastChannel names; default `tokenpush`. */
  storageKey?: string;
  /** The `fetch` to use for the client's own requests and the wrapper; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Called with every error the client reports (as the `error` event). */
  onError?: (e: TokenpushError) => void;
  /** Pull-refresh this long before expiry when no push came (capped at 10 % of the lifetime); default 5000. */
  skewMs?: number;
  /** Cap of the reconnect backoff, also applied to the server's `retry_ms`; default 10000. */
  maxBackoffMs?: number;
  /** Consecutive refused connects (401/403/429 on ticket or channel) before giving up; default 5. */
  maxConnectFailures?: number;
  /**
   * Limit on each request the client makes (login, refresh, ticket, ack, logout, renew) and on a
   * channel connect until it opens; default 10000. A hung request fails with code `timeout`.
   */
  timeoutMs?: number;
}

/** Channel details as this tab knows them (a follower reports the leader's channel). */
export interface ChannelInfo {
  state: ChannelState;
  transport: TransportKind;
  leaderId: string | null;
  connectionId?: string;
}

/**
 * Auth state changes in the shape other auth clients use (supabase-js): `INITIAL_SESSION` once
 * on subscribe, `USER_UPDATED` when new tokens carry different claims (roles, name, …).
 */
export type AuthChangeEvent = 'INITIAL_SESSION' | 'SIGNED_IN' | 'TOKEN_REFRESHED' | 'USER_UPDATED' | 'SIGNED_OUT';

/** The current session, shaped like supabase-js's `Session`. */
export interface Session extends Tokens {
  /** Local-clock expiry of the access token, in seconds since the epoch. */
  expires_at: number;
  /** The access token's claims (not verified here). */
  user: Claims | null;
  /** The refresh-token generation. */
  generation: number;
}

/** The client. Create it with `createClient`. */
export interface TokenpushClient {
  /** Logs in; a different session already stored here (any tab) is replaced and logged out. */
  login(username: string, password: string, deviceId?: string): Promise<Tokens>;
  /** Ends the session everywhere (every tab, every channel). Sent with `keepalive`, retried when back online. */
  logout(): Promise<void>;
  /** A valid access token, refreshing single-flight if it is about to expire; null when logged out. */
  getAccessToken(): Promise<string | null>;
  /**
   * Pull refresh now (single-flight). Rejects with `TokenpushError` on failure. With `rejected`
   * (an access token a server refused) it refreshes only if storage still holds that token:
   * another tab may already have a newer one.
   */
  refresh(opts?: { rejected?: string }): Promise<Tokens>;
  /** The session after re-reading storage, refreshed first when about to expire; null when logged out. */
  getSession(): Promise<Session | null>;
  /**
   * `fetch` that adds `Authorization: Bearer` for the server's origin only, and retries once
   * after a 401 `invalid_token` with a refreshed token. Other origins get the request untouched.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** The server's base URL the client talks to. */
  readonly baseUrl: string;
  readonly tokens: Tokens | null;
  readonly claims: Claims | null;
  readonly state: ChannelState;
  readonly transport: TransportKind;
  readonly isLeader: boolean;
  readonly channelInfo: ChannelInfo;
  /** Switches the channel kind in every tab. */
  setTransport(kind: TransportKind): void;
  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof Events>(type: K, cb: (detail: Events[K]) => void): () => void;
  /** Auth state changes; the callback first gets `INITIAL_SESSION` (asynchronously). */
  onAuthStateChange(cb: (event: AuthChangeEvent, tokens: Tokens | null) => void): () => void;
  /** Closes the channel, leaves the election, removes every listener and timer. */
  dispose(): void;
  /** Demo and diagnostics hooks; not needed by applications. */
  readonly debug: {
    /** Closes the channel as if the network dropped (the client reconnects and resumes). */
    dropChannel(): void;
    /** Asks the server for a push now (WebSocket `renew` frame, or `POST /auth/renew`). */
    requestPush(): Promise<void>;
    /** Ignores (does not apply, does not ack) the next pushed `tokens`. */
    loseNextPush(): void;
  };
}

/** Decodes a JWT's claims (UTF-8 safe) without verifying them; null when malformed. */
export function decodeClaims(jwt: string | null | undefined): Claims | null {
  try {
    if (!jwt) return null;
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(part + '='.repeat((4 - (part.length % 4)) % 4));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? (claims as Claims) : null;
  } catch {
    return null;
  }
}

/** Creates a client. Safe to call during server-side rendering (it then stays passive). */
export function createClient(opts: ClientOptions = {}): TokenpushClient {
  return new Client(opts);
}

// ---- internals ---------------------------------------------------------------------------

/** What is stored: the tokens plus what every tab needs to order them and time them. */
interface Rec {
  v: 1;
  tokens: Tokens;
  sid: string;
  gen: number;
  /** The access token's `exp` claim: orders pushes that repeat a generation with a fresh access token. */
  exp: number;
  /** Local-clock expiry (ms), stamped once where the tokens arrived. */
  expiresAt: number;
  reason: TokensReason;
  source: TokensSource;
}

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

interface Conn {
  close(reason: string): void;
}

/** How one channel connection ended. */
interface Outcome {
  kind: 'closed' | 'reconnect' | 'refused' | 'network' | 'revoked' | 'reopen' | 'stopped';
  wasLive?: boolean;
  retryMs?: number;
  error?: TokenpushError;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

function validTokens(v: unknown): v is Tokens {
  return (
    isObj(v) &&
    typeof v.access_token === 'string' &&
    typeof v.refresh_token === 'string' &&
    typeof v.session_id === 'string' &&
    typeof v.expires_in === 'number'
  );
}

function pickTokens(v: Tokens): Tokens {
  return {
    access_token: v.access_token,
    token_type: v.token_type ?? 'Bearer',
    expires_in: v.expires_in,
    refresh_token: v.refresh_token,
    refresh_expires_in: v.refresh_expires_in,
    session_id: v.session_id,
  };
}

/** Generation from the refresh token `<sid>.<gen>.<mac>`, else the access token's `gen` claim. */
function generationOf(t: Tokens, claims: Claims | null): number {
  if (claims && typeof claims.gen === 'number') return claims.gen;
  const m = /^[^.]+\.(\d+)\./.exec(t.refresh_token);
  return m ? Number(m[1]) : 0;
}

function makeRec(t: Tokens, reason: TokensReason, source: TokensSource, now: number): Rec {
  const tokens = pickTokens(t);
  const claims = decodeClaims(tokens.access_token);
  return {
    v: 1,
    tokens,
    sid: tokens.session_id,
    gen: generationOf(tokens, claims),
    exp: typeof claims?.exp === 'number' ? claims.exp : 0,
    expiresAt: now + tokens.expires_in * 1000,
    reason,
    source,
  };
}

/** a strictly newer than b, within one session. */
const newer = (a: Rec, b: Rec) => a.gen > b.gen || (a.gen === b.gen && a.exp > b.exp);

function parseRec(raw: string | null): Rec | null {
  if (!raw) return null;
  try {
    const r = JSON.parse(raw);
    if (!isObj(r) || r.v !== 1 || !validTokens(r.tokens) || typeof r.gen !== 'number') return null;
    return r as unknown as Rec;
  } catch {
    return null;
  }
}

class MemoryStorage implements StorageAdapter {
  private m = new Map<string, string>();
  shared = false;
  getItem(k: string) {
    return this.m.has(k) ? (this.m.get(k) as string) : null;
  }
  setItem(k: string, v: string) {
    this.m.set(k, v);
  }
  removeItem(k: string) {
    this.m.delete(k);
  }
}

function webStorage(kind: 'local' | 'session'): StorageAdapter | null {
  try {
    const s: Storage | undefined = kind === 'local' ? globalThis.localStorage : globalThis.sessionStorage;
    if (!s) return null;
    const probe = '__tokenpush_probe__';
    s.setItem(probe, '1');
    s.removeItem(probe);
    const adapter: StorageAdapter = {
      getItem: (k) => s.getItem(k),
      setItem: (k, v) => s.setItem(k, v),
      removeItem: (k) => s.removeItem(k),
      shared: kind === 'local',
    };
    const w = globalThis as unknown as { addEventListener?: Window['addEventListener']; removeEventListener?: Window['removeEventListener'] };
    if (kind === 'local' && typeof w.addEventListener === 'function') {
      adapter.subscribe = (cb) => {
        const h = (e: StorageEvent) => {
          if (e.storageArea === s || e.storageArea === undefined) cb(e.key);
        };
        w.addEventListener!('storage', h);
        return () => w.removeEventListener!('storage', h);
      };
    }
    return adapter;
  } catch {
    return null; // SSR, disabled storage, sandboxed frame
  }
}

function retryAfterMs(r: Response): number | undefined {
  const h = r.headers.get('Retry-After');
  if (!h) return undefined;
  const s = Number(h);
  return Number.isFinite(s) ? Math.max(0, s * 1000) : undefined;
}

async function errorFrom(r: Response, what: string): Promise<TokenpushError> {
  let body: unknown = null;
  try {
    body = await r.json();
  } catch {
    /* not JSON */
  }
  return errorOf({ r, body }, what);
}

/** A POST's response with its body already read: JSON, else null. */
interface Reply {
  r: Response;
  body: unknown;
}

/** The error a refused reply stands for: the server's `error` code, else `http_<status>`. */
function errorOf({ r, body }: Reply, what: string): TokenpushError {
  const code = isObj(body) && typeof body.error === 'string' ? body.error : `http_${r.status}`;
  const desc = isObj(body) && typeof body.error_description === 'string' ? body.error_description : `HTTP ${r.status}`;
  return new TokenpushError(code, `${what}: ${desc}`, r.status, retryAfterMs(r));
}

const netError = (what: string, e: unknown) =>
  e instanceof TokenpushError ? e : new TokenpushError('network', `${what}: ${e instanceof Error ? e.message : String(e)}`);

/** Errors an outage produces on every background attempt (reported once, retried with backoff). */
const isOutage = (e: TokenpushError) => e.code === 'network' || e.code === 'timeout';

/** Claims that say who the user is, without the ones every new token changes. */
function identity(c: Claims | null): string {
  if (!c) return '';
  const { iat: _i, nbf: _n, exp: _e, jti: _j, gen: _g, ...rest } = c;
  return JSON.stringify(Object.keys(rest).sort().map((k) => [k, rest[k]]));
}

function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** Whether a 401 says the access token was bad (RFC 6750), as opposed to a missing one or an app's own 401. */
function isInvalidToken(r: Response): boolean {
  return r.status === 401 && /error\s*=\s*"?invalid_token/i.test(r.headers.get('WWW-Authenticate') ?? '');
}

const LEADER_TICK_MS = 1000;
const LEADER_STALE_MS = 3500;
/** How long a `storage: 'session'` tab waits for the tab it may be a duplicate of to answer. */
const DUP_CHECK_MS = 300;

class Client implements TokenpushClient {
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
  private leader = false;
  private competing = false;
  private lockAbort: AbortController | null = null;
  private releaseLock: (() => void) | null = null;
  private electionTimer: ReturnType<typeof setInterval> | null = null;
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
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  private expiredTimer: ReturnType<typeof setTimeout> | null = null;
  /** The access tokens `expiring` / `expired` were last reported for (once per token). */
  private noticedExpiring: string | null = null;
  private noticedExpired: string | null = null;
  private expiryRetries = 0;
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
    const f = opts.fetch ?? (globalThis.fetch as typeof fetch | undefined);
    this.fetchImpl = f
      ? (((input: RequestInfo | URL, init?: RequestInit) => f(input, init)) as typeof fetch)
      : (((): Promise<Response> => Promise.reject(new TypeError('no fetch available'))) as typeof fetch);
    this.onError = opts.onError;
    this.skewMs = opts.skewMs ?? 5000;
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
    return this.leader ? this.chState : this.gaveUp ? 'stopped' : 'follower';
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
    this.leaveElection();
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
    if (this.electionTimer) clearInterval(this.electionTimer);
    this.electionTimer = null;
    if (wasLeader && this.shared && this.browser && !lockManager()) this.dropLeaderRecord();
    this.lockAbort?.abort();
    this.lockAbort = null;
    const release = this.releaseLock;
    this.releaseLock = null;
    release?.();
    this.degraded = true;
    this.shared = false;
    if (!wasLeader) {
      this.competing = false;
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
    this.leaveElection();
    this.gaveUp = false;
    this.chState = 'logged_out';
    if (!had) return;
    this.emitState();
    this.emit('revoked', { reason });
    this.emitAuth('SIGNED_OUT', null);
  }

  // ---- refresh ----

  private expiresSoon(rec: Rec, now = Date.now()) {
    const margin = Math.min(this.skewMs, rec.tokens.expires_in * 100);
    return rec.expiresAt - margin <= now;
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
    // Tabs take turns (a Web Lock where there is one) so one tab refreshes and the others then
    // find the new tokens in storage. The wait is bounded: a frozen tab holding the lock must
    // not stall everyone (the server's rotation rule makes overlapping refreshes safe anyway).
    return this.withLock(`${this.key}:refresh`, 3000, async () => {
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

  /**
   * POSTs JSON (or nothing) to the server and reads the reply, all within `timeoutMs`: a hung
   * request must not hang `getAccessToken()` and every `fetch()` waiting on it. Raced rather
   * than only aborted, so a `fetch` that ignores its signal cannot hang it either.
   */
  private async postJson(what: string, path: string, opts: { body?: unknown; bearer?: string; keepalive?: boolean } = {}): Promise<Reply> {
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new TokenpushError('timeout', `${what}: no response within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    });
    timedOut.catch(() => {});
    const headers: Record<string, string> = {};
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.bearer !== undefined) headers.Authorization = 'Bearer ' + opts.bearer;
    try {
      const init: RequestInit = { method: 'POST', headers, signal: abort.signal };
      if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
      if (opts.keepalive) init.keepalive = true;
      const r = await Promise.race([this.fetchImpl(this.url(path), init), timedOut]);
      const text = await Promise.race([r.text(), timedOut]);
      let body: unknown = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        /* not JSON */
      }
      return { r, body };
    } catch (e) {
      throw netError(what, e);
    } finally {
      clearTimeout(timer);
    }
  }

  private async withLock<T>(name: string, maxWaitMs: number, fn: () => Promise<T>): Promise<T> {
    const locks = this.shared ? lockManager() : null;
    if (!locks) return fn();
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
      if (ran) throw e;
      return fn();
    } finally {
      clearTimeout(timer);
    }
  }

  private clearExpiryTimers() {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.expiredTimer) clearTimeout(this.expiredTimer);
    this.expiryTimer = null;
    this.expiredTimer = null;
  }

  private scheduleExpiry() {
    this.clearExpiryTimers();
    const rec = this.rec;
    if (!rec || this.disposed || this.suspended) return;
    const margin = Math.min(this.skewMs, rec.tokens.expires_in * 100);
    // Followers spread their fallback refreshes a little; the leader's push normally comes first.
    const spread = this.leader ? 0 : Math.random() * margin * 0.3;
    const due = Math.max(0, rec.expiresAt - margin - Date.now() + spread);
    const access = rec.tokens.access_token;
    this.expiredTimer = setTimeout(
      () => {
        this.expiredTimer = null;
        if (this.rec?.tokens.access_token !== access || this.noticedExpired === access) return;
        this.noticedExpired = access;
        this.emit('expired', { expiresAt: rec.expiresAt, generation: rec.gen });
      },
      Math.min(Math.max(0, rec.expiresAt - Date.now()), 2 ** 31 - 1),
    );
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      if (!this.rec) return;
      this.sync();
      const cur = this.rec;
      if (cur && this.expiresSoon(cur) && this.noticedExpiring !== cur.tokens.access_token) {
        this.noticedExpiring = cur.tokens.access_token;
        this.emit('expiring', { expiresAt: cur.expiresAt, generation: cur.gen });
      }
      this.ensureFresh().then(
        () => (this.expiryRetries = 0),
        () => {
          // Keep the tokens and retry with backoff (2 s doubling to 30 s) unless logged out;
          // coming back online or visible retries at once.
          if (!this.rec || this.expiryTimer) return;
          const wait = Math.min(30000, 2000 * 2 ** Math.min(this.expiryRetries++, 4));
          this.expiryTimer = setTimeout(() => this.scheduleExpiry(), wait);
        },
      );
    }, Math.min(due, 2 ** 31 - 1));
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
          } else if (key === this.k('leader') && !lockManager()) this.electionTick();
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
      else if (this.leader && !lockManager()) this.dropLeaderRecord();
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
        if (!lockManager()) this.electionTick();
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
    if (!lockManager()) this.electionTick();
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
    this.leaveElection();
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

  // ---- leader election ----

  /** Starts competing for the channel (idempotent). */
  private compete() {
    if (this.disposed || this.suspended || !this.rec || this.competing) return;
    this.competing = true;
    this.gaveUp = false;
    if (!this.browser || !this.shared) {
      this.becomeLeader();
      return;
    }
    this.post({ t: 'hello' });
    const locks = lockManager();
    if (locks) {
      const abort = new AbortController();
      this.lockAbort = abort;
      locks
        .request(`${this.key}:channel`, { signal: abort.signal }, () => {
          if (abort.signal.aborted || !this.rec) return;
          return new Promise<void>((release) => {
            this.releaseLock = release;
            this.becomeLeader();
          });
        })
        .catch(() => {})
        .finally(() => {
          if (this.lockAbort === abort) this.lockAbort = null;
        });
      this.emitState();
      return;
    }
    // No Web Locks (non-secure origin, old browser): a storage election. The leader refreshes
    // a timestamped record; others take over when it goes stale or the leader says goodbye.
    this.electionTimer = setInterval(() => this.electionTick(), LEADER_TICK_MS);
    this.electionTick();
    this.emitState();
  }

  private readLeader(): { id: string; at: number } | null {
    try {
      const v = JSON.parse(this.store.getItem(this.k('leader')) ?? 'null');
      return isObj(v) && typeof v.id === 'string' && typeof v.at === 'number' ? (v as { id: string; at: number }) : null;
    } catch {
      return null;
    }
  }

  private electionTick() {
    if (!this.competing || !this.shared || lockManager() || this.disposed) return;
    const now = Date.now();
    const cur = this.readLeader();
    if (cur && cur.id !== this.id && now - cur.at < LEADER_STALE_MS) {
      if (this.leader) this.stepDown();
      return;
    }
    try {
      this.store.setItem(this.k('leader'), JSON.stringify({ id: this.id, at: now }));
    } catch {
      return; // storage full: no claim; the tabs' channels stay correct, just more of them
    }
    if (this.leader) return;
    // Claimed: confirm shortly, so two tabs claiming at once settle on the last writer.
    setTimeout(() => {
      const again = this.readLeader();
      if (this.competing && !this.leader && again && again.id === this.id) this.becomeLeader();
    }, 150);
  }

  private dropLeaderRecord() {
    const cur = this.readLeader();
    if (cur && cur.id === this.id) this.store.removeItem(this.k('leader'));
    this.post({ t: 'leader-gone' });
  }

  private becomeLeader() {
    if (this.leader || !this.rec) return;
    this.leader = true;
    this.remote = null;
    this.activity('leader', { leader: true, id: this.id });
    this.scheduleExpiry();
    this.startChannel();
  }

  /** A stopped leader leaves the election, so another tab (whose connects may work) can lead. */
  private giveUpLeadership() {
    if (!this.browser || !this.shared) return; // alone: it stays the leader, `stopped`
    this.gaveUp = true;
    this.leaveElection();
  }

  private stepDown() {
    if (!this.leader) return;
    this.stopChannel();
    this.leader = false;
    this.chState = 'logged_out';
    this.activity('leader', { leader: false });
    this.emitState();
    this.post({ t: 'hello' });
  }

  private leaveElection() {
    this.competing = false;
    if (this.electionTimer) clearInterval(this.electionTimer);
    this.electionTimer = null;
    if (this.leader && !lockManager() && this.shared && this.browser) this.dropLeaderRecord();
    this.lockAbort?.abort();
    this.lockAbort = null;
    const release = this.releaseLock;
    this.releaseLock = null;
    const was = this.leader;
    this.leader = false;
    release?.();
    if (was) this.emitState();
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
    return this.kind === 'ws' ? this.openWs(run, rec, ticket) : this.openSse(run, rec, ticket);
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

  private async openSse(run: number, rec: Rec, ticket: string): Promise<Outcome> {
    const abort = new AbortController();
    let closedWith: string | null = null;
    let wasLive = false;
    const close = (why: string) => {
      if (closedWith === null) closedWith = why;
      abort.abort();
    };
    const conn: Conn = { close };
    this.conn = conn;
    this.lastSeen = Date.now();
    const stopDog = this.watchdog(run, close);
    const lastId = `${rec.sid}:${rec.gen}`;
    // Until the response comes, the connect timeout applies (the watchdog's two heartbeats are longer).
    const connectTimer = setTimeout(() => close('connect timeout'), this.timeoutMs);
    try {
      let r: Response;
      try {
        const opened = this.fetchImpl(
          this.url(`/events?ticket=${encodeURIComponent(ticket)}&last_event_id=${encodeURIComponent(lastId)}`),
          { headers: { Accept: 'text/event-stream', 'Last-Event-ID': lastId }, signal: abort.signal, cache: 'no-store' },
        );
        // A fetch that ignores its signal must not park the loop either.
        const aborted = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new Error('aborted'))));
        aborted.catch(() => {});
        r = await Promise.race([opened, aborted]);
      } catch (e) {
        if (closedWith !== null) return this.closedOutcome(closedWith, false);
        return { kind: 'network', error: netError('channel', e) };
      } finally {
        clearTimeout(connectTimer);
      }
      if (!r.ok || !r.body) {
        const err = await errorFrom(r, 'channel');
        return r.status >= 500 ? { kind: 'network', error: err } : { kind: 'refused', error: err };
      }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let ev = { event: '', data: [] as string[], id: '' };
      let result: Outcome | null = null;
      const dispatch = (): Outcome | null => {
        const e = ev;
        ev = { event: '', data: [], id: '' };
        if (e.data.length === 0 && !e.event) return null;
        let d: unknown = null;
        try {
          d = e.data.length ? JSON.parse(e.data.join('\n')) : {};
        } catch {
          return null;
        }
        if (!isObj(d)) return null;
        switch (e.event || 'message') {
          case 'ready':
            wasLive = true;
            this.onReady(d, 'sse');
            return null;
          case 'tokens':
            if (this.onPush(d, rec.sid)) {
              const access = (d as unknown as Tokens).access_token;
              const generation = generationOf(d as unknown as Tokens, decodeClaims(access));
              // SSE cannot talk back: prove we hold this generation with its access token.
              this.postJson('ack', '/auth/ack', { bearer: access })
                .then(({ r: a }) => a.ok && this.activity('ack', { generation }))
                .catch(() => {});
            }
            return null;
          case 'revoked':
            return this.onRevoked(typeof d.reason === 'string' ? d.reason : 'revoked', rec.sid)
              ? { kind: 'revoked' }
              : { kind: 'reopen' };
          case 'reconnect':
            return { kind: 'reconnect', retryMs: typeof d.retry_ms === 'number' ? d.retry_ms : 1000, wasLive };
          default:
            return null;
        }
      };
      try {
        while (result === null) {
          const { value, done } = await reader.read();
          if (done) break;
          this.lastSeen = Date.now();
          if (run !== this.run) break;
          buf += dec.decode(value, { stream: true });
          let nl: number;
          while (result === null && (nl = buf.search(/\r\n|\r|\n/)) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
            if (line === '') result = dispatch();
            else if (line.startsWith(':')) continue; // heartbeat comment: lastSeen already moved
            else {
              const i = line.indexOf(':');
              const field = i < 0 ? line : line.slice(0, i);
              let value = i < 0 ? '' : line.slice(i + 1);
              if (value.startsWith(' ')) value = value.slice(1);
              if (field === 'event') ev.event = value;
              else if (field === 'data') ev.data.push(value);
              else if (field === 'id') ev.id = value;
            }
          }
        }
      } catch (e) {
        if (closedWith !== null) return this.closedOutcome(closedWith, wasLive);
        return { kind: 'network', wasLive, error: netError('channel', e) };
      } finally {
        abort.abort();
      }
      if (result) return { ...result, wasLive };
      if (closedWith !== null) return this.closedOutcome(closedWith, wasLive);
      this.activity('channel_closed', { reason: 'server closed the stream' });
      return { kind: 'closed', wasLive };
    } finally {
      stopDog();
      if (this.conn === conn) this.conn = null;
    }
  }

  private closedOutcome(why: string, wasLive: boolean): Outcome {
    this.activity('channel_closed', { reason: why });
    if (why === 'stopped') return { kind: 'stopped', wasLive };
    if (why === 'connect timeout') {
      return { kind: 'network', wasLive, error: new TokenpushError('timeout', `channel: no connection within ${this.timeoutMs} ms`) };
    }
    if (why === 'dropped' || why.startsWith('watchdog') || why === 'heartbeat missed') return { kind: 'closed', wasLive };
    return { kind: 'reopen', wasLive };
  }

  private openWs(run: number, rec: Rec, ticket: string): Promise<Outcome> {
    const WS = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    if (!WS) return Promise.resolve({ kind: 'refused', error: new TokenpushError('unsupported', 'no WebSocket here') });
    return new Promise<Outcome>((resolve) => {
      const url = `${this.base.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(ticket)}`;
      let ws: WebSocket;
      try {
        ws = new WS(url);
      } catch (e) {
        resolve({ kind: 'refused', error: netError('channel', e) });
        return;
      }
      let opened = false;
      let wasLive = false;
      let closedWith: string | null = null;
      let outcome: Outcome | null = null;
      // Armed before `onopen`: a black-holed upgrade never opens and never closes by itself.
      let stopDog = (() => {
        const t = setTimeout(() => close('connect timeout'), this.timeoutMs);
        return () => clearTimeout(t);
      })();
      let pinger: ReturnType<typeof setInterval> | null = null;
      const send = (m: object) => {
        try {
          if (ws.readyState === 1) ws.send(JSON.stringify(m));
        } catch {
          /* closing */
        }
      };
      const close = (why: string) => {
        if (closedWith === null) closedWith = why;
        try {
          ws.close(1000);
        } catch {
          /* already closed */
        }
        finish();
      };
      const conn: Conn = { close };
      this.conn = conn;
      this.lastSeen = Date.now();
      let finished = false;
      const finish = (ev?: CloseEvent) => {
        if (finished) return;
        finished = true;
        stopDog();
        if (pinger) clearInterval(pinger);
        if (this.conn === conn) {
          this.conn = null;
          this.wsSend = null;
        }
        if (outcome) return resolve({ ...outcome, wasLive });
        if (closedWith !== null) return resolve(this.closedOutcome(closedWith, wasLive));
        const code = ev?.code ?? 1006;
        if (code === 4001) {
          resolve(this.onRevoked('revoked', rec.sid) ? { kind: 'revoked', wasLive } : { kind: 'reopen', wasLive });
          return;
        }
        this.activity('channel_closed', { reason: `close ${code}` });
        if (!opened) {
          // The browser hides why an upgrade failed (401 ticket, 403 Origin, 429 limits).
          const offline = (globalThis as { navigator?: Navigator }).navigator?.onLine === false;
          resolve(
            offline
              ? { kind: 'network', error: new TokenpushError('network', 'channel: offline') }
              : { kind: 'refused', error: new TokenpushError('ws_refused', 'channel: WebSocket connect refused or failed') },
          );
          return;
        }
        if (code === 1008 || code === 1009) {
          resolve({ kind: 'refused', wasLive, error: new TokenpushError('policy', `channel: closed by the server (${code})`) });
          return;
        }
        if (code === 1012) {
          resolve({ kind: 'reconnect', retryMs: 250 + Math.random() * 750, wasLive });
          return;
        }
        resolve({ kind: 'closed', wasLive });
      };
      ws.onopen = () => {
        opened = true;
        this.lastSeen = Date.now();
        if (run !== this.run) return close('stopped');
        this.wsSend = send;
        stopDog();
        stopDog = this.watchdog(run, close);
        // Browsers cannot see protocol pings: an app-level ping keeps the watchdog fed.
        pinger = setInterval(() => send({ type: 'ping' }), Math.max(1000, this.heartbeatMs));
      };
      ws.onmessage = (e) => {
        this.lastSeen = Date.now();
        if (run !== this.run) return;
        let m: unknown;
        try {
          m = JSON.parse(String(e.data));
        } catch {
          return;
        }
        if (!isObj(m)) return;
        if (m.type === 'ready') {
          wasLive = true;
          this.onReady(m, 'ws');
          if (pinger) clearInterval(pinger);
          pinger = setInterval(() => send({ type: 'ping' }), Math.max(1000, this.heartbeatMs));
        } else if (m.type === 'tokens') {
          const { type: _t, id, ...data } = m;
          if (this.onPush(data, rec.sid)) {
            send({ type: 'ack', id });
            const generation = generationOf(data as unknown as Tokens, decodeClaims(String(data.access_token)));
            this.activity('ack', { generation });
          }
        } else if (m.type === 'revoked') {
          outcome = this.onRevoked(typeof m.reason === 'string' ? m.reason : 'revoked', rec.sid)
            ? { kind: 'revoked' }
            : { kind: 'reopen' };
        } else if (m.type === 'reconnect') {
          outcome = { kind: 'reconnect', retryMs: typeof m.retry_ms === 'number' ? m.retry_ms : 1000 };
        }
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => finish(ev);
    });
  }
}

function lockManager(): LockManager | null {
  const n = (globalThis as { navigator?: Navigator }).navigator;
  const l = n?.locks;
  return l && typeof l.request === 'function' ? l : null;
}

function autoTransport(): TransportKind {
  const g = globalThis as { fetch?: unknown; ReadableStream?: unknown; WebSocket?: unknown };
  return typeof g.fetch === 'function' && typeof g.ReadableStream === 'function' ? 'sse' : g.WebSocket ? 'ws' : 'sse';
}
