// The demo page: wires the tokenpush client to the DOM. Token logic lives in
// tokenpush-client.js; the timeline drawing in timeline.js; the admin console in admin.js.
import { createClient, decodeClaims } from '/tokenpush-client.js';
import { Timeline } from '/timeline.js';
import { AdminConsole } from '/admin.js';

const $ = (id) => document.getElementById(id);
const PUSH_REASONS = new Set(['renewal', 'claims_changed', 'resume', 'requested']);
/** The refresh token from sign-in, kept aside for the replay button (any tab may press it). */
const FIRST_KEY = 'tokenpush-demo.first-refresh';

const client = createClient();
window.tp = client; // for the browser tests and for poking around in devtools
const timeline = new Timeline($('timeline'));
window.timeline = timeline;
// The latest marker in words under the chart: what happened and why, without hovering.
timeline.onMark = (m) => {
  if (m.kind === 'ack') return; // every push is followed by one; the push line says enough
  $('timeline-latest').textContent = `${clock(m.at)} · ${m.text}`;
  $('timeline-latest').dataset.kind = m.kind;
};

const ENDED = {
  logout: 'You logged out (in this tab or another one), so every tab signed out.',
  reuse_detected: 'Reuse detected: a refresh token older than the session allows was presented again. The server treats that as theft and revoked the whole session, in every tab, at once.',
  admin: 'An admin revoked this session. Every tab was told at once.',
  expired: 'The session expired.',
};

