// Table tests of the pure SSE parser (src/sse.ts), and a check that the bundled static build
// exports what the package does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSse, sseStart } from '../dist/sse.js';
import * as pkg from '../dist/index.js';
import * as bundled from '../../../static/tokenpush-client.js';

/** Feeds `chunks` one by one; returns every event (as `type|data|id`) and the comment count. */
function feed(chunks) {
  let state = sseStart();
  const events = [];
  let comments = 0;
  for (const c of chunks) {
    const out = parseSse(state, c);
    state = out.state;
    events.push(...out.events.map((e) => `${e.event}|${e.data}|${e.id}`));
    comments += out.comments;
  }
  return { events, comments, rest: state.buf };
}

const cases = [
  ['one event', ['event: ready\ndata: {"a":1}\n\n'], ['ready|{"a":1}|'], 0],
  ['no event field is `message`', ['data: x\n\n'], ['message|x|'], 0],
  ['multi-line data joins with LF', ['data: a\ndata: b\n\n'], ['message|a\nb|'], 0],
  ['id is kept for later events', ['id: s1:3\nevent: tokens\ndata: {}\n\nevent: ping\ndata: 1\n\n'], ['tokens|{}|s1:3', 'ping|1|s1:3'], 0],
  ['CRLF line ends', ['event: a\r\ndata: 1\r\n\r\n'], ['a|1|'], 0],
  ['CR line ends', ['event: a\rdata: 1\r\rdata: 2'], ['a|1|'], 0],
  ['a CR at the end of a chunk waits for the next one', ['data: 1\r\r'], [], 0],
  ['CRLF split across chunks is one line end', ['event: a\r', '\ndata: 1\r', '\n\r', '\n'], ['a|1|'], 0],
  ['a field split across chunks', ['eve', 'nt: to', 'kens\nda', 'ta: {"x"', ':2}\n', '\n'], ['tokens|{"x":2}|'], 0],
  ['comments are counted, not dispatched', [': ping\n\n: ping\n\n'], [], 2],
  ['only the first space after the colon goes', ['data:  two\ndata:none\n\n'], ['message| two\nnone|'], 0],
  ['a field without a colon has an empty value', ['event: e\ndata\n\n'], ['e||'], 0],
  ['unknown fields are ignored', ['retry: 5\nfoo: bar\ndata: d\n\n'], ['message|d|'], 0],
  ['a blank line without data or type dispatches nothing', ['\n\nid: 7\n\n'], [], 0],
  ['an unfinished event waits', ['event: a\ndata: 1\n'], [], 0],
  ['UTF-8 text passes through', ['data: Zoë 李雷 🚀\n\n'], ['message|Zoë 李雷 🚀|'], 0],
];

for (const [name, chunks, want, comments] of cases) {
  test(`sse: ${name}`, () => {
    const got = feed(chunks);
    assert.deepEqual(got.events, want);
    assert.equal(got.comments, comments);
  });
}

test('sse: the parser is pure (the state passed in is not changed)', () => {
  const s0 = sseStart();
  const a = parseSse(s0, 'data: 1\n');
  assert.deepEqual(s0, sseStart());
  const b1 = parseSse(a.state, '\n');
  const b2 = parseSse(a.state, '\n');
  assert.deepEqual(b1, b2);
  assert.deepEqual(a.state.data, ['1']);
});

test('the committed static bundle exports what the package exports', () => {
  assert.deepEqual(Object.keys(bundled).sort(), Object.keys(pkg).sort());
  assert.equal(bundled.decodeClaims(pkg.decodeClaims.length ? 'x' : ''), null);
  const c = bundled.createClient({ baseUrl: 'http://app.test', storage: 'memory', fetch: async () => new Response('{}') });
  assert.equal(c.state, 'logged_out');
  c.dispose();
});
