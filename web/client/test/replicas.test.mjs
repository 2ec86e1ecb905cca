// Two replicas on the shared Redis store behind nginx: a drain (1012) of the
// replica holding the client's connection while a stream runs on it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  startDaemon, writeConfig, client, opened, stateWhere, collect, cleanup, eventually,
  requireRedis, lookNginx, startNginx,
} from "./harness.mjs";

let reps = [], front = "";
after(cleanup);

async function setup(t) {
  if (!(await requireRedis(t))) return false;
  const nginx = lookNginx(t);
  if (!nginx) return false;
  const cfg = writeConfig(`sessions:
  store: redis
  redis_url: redis://127.0.0.1:6379/0
backends:
  echo: {kind: echo}
  words: {kind: echo, stream: words, delay: 100ms}
routes:
  echo: {backend: echo}
  stream: {backend: words, timeout: 30s}
`);
  reps = [await startDaemon(cfg, "replica-a"), await startDaemon(cfg, "replica-b")];
  front = await startNginx(nginx, reps[0].client, reps[1].client);
  return true;
}

test("drain (1012) mid-stream: the stream completes, every chunk once; the client resumes on the other replica", async (t) => {
  if (!(await setup(t))) return;
  const c = client("ws://" + front + "/ws", { backoffMin: 50 });
  const first = await opened(c);
  const session = c.session;
  const draining = reps.find((r) => r.name === first.node);
  const other = reps.find((r) => r !== draining);
  const text = Array.from({ length: 25 }, (_, i) => "d" + i).join(" ");
  const seqs = [];
  const streaming = c.request("stream", text, { onChunk: (_, seq) => seqs.push(seq) });
  await eventually("3 chunks", () => seqs.length >= 3);
  draining.kill("SIGTERM");
  // A request made during the drain is refused (draining) by the draining
  // node before it runs: the client sends it again after the reconnect.
  await eventually("the node drains", async () => {
    const r = await fetch("http://" + draining.admin + "/readyz").catch(() => null);
    return r !== null && r.status === 503;
  });
  const during = c.request("echo", "sent during the drain");
  const reconnected = await stateWhere(c, (s) => s.state === "resuming" && s.code === 1012, 15000);
  assert.equal(reconnected.reason, "draining");
  assert.ok(reconnected.delay >= 200, "waits reconnect.after_ms (drain.reconnect_after: 200ms) at least: " + reconnected.delay);
  const open = await opened(c, 15000);
  assert.equal(open.node, other.name);
  assert.equal(open.resumed, true);
  assert.equal(c.session, session);
  const { chunks, result } = await collect(streaming);
  assert.equal(result, text);
  assert.equal(chunks.map((ch) => ch.text).join(""), text);
  assert.deepEqual(seqs, Array.from({ length: 25 }, (_, i) => i), "every chunk once, in order");
  assert.equal(await during.result, "sent during the drain");
  assert.deepEqual((await draining.exited).code, 0);
  c.close();
});
