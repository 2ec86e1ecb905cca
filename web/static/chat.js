// orchestratord demo chat: one WebSocket to /ws on this host, session resume
// after a drop (the session id is kept in sessionStorage), streamed chunks,
// and results de-duplicated by request id. Stable element ids for tests:
// #status (data-state: connecting|open|closed|stopped), #route, #msg, #send,
// #log (one <li data-id> per request), #session.
(function () {
  "use strict";
  var KEY_SESSION = "orchestratord.session";
  var KEY_SEQ = "orchestratord.seq";
  var $ = function (id) { return document.getElementById(id); };
  var statusEl = $("status"), log = $("log"), msg = $("msg"), send = $("send"), route = $("route");
  var ws = null, backoff = 500, timer = null, stopped = false;
  var entries = new Map(); // request id -> {li, body, text, nextSeq, done}
  var token = new URLSearchParams(location.search).get("token");

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
    send.disabled = state !== "open";
  }

  function system(text) {
    var li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    append(li);
  }

  function append(li) {
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(li);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function textOf(data) {
    if (data === null || data === undefined) return "";
    if (typeof data === "string") return data;
    if (typeof data === "object" && typeof data.text === "string") return data.text;
    return JSON.stringify(data);
  }

  function entry(id, routeName) {
    var e = entries.get(id);
    if (e) return e;
    var li = document.createElement("li");
    li.className = "bot pending";
    li.dataset.id = id;
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = (routeName || "reply") + " · #" + id;
    var body = document.createElement("span");
    body.className = "body";
    li.appendChild(meta);
    li.appendChild(body);
    append(li);
    e = { li: li, body: body, text: "", nextSeq: 0, done: false };
    entries.set(id, e);
    return e;
  }

  function nextID() {
    var n = parseInt(sessionStorage.getItem(KEY_SEQ) || "0", 10) + 1;
    sessionStorage.setItem(KEY_SEQ, String(n));
    return String(n);
  }

  function onMessage(ev) {
    var m;
    try { m = JSON.parse(ev.data); } catch (err) { system("unparseable message from server"); return; }
    switch (m.type) {
      case "welcome":
        sessionStorage.setItem(KEY_SESSION, m.session);
        $("session").textContent = m.session;
        backoff = 500;
        setStatus("open", "connected to " + m.node + (m.resumed ? " (resumed)" : ""));
        system((m.resumed ? "resumed session on " : "new session on ") + m.node);
        break;
      case "chunk": {
        var c = entry(m.id);
        if (c.done || (typeof m.seq === "number" && m.seq < c.nextSeq)) return; // replayed or late
        if (typeof m.seq === "number") c.nextSeq = m.seq + 1;
        c.text += textOf(m.data);
        c.body.textContent = c.text;
        break;
      }
      case "result": {
        var r = entry(m.id);
        if (r.done) return; // duplicate delivery (outbox after resume)
        r.done = true;
        var t = textOf(m.data);
        if (t !== "" || r.text === "") r.body.textContent = t || "(empty result)";
        r.li.classList.remove("pending");
        break;
      }
      case "error": {
        if (m.id === "") { system("error: " + m.code + ": " + (m.message || "")); return; }
        var e = entry(m.id);
        if (e.done) return;
        e.done = true;
        e.li.className = "error";
        e.body.textContent = m.code + (m.message ? ": " + m.message : "");
        break;
      }
      case "reconnect":
        system("server asks to reconnect (" + (m.reason || "") + ")");
        backoff = Math.max(250, m.after_ms || 1000);
        break;
      case "pong":
        break;
      default:
        system("unknown message type " + m.type);
    }
  }

  function connect() {
    clearTimeout(timer);
    if (stopped) return;
    var q = [];
    var sid = sessionStorage.getItem(KEY_SESSION);
    if (sid) q.push("session=" + encodeURIComponent(sid));
    if (token) q.push("token=" + encodeURIComponent(token));
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + (q.length ? "?" + q.join("&") : "");
    setStatus("connecting", sid ? "resuming…" : "connecting…");
    var sock = new WebSocket(url);
    ws = sock;
    sock.onmessage = onMessage;
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      if (statusEl.dataset.state === "open") system("connection closed (" + ev.code + ")");
      if (ev.code === 4009) { stop("session opened elsewhere"); return; }
      if (ev.code === 4001) { stop("token expired"); return; }
      var delay = Math.min(backoff, 10000) * (0.8 + Math.random() * 0.4);
      backoff = Math.min(backoff * 2, 10000);
      setStatus("closed", "disconnected (" + ev.code + "), retrying in " + (delay / 1000).toFixed(1) + "s");
      timer = setTimeout(connect, delay);
    };
  }

  function stop(why) {
    stopped = true;
    setStatus("stopped", why + " · click to reconnect");
  }

  statusEl.addEventListener("click", function () {
    if (statusEl.dataset.state === "stopped") { stopped = false; connect(); }
  });

  $("composer").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = msg.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    var id = nextID();
    ws.send(JSON.stringify({ type: route.value, id: id, data: { text: text } }));
    var li = document.createElement("li");
    li.className = "user";
    li.textContent = text;
    append(li);
    entry(id, route.value);
    msg.value = "";
    msg.focus();
  });

  $("new-session").addEventListener("click", function () {
    sessionStorage.removeItem(KEY_SESSION);
    entries.clear();
    log.textContent = "";
    stopped = false;
    if (ws) { var old = ws; ws = null; old.close(1000, "new session"); }
    connect();
  });

  connect();
})();