const clock = (ms = Date.now()) => new Date(ms).toLocaleTimeString([], { hour12: false });
const secs = (ms) => `${Math.max(0, ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
function human(ms) {
  if (ms % 60000 === 0 && ms >= 60000) return `${ms / 60000} min`;
  return `${ms / 1000} s`;
}

// ---- event log -------------------------------------------------------------------------

function log(kind, text, at = Date.now()) {
  const li = document.createElement('li');
  li.className = kind;
  const time = document.createElement('time');
  time.textContent = clock(at);
  li.append(time, document.createTextNode(' ' + text));
  $('log').prepend(li);
  while ($('log').children.length > 200) $('log').lastChild.remove();
  $('log-empty').hidden = true;
}

/** Which button's explanation the result line shows; follow-ups of an older demonstration
 *  (e.g. the lost push being re-sent after a Drop) must not overwrite a newer button's text. */
let resultOwner = null;
function result(text, owner = resultOwner) {
  resultOwner = owner;
  $('break-result').textContent = text;
}
/** A follow-up message for `owners`' demonstration: shown only while one of them owns the line. */
function followUp(owners, text) {
  if (owners.includes(resultOwner)) result(text, resultOwner);
}

// ---- what the client tells us ----------------------------------------------------------

let lose = null; // {gen} while a lost push is being demonstrated
let signedIn = false;
let signingIn = false; // this tab's own sign-in is under way (its tokens are not "joined")
let joining = false; // a session found in storage, until we know who holds the channel

function howArrived(d) {
  if (d.source === 'login' || d.reason === 'login') return 'login';
  if (d.source === 'pull' || d.reason === 'refresh') return 'pull';
  if (d.source === 'push' || PUSH_REASONS.has(d.reason)) return 'push';
  return 'tab';
}

function addTokens(tokens, d = {}) {
  const c = decodeClaims(tokens.access_token) || {};
  const ttl = (tokens.expires_in || c.exp - c.iat || 60) * 1000;
  const expiresAt = d.expiresAt || (c.exp ? c.exp * 1000 : Date.now() + ttl);
  const prev = timeline.current();
  const tok = timeline.addToken({
    key: c.jti || tokens.access_token.slice(-24),
    gen: d.generation ?? c.gen,
    sid: tokens.session_id,
    issuedAt: expiresAt - ttl,
    expiresAt,
    how: d.reason ? howArrived(d) : 'tab',
    reason: d.reason || 'stored',
  });
  return { tok, prev };
}

client.on('tokens', (d) => {
  // A new session (signed in from another tab): the old session's bars are history.
  if (timeline.current() && timeline.current().sid && timeline.current().sid !== d.tokens.session_id) timeline.reset();
  const { tok, prev } = addTokens(d.tokens, d);
  const how = howArrived(d);
  if (how === 'login') {
    log('tokens', `signed in: generation ${tok.gen}, valid for ${secs(tok.expiresAt - tok.issuedAt)}`);
  } else {
    const margin = prev ? prev.expiresAt - Date.now() : null;
    const before = margin !== null && prev !== tok ? (margin > 0 ? `, ${secs(margin)} before the old one expired` : ', after the old one expired') : '';
    const what = how === 'push' ? `pushed (${d.reason})` : how === 'pull' ? 'pulled by POST /auth/refresh' : `from the leader tab (${d.reason})`;
    const line = `new access token, generation ${tok.gen}: ${what}${before}`;
    log(how === 'pull' ? 'pull' : 'tokens', line);
    $('timeline-latest').textContent = `${clock()} · ${line}`;
    $('timeline-latest').dataset.kind = how === 'pull' ? 'pull' : 'push';
  }
  if (d.reason === 'claims_changed') {
    const roles = (decodeClaims(d.tokens.access_token)?.roles || []).join(', ') || 'none';
    log('admin', `roles changed by an admin: new claims arrived at once (roles: ${roles})`);
    flash = { key: 'roles', until: Date.now() + 4000 };
  }
  // The tokens after a lost push: pushed again, or pulled when the old token ran low first.
  if (lose && (how === 'push' || how === 'pull') && tok !== prev) {
    if (lose.ignored) {
      const same = prev && tok.gen === (lose.gen ?? prev.gen + 1);
      const what = how === 'push' ? 'The next push' : 'The next tokens (pulled by refresh: the old token ran low before the next push)';
      followUp(['lose', 'push-now'], same
        ? `${what} carried the same generation ${tok.gen}: the server saw no ack for it, so it re-sent that rotation with a fresh access token instead of rotating again. Nobody was logged out.`
        : `${how === 'push' ? 'Next push' : 'Next tokens (pulled)'}: generation ${tok.gen}.`);
      tok.sameGenAsLost = !!same;
      lose = null;
    }
  }
  renderClaims();
  render();
});

const ACTIVITY = {
  push: (d) => `push received${d?.reason ? ` (${d.reason})` : ''}${d?.generation !== undefined ? `: generation ${d.generation}` : ''}`,
  ack: (d) => `ack sent: the server now knows we hold generation ${d?.generation ?? 'new'}`,
  pull: () => 'pull refresh: POST /auth/refresh',
  reconnect: (d) => `reconnecting${d?.delayMs ? ` in ${Math.round(d.delayMs)} ms` : ''}${d?.reason ? ` (${d.reason})` : ''}`,
  resume: () => 'resumed: fresh ticket + last event id; the server sent anything missed',
  push_ignored: (d) => `push ignored on purpose${d?.generation !== undefined ? ` (generation ${d.generation})` : ''}: not applied, not acked`,
  channel_open: (d) => `channel open${d?.transport ? ` over ${d.transport.toUpperCase()}` : ''}`,
  channel_closed: (d) => `channel closed${d?.reason ? ` (${d.reason})` : ''}`,
};

let reconnecting = false; // a reconnect happened since the last channel_open

client.on('activity', (a) => {
  const at = a.at || Date.now();
  if (a.kind === 'leader') {
    // Drawn as a move only when another tab held the channel before (see noticeLeaderChange).
    if (a.detail?.leader && a.detail.id) noticeLeaderChange(a.detail.id);
    else if (a.detail?.leader === false) log('channel', 'this tab stepped down: another tab holds the channel', at);
    return;
  }
  const text = (ACTIVITY[a.kind] || (() => a.kind))(a.detail);
  const m = timeline.mark(a.kind, text, at);
  if (a.detail?.generation !== undefined) m.gen = a.detail.generation;
  if (a.kind === 'reconnect') reconnecting = true;
  if (a.kind === 'channel_open' && reconnecting) {
    reconnecting = false;
    // Every reconnect presents the last event id (<sid>:<gen>): the session resumes where it
    // was, and the server pushes tokens (reason "resume") only if this browser is behind.
    if (!timeline.markers.some((m) => m.kind === 'resume' && at - m.at < 1500)) {
      const resumed = `resumed the same session from its last event id (generation ${timeline.current()?.gen ?? '?'}); the server pushes anything missed`;
      timeline.mark('resume', resumed, at + 1);
      log('channel', resumed, at);
    }
  }
  if (a.kind === 'push_ignored' && lose) {
    lose.ignored = true;
    lose.gen = a.detail?.generation;
    followUp(['lose', 'push-now'], 'Push ignored: not applied, not acked. Press "Push now" (or wait for the renewal) to see what the server sends next.');
  }
  if (a.kind !== 'push' && a.kind !== 'ack') log(a.kind === 'push_ignored' ? 'warn' : 'channel', text, at);
  else log('channel', text, at);
  render();
});

let lastLeader = null;
client.on('state', (s) => {
  if (lastLeader !== null && s.leader !== lastLeader && s.leader) {
    log('channel', 'this tab now holds the channel');
  }
  lastLeader = s.leader;
  render();
});

client.on('revoked', (r) => {
  timeline.mark('revoked', `session revoked: ${r.reason}`);
  timeline.end(r.reason);
  log('revoked', `session ended: ${r.reason}`);
  const p = $('ended');
  p.textContent = `Session ended (${r.reason}). ${ENDED[r.reason] || ''}`;
  p.dataset.reason = r.reason;
  p.hidden = false;
  lose = null;
  render();
});

client.on('error', (e) => {
  timeline.mark('error', `${e.code}${e.status ? ` (${e.status})` : ''}: ${e.message}`);
  log('warn', `error ${e.code}${e.status ? ` ${e.status}` : ''}: ${e.message}`);
});

// ---- rendering -------------------------------------------------------------------------

let flash = null;

function renderClaims() {
  const t = client.tokens;
  const c = t ? decodeClaims(t.access_token) : null;
  const body = $('claims').tBodies[0];
  if (!c) {
    body.replaceChildren();
    return;
  }
  const rows = [];
  for (const k of ['sub', 'name', 'roles', 'sid', 'gen', 'device', 'ip', 'iat', 'exp', 'iss', 'aud']) {
    if (c[k] === undefined) continue;
    const tr = document.createElement('tr');
    tr.dataset.claim = k;
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = k;
    const td = document.createElement('td');
    const v = Array.isArray(c[k]) ? c[k].join(', ') || '—' : String(c[k]);
    td.textContent = k === 'iat' || k === 'exp' ? `${v} (${clock(c[k] * 1000)})` : v;
    if (flash && flash.key === k && Date.now() < flash.until) tr.className = 'changed';
    tr.append(th, td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function render() {
  const t = client.tokens;
  const c = t ? decodeClaims(t.access_token) : null;
  // Signed out (logout, revocation, replay): only the sign-in form and why the session ended;
  // the old session's panels go away instead of freezing below the form.
  $('login-panel').hidden = !!t;
  $('session-view').hidden = !t;
  if (t) $('ended').hidden = true;
  if (signedIn && !t) clearSessionView();
  signedIn = !!t;
  const admin = !!(c && Array.isArray(c.roles) && c.roles.includes('admin'));
  $('admin-panel').hidden = !admin;
  if (admin) adminConsole.start();
  else adminConsole.stop();
  document.body.dataset.state = client.state;
  for (const id of ['drop', 'switch', 'push-now', 'lose', 'replay', 'call-me', 'logout']) $(id).disabled = !t;
  if (t && !signingIn && !timeline.tokens.some((x) => x.sid === t.session_id)) joined(t);

  const info = client.channelInfo || { state: client.state, transport: client.transport };
  const transport = (info.transport || client.transport || 'sse').toUpperCase();
  const state = client.isLeader ? client.state : info.state || client.state;
  $('channel').textContent = t ? `${transport} · ${state}` : '–';
  $('channel').dataset.state = t ? state : 'logged_out';
  $('channel').dataset.transport = transport.toLowerCase();
  $('tab-role').textContent = !t
    ? ''
    : client.isLeader
      ? 'this tab holds the channel'
      : `following the leader tab${info.leaderId ? ` (${String(info.leaderId).slice(0, 6)})` : ''}`;
  $('tab-role').dataset.leader = String(!!client.isLeader);
  $('switch').textContent = transport === 'WS' ? 'Switch to SSE' : 'Switch to WebSocket';
  timeline.channelLive = !!t && state === 'live';
  $('gen').textContent = c ? String(c.gen) : '–';
  $('gen-note').textContent = t ? `session ${t.session_id.slice(0, 8)}…` : '';
  noticeLeaderChange(info.leaderId);
  if (joining && t && (client.isLeader || info.leaderId)) {
    joining = false;
    log('channel', client.isLeader ? 'joined: this tab holds the channel' : 'joined: following the leader tab\'s channel');
  }
  if (!$('session-view').hidden) timeline.draw();
}


/** This tab found a session already signed in (a tab opened later): show what is known. */
function joined(t) {
  if (timeline.tokens.length) timeline.reset();
  const { tok } = addTokens(t);
  tok.how = 'tab';
  tok.reason = 'already signed in';
  log('tokens', `joined session ${t.session_id.slice(0, 8)}…: generation ${tok.gen}, ${secs(tok.expiresAt - Date.now())} left; later renewals are drawn as they arrive`);
  const m = timeline.mark('join', `joined: access token generation ${tok.gen} from this browser's storage`);
  m.gen = tok.gen;
  joining = true;
}

