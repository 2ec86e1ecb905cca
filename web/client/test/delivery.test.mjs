// Contract v1.1 section 4a (delivery positions, last=, replay, inflight,
// node_lost) through the client library, against the real daemon.
//
// SWITCH: web/client/test/features.json says which parts of v1.1 the daemon
// implements: "delivery_v11" (positions, last=, replay, inflight: the
// delivery branch) gates the first two tests, "node_loss" (node_lost: the
// nodeloss branch) the SIGKILL test. ORCH_DELIVERY_V11 / ORCH_NODE_LOSS = 1
// (or 0) override the file. A test that is off is reported as skipped with
// this reason; it is never silently passed.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WS from "ws";
import { memoryStorage } from "../orchestrator.js";
import {
  startDaemon, writeConfig, client, opened, collect, cleanup, eventually, sleep,
  requireRedis, lookNginx, startNginx, featureEnabled,
} from "./harness.mjs";

const skip = featureEnabled("delivery_v11") ? false
  : "contract v1.1 delivery not enabled: set delivery_v11 to true in web/client/test/features.json (or ORCH_DELIVERY_V11=1)";
const skipNodeLoss = featureEnabled("node_loss") ? false
  : "node_lost not enabled: set node_loss to true in web/client/test/features.json (or ORCH_NODE_LOSS=1)";
after(cleanup);

const words = (n, p) => Array.from({ length: n }, (_, i) => p + i).join(" ");

test("a page reload resumes by position: every answer once, nothing twice", { skip, timeout: 60000 }, async () => {
  const d = await startDaemon(writeConfig(`backends:
  echo: {kind: echo}
  words: {kind: echo, stream: words, delay: 100ms}
routes:
  echo: {backend: echo}
  stream: {backend: words, timeout: 30s}
`), "reload-node");
  const storage = memoryStorage();
  const urls = [], acks = [];
  class Rec extends WS {
    constructor(u, p) { super(u, p); urls.push(u); }
    send(f) { if (f.includes('"type":"ack"')) acks.push(JSON.parse(f)); super.send(f); }
  }
  const page1 = client(d.url, { storage, WebSocket: Rec });
  const welcome1 = new Promise((r) => page1.on("welcome", r));
  assert.equal(await page1.request("echo", "before").result, "before");
  assert.equal((await welcome1).recovered, true, "a v1.1 welcome says recovered");
  assert.equal(page1.pos, 1);
  await eventually("the ack of position 1", () => acks.some((a) => a.pos === 1), 3000);
  assert.deepEqual(acks[0], { type: "ack", pos: 1 });
  const texts = [words(8, "a"), words(8, "b"), words(8, "c")];
  const seen = [];
  const reqs = texts.map((t) => page1.request("stream", t, { onChunk: () => seen.push(1) }));
  await eventually("a first chunk", () => seen.length > 0);
  page1.close(); // the page goes away mid-answer; what it owes stays stored
  await sleep(1500); // the answers end while no page is there

  const orphans = [];
  const page2 = client(d.url, { storage, WebSocket: Rec });
  page2.on("orphan", (m) => orphans.push(m));
  assert.deepEqual(page2.restored.map((h) => h.id), reqs.map((r) => r.id));
  const open = await opened(page2);
  assert.equal(open.resumed, true);
  assert.match(urls[urls.length - 1], /[?&]last=1(&|$)/);
  for (const [i, h] of page2.restored.entries()) assert.equal((await collect(h)).result, texts[i]);
  assert.equal(page2.pos, 4);
  page2.close();

  // A third page owes nothing: no terminal comes again.
  const page3 = client(d.url, { storage });
  page3.on("orphan", (m) => orphans.push(m));
  const w3 = new Promise((r) => page3.on("welcome", r));
  assert.equal((await w3).replay, 0);
  assert.equal(page3.restored.length, 0);
  assert.equal(await page3.request("echo", "after").result, "after");
  assert.equal(page3.pos, 5);
  assert.deepEqual(orphans.filter((m) => m.type !== "chunk"), [], "no terminal delivered twice");
  page3.close();
});

test("a request the server never received is sent again after the resume (welcome inflight)", { skip, timeout: 60000 }, async () => {
  const d = await startDaemon(writeConfig(`backends:
  echo: {kind: echo, delay: 300ms}
routes:
  echo: {backend: echo}
`), "inflight-node");
  let dropped = false, lostSends = 0;
  class Lossy extends WS {
    send(f) {
      if (f.includes('"data":"lost"')) {
        lostSends++;
        if (!dropped) { dropped = true; this.terminate(); return; } // lost on the way, connection cut
      }
      super.send(f);
    }
  }
  const c = client(d.url, { WebSocket: Lossy, backoffMin: 20 });
  await opened(c);
  const welcomes = [];
  c.on("welcome", (w) => welcomes.push(w));
  const running = c.request("echo", "running"); // received: running, or answered in the replay
  await sleep(20);
  const lost = c.request("echo", "lost");
  assert.equal(await running.result, "running");
  assert.equal(await lost.result, "lost");
  assert.equal(lostSends, 2, "sent once, lost, sent again after the resume");
  assert.ok(Array.isArray(welcomes[0].inflight), "the resume's welcome lists inflight");
  assert.ok(!welcomes[0].inflight.includes(lost.id));
  c.close();
});

test("SIGKILL of the replica running a stream: the request ends with one node_lost", { skip: skipNodeLoss, timeout: 60000 }, async (t) => {
  if (!(await requireRedis(t))) return;
  const nginx = lookNginx(t);
  const cfg = writeConfig(`sessions:
  store: redis
  redis_url: redis://127.0.0.1:6379/0
  node_loss_after: 2s
backends:
  words: {kind: echo, stream: words, delay: 100ms}
routes:
  stream: {backend: words, timeout: 60s}
`);
  const reps = [await startDaemon(cfg, "replica-a"), await startDaemon(cfg, "replica-b")];
  const front = await startNginx(nginx, reps[0].client, reps[1].client);
  const c = client("ws://" + front + "/ws", { backoffMin: 50 });
  const first = await opened(c);
  const victim = reps.find((r) => r.name === first.node);
  const terminals = [];
  c.on("orphan", (m) => { if (m.type !== "chunk") terminals.push(m); });
  const seqs = [];
  const r = c.request("stream", words(200, "k"), { onChunk: (_, s) => seqs.push(s) });
  await eventually("3 chunks", () => seqs.length >= 3);
  await victim.kill("SIGKILL");
  const err = await r.result.catch((e) => e);
  assert.equal(err.code, "node_lost", String(err));
  assert.equal(typeof err.pos, "number");
  const open = await opened(c);
  assert.notEqual(open.node, victim.name);
  await sleep(1000);
  assert.deepEqual(terminals, [], "exactly one terminal");
  c.close();
});
