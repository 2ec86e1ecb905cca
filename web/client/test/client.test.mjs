// The client library against the real daemon (one node, memory store):
// request/result, streaming order, typed errors, cancel reaching the
// backend, queue and reject while disconnected, a live resume after a
// dropped connection, and each close code's meaning (4001, 4009, 1008).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import WS from "ws";
import { OrchestratorError, memoryStorage } from "../orchestrator.js";
import {
  startDaemon, writeConfig, client, opened, stateWhere, collect, cleanup, sleep,
  eventually, mintToken, kick, recordingWS,
} from "./harness.mjs";

// An SSE backend: one chunk every 50 ms for 200 chunks; it records when the
// daemon closes the connection (that is what a cancel does to it).
const backend = { closed: [], started: [] };
const sse = http.createServer((req, res) => {
  let body = "";
  req.on("data", (b) => { body += b; });
  req.on("end", () => {
    const id = JSON.parse(body).id;
    backend.started.push(id);
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    let n = 0;
    const t = setInterval(() => {
      if (n === 200) { clearInterval(t); res.end('data: {"data":"done"}\n\n'); return; }
      res.write(`data: {"chunk":${n++}}\n\n`);
    }, 50);
    res.on("close", () => { clearInterval(t); if (!res.writableEnded) backend.closed.push(id); });
  });
});

let d, cfg;
before(async () => {
  await new Promise((r) => sse.listen(0, "127.0.0.1", r));
  cfg = writeConfig(`backends:
  echo: {kind: echo}
  words: {kind: echo, stream: words, delay: 20ms}
  slowwords: {kind: echo, stream: words, delay: 100ms}
  sse: {kind: http, endpoints: ["http://127.0.0.1:${sse.address().port}/sse"]}
routes:
  echo: {backend: echo}
  stream: {backend: words, timeout: 30s}
  slow: {backend: slowwords, timeout: 30s}
  sse: {backend: sse, timeout: 30s}
`);
  d = await startDaemon(cfg);
});
after(async () => { await cleanup(); sse.close(); });

test("request and result", async () => {
  const c = client(d.url);
  const r = c.request("echo", { text: "hello" });
  assert.match(r.id, /^[\x20-\x7e]{1,64}$/);
  assert.deepEqual(await r.result, { text: "hello" });
  const open = await opened(c);
  assert.equal(open.node, "client-test");
  assert.match(c.session, /^s_/);
  c.close();
});

test("streaming: chunks in order, each once, then the result", async () => {
  const c = client(d.url);
  const words = Array.from({ length: 30 }, (_, i) => "w" + i);
  const seen = [];
  const r = c.request("stream", { text: words.join(" ") }, { onChunk: (_, seq) => seen.push(seq) });
  const { chunks, result } = await collect(r);
  assert.equal(chunks.map((ch) => ch.text).join(""), words.join(" "));
  assert.deepEqual(seen, words.map((_, i) => i));
  assert.deepEqual(result, { text: words.join(" ") });
  c.close();
});

test("errors reject with the contract code", async () => {
  const c = client(d.url);
  const err = await c.request("no-such-route", 1).result.catch((e) => e);
  assert.ok(err instanceof OrchestratorError, String(err));
  assert.equal(err.code, "unknown_type");
  assert.equal(err.id.length > 0, true);
  c.close();
});

test("abort sends cancel and the backend sees its connection closed", async () => {
  const c = client(d.url);
  await opened(c);
  const ac = new AbortController();
  const r = c.request("sse", null, { signal: ac.signal });
  const it = r.chunks[Symbol.asyncIterator]();
  assert.deepEqual(await it.next(), { value: 0, done: false });
  ac.abort();
  const err = await r.result.catch((e) => e);
  assert.equal(err.code, "canceled");
  await eventually("the backend saw the cancel", () => backend.closed.includes(r.id), 5000);
  // The connection stays usable.
  assert.deepEqual(await c.request("echo", "after").result, "after");
  c.close();
});

test("requests made while connecting are queued, or rejected when configured", async () => {
  const c = client(d.url);
  const early = c.request("echo", "queued"); // before the welcome
  assert.equal(await early.result, "queued");
  c.close();

  const r = client(d.url, { offline: "reject" });
  const err = await r.request("echo", "x").result.catch((e) => e);
  assert.equal(err.code, "disconnected");
  await opened(r);
  assert.equal(await r.request("echo", "y").result, "y");
  r.close();

  const q = client(d.url, { queueMax: 1 });
  const first = q.request("echo", 1);
  const full = await q.request("echo", 2).result.catch((e) => e);
  assert.equal(full.code, "queue_full");
  assert.equal(await first.result, 1);
  q.close();
});

test("a dropped connection resumes the session; the live stream has every chunk once", async () => {
  const rec = recordingWS();
  const c = client(d.url, { WebSocket: rec.WebSocket, backoffMin: 50 });
  await opened(c);
  const session = c.session;
  const text = Array.from({ length: 20 }, (_, i) => "x" + i).join(" ");
  const seqs = [];
  const r = c.request("slow", text, { onChunk: (_, seq) => seqs.push(seq) });
  await eventually("5 chunks", () => seqs.length >= 5);
  rec.last().terminate(); // a network drop: no close frame
  await stateWhere(c, (s) => s.state === "resuming");
  const open = await opened(c);
  assert.equal(open.resumed, true);
  assert.equal(c.session, session);
  const { chunks, result } = await collect(r);
  assert.equal(result, text);
  assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i), "each seq once, in order");
  assert.ok(rec.sockets.length >= 2);
  assert.match(rec.last().url_, new RegExp("session=" + session));
  void chunks;
  c.close();
});

