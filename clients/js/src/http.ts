// HTTP to the server: one JSON POST helper with a timeout, and the errors replies stand for.

import { TokenpushError } from './index.js';
import { isObj } from './util.js';

export function retryAfterMs(r: Response): number | undefined {
  const h = r.headers.get('Retry-After');
  if (!h) return undefined;
  const s = Number(h);
  return Number.isFinite(s) ? Math.max(0, s * 1000) : undefined;
}

export async function errorFrom(r: Response, what: string): Promise<TokenpushError> {
  let body: unknown = null;
  try {
    body = await r.json();
  } catch {
    /* not JSON */
  }
  return errorOf({ r, body }, what);
}

/** A POST's response with its body already read: JSON, else null. */
export interface Reply {
  r: Response;
  body: unknown;
}

/** The error a refused reply stands for: the server's `error` code, else `http_<status>`. */
export function errorOf({ r, body }: Reply, what: string): TokenpushError {
  const code = isObj(body) && typeof body.error === 'string' ? body.error : `http_${r.status}`;
  const desc = isObj(body) && typeof body.error_description === 'string' ? body.error_description : `HTTP ${r.status}`;
  return new TokenpushError(code, `${what}: ${desc}`, r.status, retryAfterMs(r));
}

export const netError = (what: string, e: unknown) =>
  e instanceof TokenpushError ? e : new TokenpushError('network', `${what}: ${e instanceof Error ? e.message : String(e)}`);

/** Errors an outage produces on every background attempt (reported once, retried with backoff). */
export const isOutage = (e: TokenpushError) => e.code === 'network' || e.code === 'timeout';

/** Whether a 401 says the access token was bad (RFC 6750), as opposed to a missing one or an app's own 401. */
export function isInvalidToken(r: Response): boolean {
  return r.status === 401 && /error\s*=\s*"?invalid_token/i.test(r.headers.get('WWW-Authenticate') ?? '');
}

/**
 * POSTs JSON (or nothing) to `url` and reads the reply, all within `timeoutMs`: a hung request
 * must not hang `getAccessToken()` and every `fetch()` waiting on it. Raced rather than only
 * aborted, so a `fetch` that ignores its signal cannot hang it either. Rejects with a
 * `TokenpushError` (`timeout`, or `network` with the cause).
 */
export async function postJson(
  fetchImpl: typeof fetch,
  url: string,
  what: string,
  timeoutMs: number,
  opts: { body?: unknown; bearer?: string; keepalive?: boolean } = {},
): Promise<Reply> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new TokenpushError('timeout', `${what}: no response within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  timedOut.catch(() => {});
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.bearer !== undefined) headers.Authorization = 'Bearer ' + opts.bearer;
  try {
    const init: RequestInit = { method: 'POST', headers, signal: abort.signal };
    if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
    if (opts.keepalive) init.keepalive = true;
    const r = await Promise.race([fetchImpl(url, init), timedOut]);
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
