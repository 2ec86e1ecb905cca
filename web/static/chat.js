// orchestratord demo chat, built on the client library the daemon serves at
// /client/orchestrator.js. The library keeps the session id, the last
// position and the requests in flight in localStorage, so a reload resumes
// the session and the answers still streaming complete after it; the page
// keeps its transcript in localStorage too. Stable element ids for tests:
// #status (data-state: connecting|open|resuming|closed), #route (options
// from /routes.json), #msg, #send, #stop, #log (one <li data-id> per
// request, class bot|error, plus pending|canceled), #session.
import { connect } from "./client/orchestrator.js";

const KEY_LOG = "orchestratord.demo.log";
const MAX_LOG = 200;
const $ = (id) => document.getElementById(id);
const statusEl = $("status"), log = $("log"), msg = $("msg"), send = $("send"), stop = $("stop"), route = $("route");

/** transcript: [{kind: "user"|"bot"|"system", id?, route?, text, state?}] */
let transcript = [];
try { transcript = JSON.parse(localStorage.getItem(KEY_LOG) || "[]"); } catch { transcript = []; }
const views = new Map(); // request id -> {entry, li, body}

function save() {
  if (transcript.length > MAX_LOG) transcript = transcript.slice(-MAX_LOG);
  try { localStorage.setItem(KEY_LOG, JSON.stringify(transcript)); } catch { /* full: the page still works */ }
}

function append(li) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.appendChild(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function render(e) {
  const li = document.createElement("li");
  if (e.kind !== "bot") {
    li.className = e.kind;
    li.textContent = e.text;
    append(li);
    return;
  }
  li.dataset.id = e.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = e.route + " · " + e.id;
  const body = document.createElement("span");
  body.className = "body";
  li.append(meta, body);
  append(li);
  const v = { entry: e, li, body };
  views.set(e.id, v);
  paint(v);
  return v;
}

function paint(v) {
  const e = v.entry;
  v.li.className = (e.state === "error" ? "error" : "bot") + (e.state === "pending" ? " pending" : "") + (e.state === "canceled" ? " bot canceled" : "");
  v.body.textContent = e.text;
  stop.disabled = ![...views.values()].some((x) => x.entry.state === "pending");
}

function system(text) {
  const e = { kind: "system", text };
  transcript.push(e);
  save();
  render(e);
}

function textOf(data) {
  if (data === null || data === undefined) return "";
  if (typeof data === "string") return data;
  if (typeof data === "object" && typeof data.text === "string") return data.text;
  return JSON.stringify(data);
}

// follow shows a request's chunks as they arrive, then its outcome.
async function follow(h) {
  let v = views.get(h.id);
  if (!v) {
    const e = { kind: "bot", id: h.id, route: h.type, text: "", state: "pending" };
    transcript.push(e);
    v = render(e);
  }
  const e = v.entry;
  e.text = ""; // a resume replays the chunks from seq 0
  e.state = "pending";
  paint(v);
  for await (const chunk of h.chunks) {
    e.text += textOf(chunk);
    paint(v);
  }
  try {
    const t = textOf(await h.result);
    if (t !== "" || e.text === "") e.text = t || "(empty result)";
    e.state = "done";
  } catch (err) {
    if (err.code === "canceled") e.state = "canceled";
    else { e.state = "error"; e.text = err.code + (err.message && err.message !== err.code ? ": " + err.message : ""); }
  }
  save();
  paint(v);
}

function setStatus(s) {
  statusEl.dataset.state = s.state;
  send.disabled = s.state === "closed";
  switch (s.state) {
    case "open":
      statusEl.textContent = "connected to " + s.node + (s.resumed ? " (resumed)" : "");
      $("session").textContent = s.session;
      break;
    case "connecting":
      statusEl.textContent = "connecting…";
      break;
    case "resuming":
      statusEl.textContent = "reconnecting" + (s.reason ? " (" + s.reason + ")" : "") + "…";
      break;
    case "closed":
      statusEl.textContent = (s.reason === "replaced" ? "opened in another tab" : "closed: " + s.reason) + " · click to reconnect";
      break;
  }
}

for (const e of transcript) render(e);

const token = new URLSearchParams(location.search).get("token");
const c = connect((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws", {
  storage: localStorage,
  storageKey: "orchestratord.demo.client",
  ...(token ? { token } : {}),
});
c.on("state", (s) => {
  const was = statusEl.dataset.state;
  setStatus(s);
  if (s.state === "open") system((s.resumed ? "resumed session on " : "new session on ") + s.node);
  else if (s.state !== was && was === "open" && s.code) system("connection closed (" + s.code + ")");
});
c.on("missed", (m) => system(m.missed + " answer(s) were lost while away"));
c.on("error", (err) => system("error: " + err.code + ": " + err.message));
setStatus(c.state);
for (const h of c.restored) follow(h);
// Entries left pending by a page the library no longer owes anything to.
for (const v of views.values()) {
  if (v.entry.state === "pending" && !c.restored.some((h) => h.id === v.entry.id)) {
    v.entry.state = "error";
    v.entry.text = "(interrupted)";
    paint(v);
  }
}
save();

fetch("routes.json").then((r) => r.json()).then(({ routes }) => {
  for (const name of routes) route.add(new Option(name, name));
  const stored = localStorage.getItem("orchestratord.demo.route");
  route.value = routes.includes(stored) ? stored : routes.includes("stream") ? "stream" : routes[0] || "";
}).catch(() => system("could not load the route list"));
route.addEventListener("change", () => localStorage.setItem("orchestratord.demo.route", route.value));

statusEl.addEventListener("click", () => { if (c.state.state === "closed") c.reconnect(); });

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = msg.value.trim();
  if (!text || !route.value) return;
  const user = { kind: "user", text };
  transcript.push(user);
  render(user);
  follow(c.request(route.value, { text }));
  save();
  msg.value = "";
  msg.focus();
});

stop.addEventListener("click", () => {
  for (const v of views.values()) if (v.entry.state === "pending") c.cancel(v.entry.id);
});

$("new-session").addEventListener("click", () => {
  transcript = [];
  views.clear();
  log.textContent = "";
  save();
  c.reset();
});
