// When to refresh and how tabs take turns: the refresh margin, the refresh lock, and the timers
// of the access token a tab holds (a pull refresh shortly before expiry when no push came, with
// retry backoff; the `expiring` and `expired` notices).

import type { Events } from './index.js';
import type { Rec } from './store.js';

/** How long before expiry a token counts as expiring: `skewMs`, at most 10 % of its lifetime. */
export const refreshMargin = (rec: Rec, skewMs: number) => Math.min(skewMs, rec.tokens.expires_in * 100);

/** Whether `rec`'s access token is within the refresh margin of its expiry. */
export const expiresSoon = (rec: Rec, skewMs: number, now = Date.now()) => rec.expiresAt - refreshMargin(rec, skewMs) <= now;

/**
 * Runs `fn` holding the Web Lock `name` (tabs take turns, so one refreshes and the others then
 * find its tokens in storage), or without it after `maxWaitMs`: a frozen tab holding the lock
 * must not stall everyone (the server's rotation rule makes overlapping refreshes safe anyway).
 */
export async function withLock<T>(locks: LockManager | null, name: string, maxWaitMs: number, fn: () => Promise<T>): Promise<T> {
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

/** What the expiry timers need from the client. */
export interface ExpiryHost {
  readonly skewMs: number;
  /** The tokens this tab holds (after `sync`, storage's newest). */
  rec(): Rec | null;
  /** Re-reads storage. */
  sync(): void;
  /** Whether the timers may run (not disposed, not in the back/forward cache). */
  active(): boolean;
  /** Leaders refresh at once; followers a little later (the leader's push normally comes first). */
  leader(): boolean;
  /** Refreshes if the token still needs it. */
  ensureFresh(): Promise<unknown>;
  notice(type: 'expiring' | 'expired', detail: Events['expiring']): void;
}

/** The timers of the access token this tab holds. */
export class ExpiryTimers {
  private due: ReturnType<typeof setTimeout> | null = null;
  private expiry: ReturnType<typeof setTimeout> | null = null;
  /** The access tokens `expiring` / `expired` were last reported for (once per token). */
  private noticedExpiring: string | null = null;
  private noticedExpired: string | null = null;
  private retries = 0;

  constructor(private readonly host: ExpiryHost) {}

  clear() {
    if (this.due) clearTimeout(this.due);
    if (this.expiry) clearTimeout(this.expiry);
    this.due = null;
    this.expiry = null;
  }

  /** (Re)arms the timers for the token the tab holds now. */
  schedule() {
    this.clear();
    const h = this.host;
    const rec = h.rec();
    if (!rec || !h.active()) return;
    const margin = refreshMargin(rec, h.skewMs);
    const spread = h.leader() ? 0 : Math.random() * margin * 0.3;
    const due = Math.max(0, rec.expiresAt - margin - Date.now() + spread);
    const access = rec.tokens.access_token;
    this.expiry = setTimeout(
      () => {
        this.expiry = null;
        if (h.rec()?.tokens.access_token !== access || this.noticedExpired === access) return;
        this.noticedExpired = access;
        h.notice('expired', { expiresAt: rec.expiresAt, generation: rec.gen });
      },
      Math.min(Math.max(0, rec.expiresAt - Date.now()), 2 ** 31 - 1),
    );
    this.due = setTimeout(() => {
      this.due = null;
      if (!h.rec()) return;
      h.sync();
      const cur = h.rec();
      // Timers may fire a little early by the wall clock (Node measures from the loop's cached
      // time; browsers adjust clocks): not due yet means arm again, not skip this token.
      if (cur && !expiresSoon(cur, h.skewMs)) {
        this.schedule();
        return;
      }
      if (cur && this.noticedExpiring !== cur.tokens.access_token) {
        this.noticedExpiring = cur.tokens.access_token;
        h.notice('expiring', { expiresAt: cur.expiresAt, generation: cur.gen });
      }
      h.ensureFresh().then(
        () => (this.retries = 0),
        () => {
          // Keep the tokens and retry with backoff (2 s doubling to 30 s) unless logged out;
          // coming back online or visible retries at once.
          if (!h.rec() || this.due) return;
          const wait = Math.min(30000, 2000 * 2 ** Math.min(this.retries++, 4));
          this.due = setTimeout(() => this.schedule(), wait);
        },
      );
    }, Math.min(due, 2 ** 31 - 1));
  }
}
