// The push transports: one SSE or WebSocket connection of the leader tab, from its ticket until
// it ends, reported as an `Outcome`. What to do with what arrives (apply, ack, log out) and when
// to reconnect is the client's (`ChannelHost`); this module speaks the wire protocols.

import { TokenpushError, decodeClaims } from './index.js';
import type { ActivityKind, Tokens, TransportKind } from './index.js';
import { errorFrom, netError } from './http.js';
import { parseSse, sseStart } from './sse.js';
import type { SseEvent } from './sse.js';
import { generationOf } from './store.js';
import type { Rec } from './store.js';
import { isObj } from './util.js';

/** An open connection, as the client sees it: something it can close. */
export interface Conn {
  close(reason: string): void;
}

/** How one channel connection ended. */
export interface Outcome {
  kind: 'closed' | 'reconnect' | 'refused' | 'network' | 'revoked' | 'reopen' | 'stopped';
  wasLive?: boolean;
  retryMs?: number;
  error?: TokenpushError;
}

/** What a connection needs from the client, for one channel run. */
export interface ChannelHost {
  readonly fetch: typeof fetch;
  /** The server's base URL. */
  readonly base: string;
  /** Connect timeout (until the response or the WebSocket opens). */
  readonly timeoutMs: number;
  /** Whether this run is still the client's current one (else: stop, open nothing). */
  current(): boolean;
  /** Something arrived (data or a heartbeat): feeds the watchdog. */
  seen(): void;
  /** The server's heartbeat interval as `ready` announced it. */
  heartbeatMs(): number;
  /** Closes the connection after two missed heartbeats; returns the stop function. */
  watchdog(close: (why: string) => void): () => void;
  /** The connection is the client's current one (`dropChannel`, `stopChannel` close it). */
  attach(conn: Conn): void;
  /** WebSocket open: frames (`renew`) can be sent with `send`. */
  sendWith(send: (m: object) => void): void;
  /** The connection ended. */
  detach(conn: Conn): void;
  /** `ready` arrived. */
  ready(d: Record<string, unknown>, kind: TransportKind): void;
  /** A pushed `tokens`: returns whether to ack it. */
  push(d: Record<string, unknown>): boolean;
  /** `revoked` arrived: returns whether it ended this session (else the channel is stale). */
  revoked(reason: string): boolean;
  /** SSE ack (`POST /auth/ack`) of a pushed generation. */
  ack(access: string, generation: number): void;
  activity(kind: ActivityKind, detail?: unknown): void;
}

export async function openSse(host: ChannelHost, rec: Rec, ticket: string): Promise<Outcome> {
  const abort = new AbortController();
  let closedWith: string | null = null;
  let wasLive = false;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  const close = (why: string) => {
    if (closedWith === null) closedWith = why;
    abort.abort();
    // Ends a pending read even where the body ignores the abort (a stalled stream, a custom fetch).
    reader?.cancel().catch(() => {});
  };
  const conn: Conn = { close };
  host.attach(conn);
  host.seen();
  const stopDog = host.watchdog(close);
  const lastId = `${rec.sid}:${rec.gen}`;
  // Until the response comes, the connect timeout applies (the watchdog's two heartbeats are longer).
  const connectTimer = setTimeout(() => close('connect timeout'), host.timeoutMs);
  try {
    let r: Response;
    try {
      const opened = host.fetch(
        `${host.base}/events?ticket=${encodeURIComponent(ticket)}&last_event_id=${encodeURIComponent(lastId)}`,
        { headers: { Accept: 'text/event-stream', 'Last-Event-ID': lastId }, signal: abort.signal, cache: 'no-store' },
      );
      // A fetch that ignores its signal must not park the loop either.
      const aborted = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new Error('aborted'))));
      aborted.catch(() => {});
      r = await Promise.race([opened, aborted]);
    } catch (e) {
      if (closedWith !== null) return closedOutcome(host, closedWith, false);
      return { kind: 'network', error: netError('channel', e) };
    } finally {
      clearTimeout(connectTimer);
    }
    if (!r.ok || !r.body) {
      const err = await errorFrom(r, 'channel');
      return r.status >= 500 ? { kind: 'network', error: err } : { kind: 'refused', error: err };
    }
    reader = r.body.getReader();
    const body = reader;
    const dec = new TextDecoder();
    let parser = sseStart();
    let result: Outcome | null = null;
    const dispatch = (e: SseEvent): Outcome | null => {
      let d: unknown = null;
      try {
        d = e.data ? JSON.parse(e.data) : {};
      } catch {
        return null;
      }
      if (!isObj(d)) return null;
      switch (e.event) {
        case 'ready':
          wasLive = true;
          host.ready(d, 'sse');
          return null;
        case 'tokens':
          if (host.push(d)) {
            const access = (d as unknown as Tokens).access_token;
            // SSE cannot talk back: prove we hold this generation with its access token.
            host.ack(access, generationOf(d as unknown as Tokens, decodeClaims(access)));
          }
          return null;
        case 'revoked':
          return host.revoked(typeof d.reason === 'string' ? d.reason : 'revoked') ? { kind: 'revoked' } : { kind: 'reopen' };
        case 'reconnect':
          return { kind: 'reconnect', retryMs: typeof d.retry_ms === 'number' ? d.retry_ms : 1000, wasLive };
        default:
          return null;
      }
    };
    try {
      while (result === null) {
        const { value, done } = await body.read();
        if (done) break;
        host.seen(); // data or a `: ping` heartbeat comment
        if (!host.current()) break;
        const out = parseSse(parser, dec.decode(value, { stream: true }));
        parser = out.state;
        for (const e of out.events) if ((result = dispatch(e)) !== null) break;
      }
    } catch (e) {
      if (closedWith !== null) return closedOutcome(host, closedWith, wasLive);
      return { kind: 'network', wasLive, error: netError('channel', e) };
    } finally {
      abort.abort();
    }
    if (result) return { ...result, wasLive };
    if (closedWith !== null) return closedOutcome(host, closedWith, wasLive);
    host.activity('channel_closed', { reason: 'server closed the stream' });
    return { kind: 'closed', wasLive };
  } finally {
    stopDog();
    host.detach(conn);
  }
}

