// The leader election: which tab of the browser runs the channel. A Web Lock where there is one;
// else (non-secure origins, old browsers) a storage election where the leader refreshes a
// timestamped record and others take over when it goes stale or the leader says goodbye.
// An optimisation only: if two tabs both lead, the server sends both the same tokens.

import type { StorageAdapter } from './index.js';
import { isObj, lockManager } from './util.js';

const LEADER_TICK_MS = 1000;
const LEADER_STALE_MS = 3500;

/** What the election needs from the client. */
export interface ElectionHost {
  /** The Web Lock's name. */
  readonly lockName: string;
  /** The storage key of the leader record (storage election). */
  readonly recordKey: string;
  /** This tab's id. */
  readonly id: string;
  readonly store: StorageAdapter;
  /** Whether this tab may lead (logged in, not disposed, not in the back/forward cache). */
  eligible(): boolean;
  /** No other tab can share the channel (no browser, or tokens not shared): lead at once. */
  alone(): boolean;
  /** This tab now leads. */
  lead(): void;
  /** This tab stopped leading: another tab's record took over. */
  lost(): void;
  /** Tells the other tabs: `hello` (someone leading? say so), `leader-gone` (take over). */
  announce(t: 'hello' | 'leader-gone'): void;
  /** Leading or competing changed. */
  changed(): void;
}

/** This tab's part in the election. */
export class Election {
  leader = false;
  competing = false;
  private lockAbort: AbortController | null = null;
  private releaseLock: (() => void) | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly host: ElectionHost) {}

  /** Starts competing for the channel (idempotent). */
  compete() {
    const h = this.host;
    if (!h.eligible() || this.competing) return;
    this.competing = true;
    if (h.alone()) {
      this.becomeLeader();
      return;
    }
    h.announce('hello');
    const locks = lockManager();
    if (locks) {
      const abort = new AbortController();
      this.lockAbort = abort;
      locks
        .request(h.lockName, { signal: abort.signal }, () => {
          if (abort.signal.aborted || !h.eligible()) return;
          return new Promise<void>((release) => {
            this.releaseLock = release;
            this.becomeLeader();
          });
        })
        .catch(() => {})
        .finally(() => {
          if (this.lockAbort === abort) this.lockAbort = null;
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
    if (!this.competing || h.alone() || lockManager()) return;
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
      return; // storage full: no claim; the tabs' channels stay correct, just more of them
    }
    if (this.leader) return;
    // Claimed: confirm shortly, so two tabs claiming at once settle on the last writer.
    setTimeout(() => {
      const again = this.readRecord();
      if (this.competing && !this.leader && again && again.id === h.id) this.becomeLeader();
    }, 150);
  }

  /** Storage election: removes this tab's record and tells the others to take over. */
  dropRecord() {
    const h = this.host;
    const cur = this.readRecord();
    try {
      if (cur && cur.id === h.id) h.store.removeItem(h.recordKey);
    } catch {
      /* storage unavailable: the record goes stale */
    }
    h.announce('leader-gone');
  }

  /**
   * Frees the lock (or record) for another tab but keeps leading this tab's own channel: for a
   * tab that stops sharing its tokens.
   */
  detach() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.leader && !this.host.alone() && !lockManager()) this.dropRecord();
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
    if (was) this.host.changed();
  }

  private becomeLeader() {
    if (this.leader || !this.host.eligible()) return;
    this.leader = true;
    this.host.lead();
  }

  private readRecord(): { id: string; at: number } | null {
    try {
      const v = JSON.parse(this.host.store.getItem(this.host.recordKey) ?? 'null');
      return isObj(v) && typeof v.id === 'string' && typeof v.at === 'number' ? (v as { id: string; at: number }) : null;
    } catch {
      return null;
    }
  }
}
