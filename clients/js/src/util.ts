// Small helpers every module uses: a type guard, ids, and what the browser offers.

import type { TransportKind } from './index.js';

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

export function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

export function lockManager(): LockManager | null {
  const n = (globalThis as { navigator?: Navigator }).navigator;
  const l = n?.locks;
  return l && typeof l.request === 'function' ? l : null;
}

export function autoTransport(): TransportKind {
  const g = globalThis as { fetch?: unknown; ReadableStream?: unknown; WebSocket?: unknown };
  return typeof g.fetch === 'function' && typeof g.ReadableStream === 'function' ? 'sse' : g.WebSocket ? 'ws' : 'sse';
}
