// The SSE wire format (WHATWG HTML "server-sent events"), parsed by a pure function: text in,
// events out, nothing else. The transport feeds it decoded chunks as they arrive.

/** One dispatched event: its type (`message` when the stream named none), data and id. */
export interface SseEvent {
  event: string;
  data: string;
  id: string;
}

/** What the parser carries between chunks: the unfinished line and the event being built. */
export interface SseState {
  buf: string;
  event: string;
  data: string[];
  id: string;
}

/** The state before the first chunk. */
export const sseStart = (): SseState => ({ buf: '', event: '', data: [], id: '' });

/**
 * Feeds one decoded chunk. Returns the new state, the events the chunk completed (in order),
 * and how many comment lines (`: ping` heartbeats) it held. Lines end in CRLF, LF or CR; a CR
 * at the very end of a chunk waits for the next one, which may begin with its LF. An event
 * with neither data nor a type is not dispatched (a lone `id:` or blank line).
 */
export function parseSse(state: SseState, chunk: string): { state: SseState; events: SseEvent[]; comments: number } {
  let buf = state.buf + chunk;
  let event = state.event;
  let data = state.data.slice();
  let id = state.id;
  const events: SseEvent[] = [];
  let comments = 0;
  for (;;) {
    const nl = buf.search(/\r\n|\r|\n/);
    if (nl < 0) break;
    if (buf[nl] === '\r' && nl === buf.length - 1) break; // maybe the first half of CRLF
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
    if (line === '') {
      if (data.length > 0 || event) events.push({ event: event || 'message', data: data.join('\n'), id });
      event = '';
      data = [];
      continue;
    }
    if (line.startsWith(':')) {
      comments++;
      continue;
    }
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  return { state: { buf, event, data, id }, events, comments };
}