/** The outcome of a connection this side closed, by why it was closed. */
export function closedOutcome(host: ChannelHost, why: string, wasLive: boolean): Outcome {
  host.activity('channel_closed', { reason: why });
  if (why === 'stopped') return { kind: 'stopped', wasLive };
  if (why === 'connect timeout') {
    return { kind: 'network', wasLive, error: new TokenpushError('timeout', `channel: no connection within ${host.timeoutMs} ms`) };
  }
  if (why === 'dropped' || why.startsWith('watchdog') || why === 'heartbeat missed') return { kind: 'closed', wasLive };
  return { kind: 'reopen', wasLive };
}

export function openWs(host: ChannelHost, ticket: string): Promise<Outcome> {
  const WS = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  if (!WS) return Promise.resolve({ kind: 'refused', error: new TokenpushError('unsupported', 'no WebSocket here') });
  return new Promise<Outcome>((resolve) => {
    const url = `${host.base.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(ticket)}`;
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
      const t = setTimeout(() => close('connect timeout'), host.timeoutMs);
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
    host.attach(conn);
    host.seen();
    let finished = false;
    const finish = (ev?: CloseEvent) => {
      if (finished) return;
      finished = true;
      stopDog();
      if (pinger) clearInterval(pinger);
      host.detach(conn);
      if (outcome) return resolve({ ...outcome, wasLive });
      if (closedWith !== null) return resolve(closedOutcome(host, closedWith, wasLive));
      const code = ev?.code ?? 1006;
      if (code === 4001) {
        resolve(host.revoked('revoked') ? { kind: 'revoked', wasLive } : { kind: 'reopen', wasLive });
        return;
      }
      host.activity('channel_closed', { reason: `close ${code}` });
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
      host.seen();
      if (!host.current()) return close('stopped');
      host.sendWith(send);
      stopDog();
      stopDog = host.watchdog(close);
      // Browsers cannot see protocol pings: an app-level ping keeps the watchdog fed.
      pinger = setInterval(() => send({ type: 'ping' }), Math.max(1000, host.heartbeatMs()));
    };
    ws.onmessage = (e) => {
      host.seen();
      if (!host.current()) return;
      let m: unknown;
      try {
        m = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (!isObj(m)) return;
      if (m.type === 'ready') {
        wasLive = true;
        host.ready(m, 'ws');
        if (pinger) clearInterval(pinger);
        pinger = setInterval(() => send({ type: 'ping' }), Math.max(1000, host.heartbeatMs()));
      } else if (m.type === 'tokens') {
        const { type: _t, id, ...data } = m;
        if (host.push(data)) {
          send({ type: 'ack', id });
          const generation = generationOf(data as unknown as Tokens, decodeClaims(String(data.access_token)));
          host.activity('ack', { generation });
        }
      } else if (m.type === 'revoked') {
        outcome = host.revoked(typeof m.reason === 'string' ? m.reason : 'revoked')
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
