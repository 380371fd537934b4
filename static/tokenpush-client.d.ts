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
export type TokensReason = 'login' | 'renewal' | 'claims_changed' | 'resume' | 'requested' | 'refresh' | 'storage' | 'broadcast';
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
export declare class TokenpushError extends Error {
    /** The server's `error` code (`invalid_grant`, `rate_limited`, `invalid_ticket`, …) or `network`. */
    readonly code: string;
    /** HTTP status, when there was a response. */
    readonly status?: number;
    /** The server's `Retry-After`, in milliseconds, when it sent one. */
    readonly retryAfterMs?: number;
    constructor(code: string, message: string, status?: number, retryAfterMs?: number);
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
    revoked: {
        reason: string;
    };
    state: {
        state: ChannelState;
        transport: TransportKind;
        leader: boolean;
        channel: ChannelState;
    };
    error: TokenpushError;
    activity: {
        kind: ActivityKind;
        at: number;
        detail?: any;
    };
    /**
     * The access token is within the refresh margin of its expiry and no newer one came: the
     * client pulls a refresh now (once per access token).
     */
    expiring: {
        expiresAt: number;
        generation: number;
    };
    /** The access token expired and no newer one came (once per access token). */
    expired: {
        expiresAt: number;
        generation: number;
    };
    /** A refresh failed (the tokens are kept; background refreshes retry with backoff). */
    renew_error: TokenpushError;
}
/** Channel activity, for timelines and debugging views. */
export type ActivityKind = 'push' | 'ack' | 'pull' | 'reconnect' | 'resume' | 'push_ignored' | 'channel_open' | 'channel_closed' | 'leader';
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
    refresh(opts?: {
        rejected?: string;
    }): Promise<Tokens>;
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
export declare function decodeClaims(jwt: string | null | undefined): Claims | null;
/** Creates a client. Safe to call during server-side rendering (it then stays passive). */
export declare function createClient(opts?: ClientOptions): TokenpushClient;
