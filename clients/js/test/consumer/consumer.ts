// Compiled with `tsc --noEmit` in the test run: an app typed against the package as published
// (resolved through package.json "exports", like an installed dependency).
import axios from 'axios';
import { createClient, decodeClaims, TokenpushError } from 'tokenpush-client';
import type { AuthChangeEvent, ChannelState, Events, Session, StorageAdapter, Tokens, TokenpushClient } from 'tokenpush-client';
import { attachAxios } from 'tokenpush-client/axios';

const memory = new Map<string, string>();
const storage: StorageAdapter = {
  getItem: (k) => memory.get(k) ?? null,
  setItem: (k, v) => void memory.set(k, v),
  removeItem: (k) => void memory.delete(k),
  shared: false,
};

const client: TokenpushClient = createClient({ baseUrl: 'https://api.example', transport: 'auto', storage, storageKey: 'my-app' });
createClient({ storage: 'session', onError: (e: TokenpushError) => console.warn(e.code, e.status) });

async function main(): Promise<void> {
  const t: Tokens = await client.login('alice', 'secret', 'laptop');
  const access: string | null = await client.getAccessToken();
  const r: Response = await client.fetch('/api/me', { method: 'GET' });
  const fresh: Tokens = await client.refresh();
  const state: ChannelState = client.state;
  const sub: string | undefined = client.claims?.sub;
  const gen: number | undefined = decodeClaims(t.access_token)?.gen;
  const off = client.on('tokens', (d: Events['tokens']) => console.log(d.generation, d.source, d.expiresAt));
  client.on('error', (e) => console.log(e.code));
  client.on('state', (s) => console.log(s.state, s.transport, s.leader));
  client.on('revoked', (d) => console.log(d.reason));
  client.on('activity', (a) => console.log(a.kind, a.at));
  const unsub: () => void = client.onAuthStateChange((event, tokens) => console.log(event, tokens?.session_id));
  client.onAuthStateChange((event: AuthChangeEvent) => event === 'INITIAL_SESSION' || event === 'USER_UPDATED');
  const session: Session | null = await client.getSession();
  console.log(session?.expires_at, session?.user?.sub, session?.generation, session?.access_token);
  const again: Tokens = await client.refresh({ rejected: access ?? '' });
  client.on('expiring', (d: Events['expiring']) => console.log(d.expiresAt, d.generation));
  client.on('expired', (d) => console.log(d.expiresAt));
  client.on('renew_error', (e: TokenpushError) => console.log(e.code, again.session_id));
  createClient({ timeoutMs: 5000 });
  off();
  unsub();
  client.setTransport('ws');
  console.log(access, r.status, fresh.session_id, state, sub, gen, client.channelInfo.leaderId, client.isLeader);
  const api = axios.create({ baseURL: 'https://api.example' });
  const detach: () => void = attachAxios(api, client);
  await api.get('/api/me');
  detach();
  await client.logout();
  client.dispose();
}
void main;

// @ts-expect-error: only 'sse' | 'ws'
client.setTransport('carrier-pigeon');