/** Clears what belonged to the ended session (the timeline is kept until the next sign-in). */
function clearSessionView() {
  for (const id of ['countdown', 'next-renewal', 'gen']) $(id).textContent = '–';
  for (const id of ['next-note', 'gen-note', 'timeline-latest', 'break-result', 'me-result']) $(id).textContent = '';
  $('bar-fill').style.width = '0';
  $('log').replaceChildren();
  $('log-empty').hidden = false;
  resultOwner = null;
  joining = false;
}

// A follower learns that the channel moved when the leader id changes, whether or not the
// new leader's `leader` activity reached it first.
let knownLeader = null;
function noticeLeaderChange(id) {
  if (!client.tokens) knownLeader = null;
  if (!id || !client.tokens) return;
  if (knownLeader && id !== knownLeader) {
    const recent = timeline.markers.some((m) => m.kind === 'leader' && Date.now() - m.at < 1500);
    if (!recent) {
      const text = client.isLeader ? 'the channel moved to this tab' : 'the channel moved to another tab';
      timeline.mark('leader', text);
      log('channel', text);
    }
  }
  knownLeader = id;
}

function tick() {
  const now = Date.now();
  const cur = client.tokens ? timeline.current() : null;
  if (cur) {
    const left = cur.expiresAt - now;
    const total = Math.max(1, cur.expiresAt - cur.issuedAt);
    $('countdown').textContent = secs(left);
    $('bar-fill').style.width = `${Math.max(0, Math.min(100, (100 * left) / total))}%`;
    $('bar-fill').className = left < 0.25 * total ? 'low' : '';
    const next = timeline.nextRenewal();
    if (next) {
      const [a, b] = next.map((x) => x - now);
      $('next-renewal').textContent = b <= 0 ? 'due now' : a <= 0 ? `< ${secs(b)}` : `in ${Math.floor(a / 1000)}–${Math.ceil(b / 1000)} s`;
      $('next-note').textContent = `pushed ${human(timeline.timing.leadMs)} (+ up to ${human(timeline.timing.jitterMs)}) before expiry`;
    } else {
      $('next-renewal').textContent = '–';
      $('next-note').textContent = 'no live channel: the client refreshes by pull if it must';
    }
  }
  if (flash && now > flash.until) {
    flash = null;
    renderClaims();
  }
  if (!$('session-view').hidden) timeline.draw(now);
}

