// axios adapter: Bearer tokens on requests to the tokenpush server's origin, and one
// single-flight refresh when the server rejects a token, with the failed requests queued and
// each retried once. axios is not imported: the adapter only needs the instance's interceptors.

import type { TokenpushClient } from './index.js';

/** The parts of an axios request config the adapter reads and writes. */
export interface AxiosLikeConfig {
  url?: string;
  baseURL?: string;
  headers?: any;
  [key: string]: any;
}

/** The parts of an axios error the adapter reads. */
export interface AxiosLikeError {
  config?: AxiosLikeConfig;
  response?: { status: number; headers?: any };
}

/** The parts of an axios instance the adapter uses (any axios ≥ 1 fits). */
export interface AxiosLikeInstance {
  interceptors: {
    request: { use(onFulfilled: (c: any) => any, onRejected?: (e: any) => any): number; eject(id: number): void };
    response: { use(onFulfilled: (r: any) => any, onRejected?: (e: any) => any): number; eject(id: number): void };
  };
  request(config: any): Promise<any>;
}

/** Options of `attachAxios`. */
export interface AttachAxiosOptions {
  /** The server's origin; default the client's `baseUrl` (read from `location` when relative). */
  baseUrl?: string;
}

const RETRIED = '__tokenpushRetried';

function headerGet(h: any, name: string): string | undefined {
  if (!h) return undefined;
  if (typeof h.get === 'function') {
    const v = h.get(name);
    return v == null ? undefined : String(v);
  }
  const k = Object.keys(h).find((x) => x.toLowerCase() === name.toLowerCase());
  return k ? String(h[k]) : undefined;
}

function headerSet(c: AxiosLikeConfig, name: string, value: string) {
  if (c.headers && typeof c.headers.set === 'function') c.headers.set(name, value);
  else c.headers = { ...(c.headers ?? {}), [name]: value };
}

/**
 * Wires `client` into an axios instance. Returns a function that removes the interceptors.
 *
 * - Requests to the server's origin get `Authorization: Bearer <access token>` (a valid one:
 *   `client.getAccessToken()` refreshes first when it is about to expire). Other origins are
 *   left alone, so the token never leaks to third parties.
 * - A 401 with `WWW-Authenticate: Bearer error="invalid_token"` starts one refresh; every
 *   request that fails meanwhile waits for that same refresh, then each is retried once.
 */
export function attachAxios(instance: AxiosLikeInstance, client: TokenpushClient, opts: AttachAxiosOptions = {}): () => void {
  const loc = (globalThis as { location?: Location }).location;
  const base = opts.baseUrl ?? client.baseUrl ?? loc?.origin ?? '';
  let origin: string | null = null;
  try {
    origin = new URL(base, loc?.href).origin;
  } catch {
    origin = null;
  }
  const ours = (c: AxiosLikeConfig) => {
    try {
      const u = new URL(c.url ?? '', new URL(c.baseURL ?? base, loc?.href ?? base));
      return origin !== null && u.origin === origin;
    } catch {
      return false;
    }
  };
  let refreshing: Promise<string | null> | null = null;
  const refreshOnce = (rejected: string | undefined): Promise<string | null> => {
    if (!refreshing) {
      refreshing = (async () => {
        // The client re-reads storage and refreshes only if it still holds the rejected token:
        // another request (or tab) may already have moved on, then its token is used.
        const token = rejected && /^Bearer\s+/i.test(rejected) ? rejected.replace(/^Bearer\s+/i, '') : undefined;
        try {
          return (await client.refresh(token === undefined ? {} : { rejected: token })).access_token;
        } catch {
          return null;
        }
      })().finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  };

  const req = instance.interceptors.request.use(async (config: AxiosLikeConfig) => {
    if (!ours(config)) return config;
    const token = await client.getAccessToken();
    if (token) headerSet(config, 'Authorization', 'Bearer ' + token);
    return config;
  });
  const res = instance.interceptors.response.use(
    (r: any) => r,
    async (error: AxiosLikeError) => {
      const config = error?.config;
      const resp = error?.response;
      if (!config || !resp || resp.status !== 401 || config[RETRIED] || !ours(config)) throw error;
      const www = headerGet(resp.headers, 'www-authenticate') ?? '';
      if (!/error\s*=\s*"?invalid_token/i.test(www)) throw error;
      const token = await refreshOnce(headerGet(config.headers, 'Authorization'));
      if (!token) throw error;
      config[RETRIED] = true;
      headerSet(config, 'Authorization', 'Bearer ' + token);
      return instance.request(config);
    },
  );
  return () => {
    instance.interceptors.request.eject(req);
    instance.interceptors.response.eject(res);
  };
}
