// Storage: the record every tab stores (tokens plus what orders and times them), how it is made,
// parsed and compared, and the storage adapters (Web Storage, memory).

import { decodeClaims } from './index.js';
import type { Claims, StorageAdapter, Tokens, TokensReason, TokensSource } from './index.js';
import { isObj } from './util.js';

/** What is stored: the tokens plus what every tab needs to order them and time them. */
export interface Rec {
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

export function validTokens(v: unknown): v is Tokens {
  return (
    isObj(v) &&
    typeof v.access_token === 'string' &&
    typeof v.refresh_token === 'string' &&
    typeof v.session_id === 'string' &&
    typeof v.expires_in === 'number'
  );
}

export function pickTokens(v: Tokens): Tokens {
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
export function generationOf(t: Tokens, claims: Claims | null): number {
  if (claims && typeof claims.gen === 'number') return claims.gen;
  const m = /^[^.]+\.(\d+)\./.exec(t.refresh_token);
  return m ? Number(m[1]) : 0;
}

export function makeRec(t: Tokens, reason: TokensReason, source: TokensSource, now: number): Rec {
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
export const newer = (a: Rec, b: Rec) => a.gen > b.gen || (a.gen === b.gen && a.exp > b.exp);

export function parseRec(raw: string | null): Rec | null {
  if (!raw) return null;
  try {
    const r = JSON.parse(raw);
    if (!isObj(r) || r.v !== 1 || !validTokens(r.tokens) || typeof r.gen !== 'number') return null;
    return r as unknown as Rec;
  } catch {
    return null;
  }
}

export class MemoryStorage implements StorageAdapter {
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

export function webStorage(kind: 'local' | 'session'): StorageAdapter | null {
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

/** Claims that say who the user is, without the ones every new token changes. */
export function identity(c: Claims | null): string {
  if (!c) return '';
  const { iat: _i, nbf: _n, exp: _e, jti: _j, gen: _g, ...rest } = c;
  return JSON.stringify(Object.keys(rest).sort().map((k) => [k, rest[k]]));
}
