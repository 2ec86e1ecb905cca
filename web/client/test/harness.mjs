// Test harness: the REAL orchestratord binary (built with `go build` unless
// ORCH_BIN names one), started as a subprocess on free loopback ports, nginx
// in front of replicas, and small helpers. Under CI=true a missing server
// (Redis, nginx, Go) is a failure, not a skip.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import WS from "ws";
import { connect } from "../orchestrator.js";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const secret = "client-test-secret-0123456789abcdef";
const CI = process.env.CI === "true";

/** @type {string[]} */
const cleanups = [];
let dirs = [];

export function tempDir() {
  const d = mkdtempSync(join(tmpdir(), "orch-client-"));
  dirs.push(d);
  return d;
}

let builtBin = "";
/** The daemon binary: $ORCH_BIN, or built once per test process. */
export function daemonBin() {
  if (process.env.ORCH_BIN) return process.env.ORCH_BIN;
  if (builtBin) return builtBin;
  const out = join(tempDir(), "orchestratord");
  execFileSync("go", ["build", "-o", out, "./daemon/cmd/orchestratord"], { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, CGO_ENABLED: "0" } });
  builtBin = out;
  return out;
}

/** A loopback address whose port was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve("127.0.0.1:" + port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond every 20 ms until true, or throws after timeout ms. */
export async function eventually(what, cond, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await sleep(20);
  }
}

/** Writes a config file: `extra` YAML appended to loopback listeners. */
export function writeConfig(extra, { anonymous = true } = {}) {
  const dir = tempDir();
  const file = join(dir, "config.yaml");
  writeFileSync(file, `node: client-test
listen:
  client: "127.0.0.1:1"
  admin: "127.0.0.1:1"
auth:
  anonymous: ${anonymous}
  jwt:
    secret_env: ORCH_JWT_SECRET
    leeway: 0s
drain:
  lb_grace: 100ms
  timeout: 10s
  reconnect_after: 200ms
log:
  level: warn
${extra}`);
  return file;
}

/**
 * Starts `orchestratord serve --config cfg` as node `name` and waits for its
 * admin /readyz. Killed at the end of the test process.
 */
