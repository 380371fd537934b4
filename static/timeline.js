// The demo page's timeline, drawn in SVG with no framework: one bar per access token from
// issue to expiry, markers for what happened on the channel, a "now" line, and the next
// renewal marked ahead of time. It only draws; app.js feeds it from the client's events.

const NS = 'http://www.w3.org/2000/svg';
const MAX_TOKENS = 40;
const MAX_MARKERS = 120;

/** Marker kinds: CSS class, short label on the chart, and whether it sits in the upper row. */
export const MARKERS = {
  push: { label: 'push', row: 0 },
  ack: { label: 'ack', row: 1 },
  pull: { label: 'pull refresh', row: 0 },
  reconnect: { label: 'reconnect', row: 1 },
  resume: { label: 'resume', row: 1 },
  channel_open: { label: 'channel open', row: 1 },
  channel_closed: { label: 'channel closed', row: 1 },
  leader: { label: 'channel moved', row: 1 },
  push_ignored: { label: 'push lost', row: 0 },
  revoked: { label: 'revoked', row: 0 },
  drop: { label: 'drop', row: 1 },
  switch: { label: 'switch', row: 1 },
  request: { label: 'push asked', row: 1 },
  lose: { label: 'lose next', row: 1 },
  replay: { label: 'replay', row: 0 },
  error: { label: 'error', row: 1 },
};

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Keeps what happened (tokens and markers, times in local ms) and redraws the SVG.
 * `tokens` and `markers` are plain arrays so the browser tests can read them.
 */
export class Timeline {
  /** @param {SVGSVGElement} svg */
  constructor(svg) {
    this.svg = svg;
    this.tokens = []; // {key, gen, issuedAt, expiresAt, how: 'login'|'push'|'pull'|'tab', reason}
    this.markers = []; // {at, kind, text}
    this.timing = { accessTtlMs: 60000, leadMs: 15000, jitterMs: 6000, graceMs: 30000 };
    this.channelLive = false;
    this.ended = null; // {at, reason} once the session ended
    this.width = 900;
    /** Called with every new marker (the page shows the latest one in words). */
    this.onMark = null;
  }

  /** Server timing settings (from /demo/config), used to mark the next renewal. */
  setTiming(t) {
    this.timing = { ...this.timing, ...t };
  }

  /** Adds a token bar; a token already drawn (same key) is not drawn twice. */
  addToken(tok) {
    const known = this.tokens.find((t) => t.key === tok.key);
    if (known) return known;
    this.tokens.push(tok);
    this.tokens.sort((a, b) => a.issuedAt - b.issuedAt);
    if (this.tokens.length > MAX_TOKENS) this.tokens.shift();
    this.ended = null;
    return tok;
  }

  /** Adds a marker at `at` (local ms). */
  mark(kind, text, at = Date.now()) {
    const m = { at, kind, text };
    this.markers.push(m);
    if (this.markers.length > MAX_MARKERS) this.markers.shift();
    this.onMark?.(m);
    return m;
  }

  /** The session ended: bars stop at this instant. */
  end(reason, at = Date.now()) {
    this.ended = { at, reason };
  }

  /** Clears everything (a new sign-in). */
  reset() {
    this.tokens = [];
    this.markers = [];
    this.ended = null;
  }

  /** The newest token, if any. */
  current() {
    return this.tokens[this.tokens.length - 1] || null;
  }

  /**
   * When the server should push next: `[earliest, latest]` in local ms (renewal is due
   * `lead` + up to `jitter` before expiry), or null without a live channel or token.
   */
  nextRenewal() {
    const t = this.current();
    if (!t || this.ended || !this.channelLive) return null;
    const latest = t.expiresAt - this.timing.leadMs;
    return [latest - this.timing.jitterMs, latest];
  }

  /** Redraws for the current time. */
  draw(now = Date.now()) {
    const svg = this.svg;
    const W = Math.max(320, Math.round(svg.clientWidth || this.width));
    const compact = W < 560;
    const H = compact ? 205 : 225;
    const pad = { l: 8, r: 8, top: 40, axis: H - 22 };
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('height', H);
    // Past 1.2 × TTL to the left, one TTL (plus a little) to the right: a fresh token's whole
    // bar and the next renewal are always in view.
    const ttl = Math.max(2000, this.timing.accessTtlMs);
    const from = now - 1.2 * ttl;
    const to = now + 1.1 * ttl;
    const x = (t) => pad.l + ((t - from) / (to - from)) * (W - pad.l - pad.r);
    const clampX = (t) => Math.min(W - pad.r, Math.max(pad.l, x(t)));
    const out = [];

    // Axis with ticks every "nice" number of seconds, labelled relative to now.
    const span = (to - from) / 1000;
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => span / s <= (compact ? 5 : 9)) || 600;
    out.push(el('line', { x1: pad.l, x2: W - pad.r, y1: pad.axis, y2: pad.axis, class: 'tl-axis' }));
    for (let s = Math.ceil((from - now) / 1000 / step) * step; s * 1000 + now <= to; s += step) {
      const tx = x(now + s * 1000);
      out.push(el('line', { x1: tx, x2: tx, y1: pad.top - 8, y2: pad.axis + 4, class: 'tl-grid' }));
      out.push(el('text', { x: tx, y: H - 6, class: 'tl-tick', 'text-anchor': 'middle' }, s === 0 ? 'now' : `${s > 0 ? '+' : ''}${s}s`));
    }

