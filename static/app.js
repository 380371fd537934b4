// The demo page: wires TokenClient to the DOM. All token logic lives in token-client.js.
import { TokenClient, decodeClaims } from './token-client.js';

const client = new TokenClient();
window.tp = client; // for the browser tests and for poking around in devtools

const $ = (id) => document.getElementById(id);

function log(message, kind = '') {
  const li = document.createElement('li');
  li.className = kind;
  const time = new Date().toLocaleTimeString([], { hour12: false });
  li.innerHTML = `<time>${time}</time> `;
  li.append(document.createTextNode(message));
  $('log').prepend(li);
  while ($('log').children.length > 200) $('log').lastChild.remove();
}

function render() {
  const t = client.tokens;
  $('login-panel').hidden = !!t;
  $('session-panel').hidden = !t;
  const claims = t ? decodeClaims(t.access_token) : null;
  $('admin-panel').hidden = !(claims && claims.roles && claims.roles.includes('admin'));
  document.body.dataset.state = client.state;
  if (!claims) return;
  $('gen').textContent = claims.gen;
  const rows = ['sub', 'name', 'roles', 'sid', 'gen', 'device', 'ip', 'iat', 'exp', 'iss', 'aud'];
  $('claims').innerHTML = '';
  for (const k of rows) {
    const tr = document.createElement('tr');
    const v = Array.isArray(claims[k]) ? claims[k].join(', ') || '—' : String(claims[k]);
    tr.innerHTML = '<th></th><td></td>';
    tr.children[0].textContent = k;
    tr.children[1].textContent = (k === 'iat' || k === 'exp') ? `${v} (${new Date(claims[k] * 1000).toLocaleTimeString([], { hour12: false })})` : v;
    $('claims').append(tr);
  }
  renderChannel();
}

function renderChannel() {
  $('channel').textContent = `${client.transport.toUpperCase()} · ${client.state}`;
  $('channel').dataset.state = client.state;
  $('role').textContent = client.leader ? 'this tab holds the channel' : 'following the leader tab';
  for (const b of document.querySelectorAll('.toggle button')) b.classList.toggle('active', b.dataset.kind === client.transport);
}

function tick() {
  const claims = client.claims;
  if (claims) {
    const left = Math.max(0, claims.exp * 1000 - Date.now());
    const total = Math.max(1, (claims.exp - claims.iat) * 1000);
    $('countdown').textContent = `${(left / 1000).toFixed(1)} s`;
    $('bar-fill').style.width = `${(100 * left) / total}%`;
    $('bar-fill').className = left < 0.2 * total ? 'low' : '';
  }
  requestAnimationFrame(tick);
}

client.addEventListener('tokens', (e) => {
  render();
  if (e.detail.reason !== 'login') log(`new tokens, generation ${decodeClaims(e.detail.tokens.access_token).gen} (${e.detail.reason})`, 'tokens');
});
client.addEventListener('revoked', (e) => {
  log(`session ended: ${e.detail.reason}`, 'revoked');
  render();
});
client.addEventListener('state', (e) => {
  log(`channel ${e.detail.state}${e.detail.leader ? ' (leader)' : ''}`, 'state');
  render();
});
client.addEventListener('log', (e) => {
  if (!e.detail.message.startsWith('tokens:')) log(e.detail.message, 'debug');
});

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  try {
    await client.login($('username').value, $('password').value);
    log(`logged in as ${$('username').value}`, 'tokens');
    $('password').value = '';
  } catch (err) {
    $('login-error').textContent = err.message;
  }
  render();
});
$('logout').addEventListener('click', () => client.logout());
$('use-sse').addEventListener('click', () => client.setTransport('sse'));
$('use-ws').addEventListener('click', () => client.setTransport('ws'));
$('call-me').addEventListener('click', async () => {
  const r = await client.fetch('/api/me');
  $('me-result').textContent = `${r.status} ${JSON.stringify(await r.json(), null, 1)}`;
  log(`/api/me → ${r.status}`, r.ok ? '' : 'revoked');
});
$('roles-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const roles = $('roles-list').value.split(',').map((s) => s.trim()).filter(Boolean);
  const r = await client.fetch(`/admin/users/${encodeURIComponent($('roles-user').value)}/roles`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ roles }),
  });
  $('roles-result').textContent = `${r.status} ${await r.text()}`;
});

render();
tick();
