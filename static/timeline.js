// The demo page's timeline, drawn in SVG with no framework: one bar per access token from
// issue to expiry, markers for what happened on the channel, a "now" line, and the next
// renewal marked ahead of time. It only draws; app.js feeds it from the client's events.

const NS = 'http://www.w3.org/2000/svg';
const MAX_TOKENS = 40;
const MAX_MARKERS = 120;
const MAX_LANES = 4;

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
  join: { label: 'joined', row: 1 },
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

  /**
   * Lanes for the token bars: each bar goes in the first lane whose last bar ended before
   * this one starts, so bars that overlap in time never cover each other (up to MAX_LANES;
   * past that, the lane that frees up first). Returns one lane index per token.
   */
  lanes() {
    const ends = [];
    return this.tokens.map((t) => {
      const end = this.ended ? Math.min(t.expiresAt, this.ended.at) : t.expiresAt;
      let lane = ends.findIndex((e) => e <= t.issuedAt);
      if (lane < 0 && ends.length < MAX_LANES) lane = ends.length;
      if (lane < 0) lane = ends.indexOf(Math.min(...ends));
      ends[lane] = Math.max(ends[lane] ?? -Infinity, end);
      return lane;
    });
  }

  /** Redraws for the current time. */
  draw(now = Date.now()) {
    const svg = this.svg;
    const W = Math.max(300, Math.round(svg.clientWidth || this.width));
    const compact = W < 560;
    const charW = compact ? 6 : 6.3; // rough width of one 11 px label character
    // Past 1.2 × TTL to the left, one TTL (plus a little) to the right: a fresh token's whole
    // bar and the next renewal are always in view.
    const ttl = Math.max(2000, this.timing.accessTtlMs);
    const from = now - 1.2 * ttl;
    const to = now + 1.1 * ttl;
    const pad = { l: 8, r: 8, top: 40 };
    const x = (t) => pad.l + ((t - from) / (to - from)) * (W - pad.l - pad.r);
    const clampX = (t) => Math.min(W - pad.r, Math.max(pad.l, x(t)));
    const endOf = (t) => (this.ended ? Math.min(t.expiresAt, this.ended.at) : t.expiresAt);

    // Which tokens are in view, in which lane; and the "to spare" brackets, each in the first
    // of two rows where it does not run into another one (brackets with no room are left out).
    const laneOf = this.lanes();
    const shown = this.tokens.map((t, i) => ({ t, i, lane: laneOf[i] })).filter(({ t }) => endOf(t) >= from && t.issuedAt <= to);
    const nLanes = Math.max(2, ...shown.map((s) => s.lane + 1));
    const spares = [];
    const spareRowEnd = [-Infinity, -Infinity];
    this.tokens.forEach((t, i) => {
      const prev = this.tokens[i - 1];
      if (!prev || t.issuedAt >= prev.expiresAt || endOf(prev) < from || t.issuedAt > to) return;
      const x1 = clampX(t.issuedAt);
      const x2 = clampX(endOf(prev));
      if (x2 - x1 < 3) return;
      const row = spareRowEnd.findIndex((e) => e + 4 <= x1);
      if (row < 0) return;
      spareRowEnd[row] = x2;
      spares.push({ t, prev, x1, x2, row });
    });
    const spareRows = Math.max(1, ...spares.map((s) => s.row + 1));

    const laneH = compact ? 18 : 22;
    const laneGap = 5;
    const barTop = pad.top + 30;
    const laneY = (l) => barTop + l * (laneH + laneGap);
    const barsBottom = laneY(nLanes - 1) + laneH;
    const spareY = (r) => barsBottom + 12 + r * 22;
    pad.axis = spareY(spareRows - 1) + 22;
    const H = pad.axis + 22;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('height', H);
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

    // Token bars, one lane each while they overlap; the label shortens to fit its bar.
    for (const { t, i, lane } of shown) {
      const end = endOf(t);
      const x1 = clampX(t.issuedAt);
      const x2 = clampX(end);
      // Past four overlapping tokens a later bar may start on top of this one: the label
      // keeps to the part still in view.
      const over = shown.find((o) => o.i > i && o.lane === lane && o.t.issuedAt < end);
      const room = (over ? Math.min(x2, clampX(over.t.issuedAt)) : x2) - x1;
      const y = laneY(lane);
      const live = !this.ended && t.issuedAt <= now && now < t.expiresAt;
      const g = el('g', { class: `tl-token how-${t.how}${live ? ' live' : ''}${t.expiresAt <= now ? ' expired' : ''}`, 'data-gen': t.gen, 'data-how': t.how, 'data-lane': lane });
      g.append(el('rect', { x: x1, y, width: Math.max(2, x2 - x1), height: laneH, rx: 5 }));
      const how = { push: ' · pushed', pull: ' · pulled', login: ' · login', tab: ' · other tab' }[t.how] || '';
      const label = [`gen ${t.gen}${how}`, `gen ${t.gen}`, `${t.gen}`].find((l) => room > l.length * 6.8 + 10);
      if (label) g.append(el('text', { x: x1 + 6, y: y + laneH / 2 + 4, class: 'tl-bar-label' }, label));
      g.append(el('title', {}, `access token gen ${t.gen} (${t.reason}): ${new Date(t.issuedAt).toLocaleTimeString()} → ${new Date(t.expiresAt).toLocaleTimeString()}`));
      out.push(g);
    }

    // Where a new token arrived before the old one ran out: a bracket with the time to spare.
    // Labels shorten to fit and are left to the tooltip where they would run into another.
    const spareLabelEnd = [-Infinity, -Infinity];
    for (const { t, prev, x1, x2, row } of spares) {
      const y = spareY(row);
      const g = el('g', { class: 'tl-spare', 'data-gen': t.gen });
      g.append(el('path', { d: `M${x1} ${y - 5}V${y}H${x2}V${y - 5}` }));
      const secsLeft = Math.round((prev.expiresAt - t.issuedAt) / 1000);
      const cx = (x1 + x2) / 2;
      const label = [`${secsLeft} s to spare`, `${secsLeft} s spare`, `${secsLeft} s`].find((l) => {
        const w = l.length * charW;
        return w <= Math.max(x2 - x1, 28) && cx - w / 2 > spareLabelEnd[row] + 6 && cx + w / 2 < W;
      });
      if (label) {
        g.append(el('text', { x: cx, y: y + 12, 'text-anchor': 'middle' }, label));
        spareLabelEnd[row] = cx + (label.length * charW) / 2;
      }
      g.append(el('title', {}, `gen ${t.gen} arrived ${secsLeft} s before gen ${prev.gen} expired`));
      out.push(g);
    }

    // Markers: a tick down to the bars and a small labelled dot in one of two rows. A label
    // goes right of its dot, or left of it near the right edge; one that would run into the
    // previous label of its row (or the edge) is left to the tooltip and the line below.
    // Every dot's room is taken first, so no label is drawn over another marker's dot.
    const visible = this.markers.filter((m) => m.at >= from && m.at <= to);
    const labelSpans = [[], []];
    for (const m of visible) {
      const row = (MARKERS[m.kind] || { row: 1 }).row;
      labelSpans[row].push([x(m.at) - 5, x(m.at) + 5, m]);
    }
    const free = (row, a, b, self) => labelSpans[row].every(([c, d, o]) => o === self || b + 3 < c || a > d + 3);
    for (const m of visible) {
      const def = MARKERS[m.kind] || { label: m.kind, row: 1 };
      const mx = x(m.at);
      const my = pad.top + def.row * 14 - 6;
      const g = el('g', { class: `tl-marker k-${m.kind}`, 'data-kind': m.kind });
      g.append(el('line', { x1: mx, x2: mx, y1: my, y2: barsBottom, class: 'tl-marker-line' }));
      g.append(el('circle', { cx: mx, cy: my, r: 4.5 }));
      const w = def.label.length * charW;
      let at = null;
      if (mx + 7 + w <= W - pad.r && free(def.row, mx + 6, mx + 7 + w, m)) at = { x: mx + 7, anchor: 'start', a: mx + 6, b: mx + 7 + w };
      else if (mx - 7 - w >= pad.l && free(def.row, mx - 7 - w, mx - 6, m)) at = { x: mx - 7, anchor: 'end', a: mx - 7 - w, b: mx - 6 };
      if (at) {
        g.append(el('text', { x: at.x, y: my + 4, class: 'tl-marker-label', 'text-anchor': at.anchor }, def.label));
        labelSpans[def.row].push([at.a, at.b, null]);
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
