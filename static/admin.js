// The demo page's admin console: a live table of sessions (GET /admin/sessions) with revoke
// (DELETE /admin/sessions/{sid}) and role change (PUT /admin/users/{name}/roles) per row, and
// headline numbers (GET /admin/stats). Shown to the `admin` role; the server checks it anyway.

const $ = (id) => document.getElementById(id);

function ago(unixSeconds, now = Date.now()) {
  if (unixSeconds === null || unixSeconds === undefined) return '—';
  const s = Math.max(0, Math.round(now / 1000 - unixSeconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(unixSeconds * 1000).toLocaleString([], { hour12: false });
}

function seconds(ms) {
  if (ms === null || ms === undefined) return '—';
  return `${(ms / 1000).toFixed(1)} s`;
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

/** Polls the admin routes about once a second while started. */
export class AdminConsole {
  /**
   * @param {object} client the tokenpush client (its `fetch` adds the Bearer header)
   * @param {(kind: string, text: string) => void} log writes to the page's event log
   */
  constructor(client, log) {
    this.client = client;
    this.log = log;
    this.timer = null;
    this.busy = false;
    this.lastRows = [];
  }

  start() {
    if (this.timer) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), 1000);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      const [s, st] = await Promise.all([this.client.fetch('/admin/sessions'), this.client.fetch('/admin/stats')]);
      if (s.status === 403 || st.status === 403) {
        this.say('403: this account is no longer an admin.');
        return;
      }
      if (!s.ok || !st.ok) return;
      const sessions = (await s.json()).sessions;
      this.renderStats(await st.json());
      this.renderSessions(sessions);
      $('admin-updated').textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    } catch {
      // Logged out or the server is restarting: the next tick tries again.
    } finally {
      this.busy = false;
    }
  }

  renderStats(st) {
    const sse = st.channels?.sse ?? 0;
    const ws = st.channels?.ws ?? 0;
    $('m-channels').textContent = String(sse + ws);
    // A cluster: channels are every node's; say how many nodes hold them.
    this.nodeCount = st.nodes?.length ?? 1;
    const nodes = this.nodeCount > 1 ? ` on ${this.nodeCount} nodes` : '';
    $('m-channels-kind').textContent = `SSE ${sse} · WS ${ws}${nodes} · ${st.live_sessions} live session${st.live_sessions === 1 ? '' : 's'}`;
    $('m-pushes').textContent = String(st.deliveries_last_minute ?? 0);
    $('m-margin').textContent = seconds(st.min_delivery_margin_ms);
    $('m-reuse').textContent = String(st.reuse_detections ?? 0);
  }

  renderSessions(sessions) {
    const mine = this.client.tokens?.session_id;
    sessions.sort((a, b) => a.user.localeCompare(b.user) || a.created_at - b.created_at);
    const body = $('sessions').tBodies[0];
    const rows = [];
    const now = Date.now();
    for (const s of sessions) {
      const tr = document.createElement('tr');
      tr.dataset.sid = s.session_id;
      tr.dataset.user = s.user;
      if (s.session_id === mine) tr.className = 'mine';
      cell(tr, s.user + (s.session_id === mine ? ' (you)' : ''), 'user');
      cell(tr, s.device, 'device');
      cell(tr, s.ip ?? '—');
      cell(tr, ago(s.created_at, now));
      cell(tr, ago(s.last_used_at, now));
      cell(tr, `${s.generation} / ${s.confirmed_generation ?? '—'}`, 'num');
      // In a cluster, which node holds them (host:port: count).
      const where = this.nodeCount > 1 && s.nodes?.length
        ? ` (${s.nodes.map((n) => `${n.node}: ${n.sse + n.ws}`).join(', ')})`
        : '';
      cell(tr, `SSE ${s.channels.sse} · WS ${s.channels.ws}${where}`);
      cell(tr, s.last_push_at ? `${ago(s.last_push_at, now)} (gen ${s.last_push_generation})` : '—');
      cell(tr, seconds(s.last_margin_ms), 'num');

      const rolesTd = document.createElement('td');
      // Minted (ext:) and hook (hook:) users take their roles from the app that vouches for
      // them: a new mint, or the hook's next answer, changes them; this server cannot.
      if (/^(ext|hook):/.test(s.user)) {
        const note = document.createElement('span');
        note.className = 'muted';
        note.textContent = `${(s.roles || []).join(', ') || 'no roles'} (set by your app)`;
        note.title = s.user.startsWith('ext:')
          ? 'roles of a minted user change when your backend mints it again'
          : 'roles of a login-hook user change with the hook\'s next answer';
        rolesTd.append(note);
        tr.append(rolesTd);
      } else {
        const form = document.createElement('form');
        form.className = 'roles-form';
        const input = document.createElement('input');
        input.name = 'roles';
        input.value = (s.roles || []).join(', ');
        input.setAttribute('aria-label', `roles of ${s.user}, comma separated`);
        input.placeholder = 'no roles';
        const set = document.createElement('button');
        set.type = 'submit';
        set.className = 'secondary small-btn';
        set.textContent = 'Set roles';
        set.setAttribute('aria-label', `set roles of ${s.user}`);
        form.append(input, set);
        form.addEventListener('submit', (e) => {
          e.preventDefault();
          this.setRoles(s.user, input.value);
        });
        rolesTd.append(form);
        tr.append(rolesTd);
      }

      const actTd = document.createElement('td');
      const revoke = document.createElement('button');
      revoke.type = 'button';
      revoke.className = 'danger small-btn revoke';
      revoke.textContent = 'Revoke';
      revoke.setAttribute('aria-label', `revoke ${s.user}'s session on ${s.device}`);
      revoke.addEventListener('click', () => this.revoke(s));
      actTd.append(revoke);
      tr.append(actTd);
      rows.push(tr);
    }
    // Keep the row whose roles are being edited (and its focus) as it is.
    const focused = document.activeElement;
    const keep = focused && body.contains(focused) ? focused.closest('tr') : null;
    if (keep) {
      const i = rows.findIndex((r) => r.dataset.sid === keep.dataset.sid);
      if (i >= 0) rows[i] = keep;
    }
    if (!rows.length) {
      const tr = document.createElement('tr');
      const td = cell(tr, 'No live sessions.', 'placeholder');
      td.colSpan = 11;
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    this.lastRows = sessions;
  }

  async revoke(s) {
    const r = await this.client.fetch(`/admin/sessions/${encodeURIComponent(s.session_id)}`, { method: 'DELETE' });
    const text = r.ok ? `revoked ${s.user}'s session on ${s.device}: its tabs are told at once (reason admin)` : `revoke failed: ${r.status}`;
    this.say(text);
    this.log('admin', text);
    this.refresh();
  }

  async setRoles(user, value) {
    const roles = value.split(',').map((x) => x.trim()).filter(Boolean);
    const r = await this.client.fetch(`/admin/users/${encodeURIComponent(user)}/roles`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ roles }),
    });
    const body = await r.json().catch(() => ({}));
    const text = r.ok
      ? `roles of ${user} set to [${roles.join(', ')}]: ${body.sessions_renewed} live session${body.sessions_renewed === 1 ? '' : 's'} got new tokens now (claims_changed)`
        + (body.sessions_on_next_refresh ? `; ${body.sessions_on_next_refresh} without a channel get them at their next refresh` : '')
        + (body.sessions_failed?.length ? `; ${body.sessions_failed.length} could not be renewed now (the server log says why)` : '')
      : `role change failed: ${r.status} ${body.error_description || body.error || ''}`;
    this.say(text);
    this.log('admin', text);
    this.refresh();
  }

  say(text) {
    $('admin-result').textContent = text;
  }
}