// ---- controls --------------------------------------------------------------------------

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  const user = $('username').value;
  timeline.reset();
  knownLeader = null;
  signingIn = true;
  try {
    const tokens = await client.login(user, $('password').value);
    $('password').value = '';
    localStorage.setItem(FIRST_KEY, JSON.stringify({ sid: tokens.session_id, gen: 0, refresh_token: tokens.refresh_token }));
    if (!timeline.tokens.length) addTokens(tokens, { reason: 'login', source: 'login' });
  } catch (err) {
    // The client prefixes its errors with the step ("login: …"); the form says which step.
    $('login-error').textContent = String(err.message || err).replace(/^login:\s*/, '');
  }
  signingIn = false;
  render();
  renderClaims();
});

$('logout').addEventListener('click', () => client.logout());

$('drop').addEventListener('click', () => {
  client.debug.dropChannel();
  timeline.mark('drop', 'channel dropped on purpose (simulated network loss)');
  log('warn', 'dropped the channel on purpose');
  result('Dropped. The client notices, gets a fresh ticket and reconnects with its last event id: watch for "reconnect" and "resume" on the timeline. The token stays valid meanwhile.', 'drop');
});

$('switch').addEventListener('click', () => {
  const next = (client.channelInfo?.transport || client.transport) === 'ws' ? 'sse' : 'ws';
  client.setTransport(next);
  timeline.mark('switch', `switched the channel to ${next.toUpperCase()}`);
  log('channel', `switching the channel to ${next.toUpperCase()} (every tab follows)`);
  result(`Switching to ${next === 'ws' ? 'WebSocket' : 'SSE'}: the leader tab closes its channel and opens the other kind; the server keeps renewing the same session.`, 'switch');
  render();
});