test("4009: another connection took the session over; the older one stops", async () => {
  const storage = memoryStorage();
  const a = client(d.url, { storage });
  await opened(a);
  const pending = a.request("slow", "one two three four five six");
  const b = client(d.url, { storage }); // the same storage: another tab
  const open = await opened(b);
  assert.equal(open.resumed, true);
  const closed = await stateWhere(a, (s) => s.state === "closed");
  assert.equal(closed.code, 4009);
  assert.equal(closed.reason, "replaced");
  const err = await pending.result.catch((e) => e);
  assert.equal(err.code, "replaced");
  const n = a.states.length;
  await sleep(1000);
  assert.equal(a.states.length, n, "no reconnect after 4009: " + JSON.stringify(a.states.slice(n)));
  assert.equal((await a.request("echo", 1).result.catch((e) => e)).code, "closed");
  // The stopped client does not overwrite what the newer one stores.
  const late = b.request("slow", "a b c d");
  await eventually("b stored its request", () => JSON.parse(storage.getItem("orchestratord:" + d.url)).reqs.length === 1);
  a.request("echo", 2);
  assert.equal(JSON.parse(storage.getItem("orchestratord:" + d.url)).reqs[0].id, late.id);
  assert.equal(await late.result, "a b c d");
  b.close();
});

test("1008 (closed by an operator): surfaced, no reconnect loop", async () => {
  const c = client(d.url, { backoffMin: 20 });
  await opened(c);
  await kick(d.admin, c.session);
  const closed = await stateWhere(c, (s) => s.state === "closed");
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "policy_violation");
  const n = c.states.length;
  await sleep(500);
  assert.equal(c.states.length, n, "no reconnect after 1008");
  c.reconnect(); // the application may decide to come back
  assert.equal((await opened(c)).resumed, true);
  c.close();
});

test("4001: the token expired; getToken is called again and the session resumes", async () => {
  const jcfg = writeConfig(`backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`, { anonymous: false });
  const jd = await startDaemon(jcfg, "jwt-node");
  let calls = 0;
  const c = client(jd.url, { getToken: () => { calls++; return mintToken(jcfg, "alice", calls === 1 ? "2s" : "1h"); } });
  await opened(c);
  const session = c.session;
  const closed = await stateWhere(c, (s) => s.code === 4001, 8000);
  assert.equal(closed.state, "resuming");
  const open = await opened(c);
  assert.equal(calls, 2);
  assert.equal(open.resumed, true);
  assert.equal(c.session, session);
  assert.equal(await c.request("echo", "fresh").result, "fresh");
  c.close();

  // A static token cannot be refreshed: 4001 stops with token_expired.
  const s = client(jd.url, { token: mintToken(jcfg, "bob", "2s") });
  await opened(s);
  const stopped = await stateWhere(s, (st) => st.state === "closed", 8000);
  assert.equal(stopped.reason, "token_expired");
  assert.equal(stopped.code, 4001);
});

test("Node 20 without a global WebSocket needs one passed in", () => {
  if (globalThis.WebSocket) return; // Node 22+: the global one is used
  assert.throws(() => client(d.url, { WebSocket: undefined }), /no WebSocket/);
  void WS;
});

test("1009: a frame over the server's limit stops the client with message_too_big", async () => {
  const c = client(d.url, { backoffMin: 20 });
  await opened(c);
  const big = c.request("echo", "x".repeat(70 * 1024)); // default ws.max_message_bytes: 64 KiB
  const err = await big.result.catch((e) => e);
  assert.equal(err.code, "message_too_big");
  assert.equal(err.closeCode, 1009);
  assert.equal(c.state.state, "closed");
  const n = c.states.length;
  await sleep(300);
  assert.equal(c.states.length, n, "no reconnect loop after 1009");
});

test("after the page slept: ping; a dead connection (no pong) is replaced and the session resumed", async () => {
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  globalThis.document = doc;
  try {
    let swallowPong = false;
    const pings = [];
    class Deaf extends WS {
      send(f) { if (f.includes('"type":"ping"')) pings.push(f); super.send(f); }
      set onmessage(fn) { super.onmessage = fn && ((ev) => { if (swallowPong && String(ev.data).includes('"pong"')) return; fn(ev); }); }
      get onmessage() { return super.onmessage; }
    }
    const c = client(d.url, { WebSocket: Deaf, pingTimeout: 300, backoffMin: 20 });
    await opened(c);
    const session = c.session;
    doc.dispatchEvent(new Event("visibilitychange")); // the tab is visible again
    await eventually("a ping", () => pings.length === 1);
    await sleep(500);
    assert.equal(c.state.state, "open", "the pong arrived: the connection stays");
    swallowPong = true; // now the connection is dead to us
    doc.dispatchEvent(new Event("visibilitychange"));
    const lost = await stateWhere(c, (s) => s.state === "resuming", 3000);
    assert.equal(lost.code, 4000);
    swallowPong = false;
    const open = await opened(c);
    assert.equal(open.resumed, true);
    assert.equal(c.session, session);
    assert.equal(await c.request("echo", "awake").result, "awake");
    c.close();
  } finally {
    delete globalThis.document;
  }
});