    // Next renewal: a shaded window and a dashed line where it is due at the latest.
    const next = this.nextRenewal();
    if (next && next[1] > now - 1000) {
      const [a, b] = next;
      out.push(el('rect', { x: clampX(a), y: pad.top - 10, width: Math.max(2, clampX(b) - clampX(a)), height: pad.axis - pad.top + 10, class: 'tl-next-window' }));
      const nx = clampX(b);
      out.push(el('line', { x1: nx, x2: nx, y1: pad.top - 10, y2: pad.axis, class: 'tl-next', 'data-kind': 'next-renewal' }));
      out.push(el('text', { x: nx - 4, y: pad.top - 14, class: 'tl-next-label', 'text-anchor': 'end' }, 'next renewal'));
    }

    // Token bars in two alternating lanes, so a new token visibly overlaps the old one.
    const laneH = compact ? 22 : 26;
    const laneY = [pad.top + 38, pad.top + 38 + laneH + 8];
    this.tokens.forEach((t, i) => {
      if (t.expiresAt < from) return;
      const end = this.ended ? Math.min(t.expiresAt, this.ended.at) : t.expiresAt;
      const x1 = clampX(t.issuedAt);
      const x2 = clampX(end);
      const y = laneY[i % 2];
      const live = !this.ended && t.issuedAt <= now && now < t.expiresAt;
      const g = el('g', { class: `tl-token how-${t.how}${live ? ' live' : ''}${t.expiresAt <= now ? ' expired' : ''}`, 'data-gen': t.gen, 'data-how': t.how });
      g.append(el('rect', { x: x1, y, width: Math.max(2, x2 - x1), height: laneH, rx: 5 }));
      const label = `gen ${t.gen}${{ push: ' · pushed', pull: ' · pulled', login: ' · login' }[t.how] || ''}`;
      if (x2 - x1 > label.length * 6.5 + 10) g.append(el('text', { x: x1 + 7, y: y + laneH / 2 + 4, class: 'tl-bar-label' }, label));
      g.append(el('title', {}, `access token gen ${t.gen} (${t.reason}): ${new Date(t.issuedAt).toLocaleTimeString()} → ${new Date(t.expiresAt).toLocaleTimeString()}`));
      out.push(g);
    });

    // Where a new token arrived before the old one ran out: a bracket with the time to spare.
    this.tokens.forEach((t, i) => {
      const prev = this.tokens[i - 1];
      if (!prev || t.issuedAt >= prev.expiresAt || prev.expiresAt < from || t.issuedAt > to) return;
      const x1 = clampX(t.issuedAt);
      const x2 = clampX(this.ended ? Math.min(prev.expiresAt, this.ended.at) : prev.expiresAt);
      const y = laneY[1] + laneH + 12;
      const g = el('g', { class: 'tl-spare', 'data-gen': t.gen });
      g.append(el('path', { d: `M${x1} ${y - 5}V${y}H${x2}V${y - 5}` }));
      const spare = `${Math.round((prev.expiresAt - t.issuedAt) / 1000)} s to spare`;
      if (x2 - x1 > spare.length * 6) g.append(el('text', { x: (x1 + x2) / 2, y: y + 12, 'text-anchor': 'middle' }, spare));
      g.append(el('title', {}, `gen ${t.gen} arrived ${spare} before gen ${prev.gen} expired`));
      out.push(g);
    });

    // Markers: a tick down to the bars and a small labelled dot in one of two rows; labels
    // that would collide with the previous one in their row are left to the tooltip.
    const lastLabelX = [-Infinity, -Infinity];
    for (const m of this.markers) {
      if (m.at < from || m.at > to) continue;
      const def = MARKERS[m.kind] || { label: m.kind, row: 1 };
      const mx = x(m.at);
      const my = pad.top + def.row * 14 - 6;
      const g = el('g', { class: `tl-marker k-${m.kind}`, 'data-kind': m.kind });
      g.append(el('line', { x1: mx, x2: mx, y1: my, y2: laneY[1] + laneH, class: 'tl-marker-line' }));
      g.append(el('circle', { cx: mx, cy: my, r: 4.5 }));
      if (mx - lastLabelX[def.row] > def.label.length * 6 + 8 && mx < W - 40) {
        g.append(el('text', { x: mx + 7, y: my + 4, class: 'tl-marker-label' }, def.label));
        lastLabelX[def.row] = mx;
      }
      g.append(el('title', {}, `${new Date(m.at).toLocaleTimeString()} ${m.text}`));
      out.push(g);
    }

    // Now.
    const nx = x(now);
    out.push(el('line', { x1: nx, x2: nx, y1: 6, y2: pad.axis + 4, class: 'tl-now' }));
    svg.replaceChildren(...out);
  }
}