export async function startDaemon(cfg, name = "client-test") {
  const client = await freePort(), admin = await freePort();
  const env = { ...process.env, ORCH_LISTEN_CLIENT: client, ORCH_LISTEN_ADMIN: admin, ORCH_NODE: name, ORCH_JWT_SECRET: secret };
  for (const k of Object.keys(env)) if (k.startsWith("LISTEN_") || k === "NOTIFY_SOCKET") delete env[k];
  const p = spawn(daemonBin(), ["serve", "--config", cfg], { env, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  p.stdout.on("data", (b) => { logs += b; });
  p.stderr.on("data", (b) => { logs += b; });
  const exited = new Promise((r) => p.on("exit", (code, sig) => r({ code, sig })));
  const d = {
    name, client, admin, proc: p, exited,
    logs: () => logs,
    url: "ws://" + client + "/ws",
    kill: (sig = "SIGKILL") => { try { p.kill(sig); } catch { /* gone */ } return exited; },
  };
  cleanups.push(() => d.kill("SIGKILL"));
  await eventually(name + " ready", async () => (await status("http://" + admin + "/readyz")) === 200, 20000)
    .catch((e) => { throw new Error(e.message + "\n" + logs); });
  return d;
}

/** HTTP status of GET url, 0 on a connection error. */
export async function status(url) {
  try {
    const r = await fetch(url);
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

/** Mints a JWT for sub with the daemon's `token` subcommand. */
export function mintToken(cfg, sub, ttl) {
  return execFileSync(daemonBin(), ["token", "--config", cfg, "--sub", sub, "--ttl", ttl],
    { env: { ...process.env, ORCH_JWT_SECRET: secret } }).toString().trim();
}

/** Closes a session through the admin API (the operator's "close": 1008). */
export async function kick(admin, session) {
  const r = await fetch("http://" + admin + "/api/token");
  const { csrf_token } = await r.json();
  const cookie = (r.headers.get("set-cookie") || "").split(";")[0];
  const k = await fetch("http://" + admin + "/api/sessions/" + session + "/close",
    { method: "POST", headers: { "X-CSRF-Token": csrf_token, Cookie: cookie } });
  if (k.status / 100 !== 2) throw new Error("kick: status " + k.status);
}

/** Skips (or with CI=true fails) when Redis is not at 127.0.0.1:6379. */
export async function requireRedis(t) {
  const ok = await new Promise((r) => {
    const s = net.connect(6379, "127.0.0.1");
    s.on("connect", () => { s.destroy(); r(true); });
    s.on("error", () => r(false));
  });
  if (ok) return true;
  if (CI) throw new Error("redis at 127.0.0.1:6379 is required (CI=true)");
  t.skip("redis not reachable");
  return false;
}

/** nginx's path; skips (or with CI=true fails) when it is missing. */
export function lookNginx(t) {
  for (const p of ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]) if (existsSync(p)) return p;
  if (CI) throw new Error("nginx is required with CI=true (.ci/run installs it)");
  t.skip("nginx not installed");
  return "";
}

/** Starts nginx (testdata/nginx/replicas.conf) in front of a and b. */
export async function startNginx(nginx, a, b) {
  const dir = tempDir();
  const front = await freePort();
  const conf = readFileSync(join(root, "testdata", "nginx", "replicas.conf"), "utf8")
    .replaceAll("{{A}}", a).replaceAll("{{B}}", b).replaceAll("{{LISTEN}}", front).replaceAll("{{DIR}}", dir);
  writeFileSync(join(dir, "nginx.conf"), conf);
  const p = spawn(nginx, ["-p", dir, "-c", join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  let logs = "";
  p.stderr.on("data", (b) => { logs += b; });
  cleanups.push(() => { try { p.kill("SIGKILL"); } catch { /* gone */ } });
  await eventually("nginx listening", async () => (await status("http://" + front + "/healthz")) !== 0, 5000)
    .catch((e) => { throw new Error(e.message + "\n" + logs); });
  return front;
}

/**
 * A WebSocket class for the client that records its sockets, so a test can
 * cut one (terminate: no close frame, like a network drop).
 */
export function recordingWS() {
  /** @type {WS[]} */
  const sockets = [];
  class Recording extends WS {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
      this.url_ = url;
    }
  }
  return { WebSocket: Recording, sockets, last: () => sockets[sockets.length - 1] };
}

/** connect() with the ws package, a state log, and cleanup. */
export function client(url, opts = {}) {
  const c = connect(url, { WebSocket: WS, ...opts });
  const states = [];
  c.on("state", (s) => states.push(s));
  cleanups.push(() => c.close());
  return Object.assign(c, { states });
}

/** Resolves with the client's next "open" state. */
export function opened(c, timeout = 10000) {
  if (c.state.state === "open") return Promise.resolve(c.state);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { off(); reject(new Error("not open after " + timeout + "ms (state " + JSON.stringify(c.state) + ")")); }, timeout);
    const off = c.on("state", (s) => { if (s.state === "open") { clearTimeout(t); off(); resolve(s); } });
  });
}

/** Resolves with the first state event matching pred. */
export function stateWhere(c, pred, timeout = 10000) {
  if (pred(c.state)) return Promise.resolve(c.state);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { off(); reject(new Error("state not reached after " + timeout + "ms (state " + JSON.stringify(c.state) + ")")); }, timeout);
    const off = c.on("state", (s) => { if (pred(s)) { clearTimeout(t); off(); resolve(s); } });
  });
}

/** Collects a request's chunks and its outcome. */
export async function collect(r) {
  const chunks = [];
  for await (const ch of r.chunks) chunks.push(ch);
  try {
    return { chunks, result: await r.result };
  } catch (error) {
    return { chunks, error };
  }
}

export async function cleanup() {
  for (const f of cleanups.splice(0).reverse()) {
    try { await f(); } catch { /* best effort */ }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/**
 * Whether the daemon under test implements a part of contract v1.1:
 * feature "delivery_v11" (section 4a: pos, last=, replay, inflight) or
 * "node_loss" (node_lost after a replica crash). test/features.json says
 * which; ORCH_DELIVERY_V11 / ORCH_NODE_LOSS = 1 or 0 override it.
 */
export function featureEnabled(name) {
  const env = process.env["ORCH_" + name.toUpperCase()];
  if (env === "1") return true;
  if (env === "0") return false;
  const f = JSON.parse(readFileSync(join(root, "web", "client", "test", "features.json"), "utf8"));
  return f[name] === true;
}