$('push-now').addEventListener('click', async () => {
  timeline.mark('request', 'asked the server for a push now');
  if (!lose) result('Asked for a push: the server rotates (or re-sends an unconfirmed rotation) and writes the tokens to every channel of the session.', 'push-now');
  try {
    await client.debug.requestPush();
  } catch (e) {
    result(`Push request refused: ${e.code || e.message || e}${e.status === 429 ? ' (one per 2 s)' : ''}`, lose ? 'lose' : 'push-now');
  }
});

$('lose').addEventListener('click', () => {
  client.debug.loseNextPush();
  lose = { ignored: false };
  timeline.mark('lose', 'the next push will be ignored (no apply, no ack)');
  log('warn', 'the next push will be ignored on purpose');
  result('Armed: the next push will be dropped by the client. Press "Push now" or wait for the renewal.', 'lose');
});

$('replay').addEventListener('click', async () => {
  resultOwner = 'replay';
  const t = client.tokens;
  let first = null;
  try {
    first = JSON.parse(localStorage.getItem(FIRST_KEY));
  } catch {
    first = null;
  }
  if (!t || !first || first.sid !== t.session_id) {
    result('No refresh token from this session\'s sign-in was kept (it is kept when you sign in on this page). Sign in again to try this.');
    return;
  }
  const r = await fetch('/auth/refresh', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: first.refresh_token }),
  }).catch(() => null);
  const body = r ? await r.json().catch(() => ({})) : {};
  const status = r ? r.status : 'network error';
  timeline.mark('replay', `replayed the sign-in refresh token (generation ${first.gen}): ${status} ${body.error || ''}`);
  log('revoked', `replayed the refresh token from sign-in (generation ${first.gen}) → ${status} ${body.error || ''}`);
  if (r && r.status === 400 && body.error === 'invalid_grant') {
    result(`400 invalid_grant. Generation ${first.gen} is older than the session's redeemable predecessor, so the server treats it as stolen: it revoked the session and told every channel (reason reuse_detected).`);
  } else if (r && r.ok) {
    const grace = timeline.timing.graceMs;
    result(`200: generation ${first.gen} is still redeemable (the current one, or its predecessor within ${human(grace)} of the confirmation), as a retry or a tab that lost a race must be, so nothing was revoked. Press Push now twice and replay again.`);
  } else {
    result(`Replay answered ${status} ${body.error || ''}`);
  }
});

$('call-me').addEventListener('click', async () => {
  const r = await client.fetch('/api/me');
  const body = await r.json().catch(() => ({}));
  $('me-result').textContent = `${r.status} ${JSON.stringify(body, null, 1)}`;
  log(r.ok ? 'channel' : 'revoked', `GET /api/me → ${r.status}`);
});

const adminConsole = new AdminConsole(client, (kind, text) => log(kind, text));

// Server timing for the header and the next-renewal mark.
fetch('/demo/config')
  .then((r) => r.json())
  .then((cfg) => {
    timeline.setTiming({ accessTtlMs: cfg.access_ttl_ms, leadMs: cfg.renew_lead_ms, jitterMs: cfg.renew_jitter_ms, graceMs: cfg.grace_ms });
    $('timing').textContent = `${cfg.demo_users ? 'Demo mode: access' : 'Access'} tokens live ${human(cfg.access_ttl_ms)}; the server pushes new ones ${human(cfg.renew_lead_ms)} (+ up to ${human(cfg.renew_jitter_ms)}) before expiry.`;
  })
  .catch(() => {});

window.addEventListener('resize', () => timeline.draw());
render();
renderClaims();
setInterval(tick, 200);
tick();
