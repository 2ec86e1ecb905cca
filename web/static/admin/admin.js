// orchestratord admin page: applies the fragments pushed on /events
// (server-sent events, one "update" per second, or a "ping" when nothing
// changed) and sends the actions as POSTs carrying the CSRF token from
// <meta name="csrf-token">. Drain and session close ask for confirmation in
// a <dialog>; breaker reset does not. When the stream fails or goes silent
// (the daemon stopped), the page says so: a "disconnected" banner, the
// stale values greyed and the actions disabled, until it is back.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var token = document.querySelector('meta[name="csrf-token"]').content;
  var params = new URLSearchParams(location.search);
  var state = { q: params.get("q") || "", offset: parseInt(params.get("offset") || "0", 10) || 0 };
  var last = { node: null, drain: null, backends: null, sessions: null, detached: null };
  var targets = { node: $("node-stats"), drain: $("drain-progress"), backends: $("backends"), sessions: $("sessions"), detached: $("detached") };
  var es = null, flashTimer = null;
  // The server sends an update or a ping every second; twice SILENT_MS
  // without either means the daemon is gone even if no error was seen.
  var SILENT_MS = 5000, silence = null, lastSeen = new Date(), offline = false;

  function open() {
    if (es) es.close();
    var qs = new URLSearchParams();
    if (state.q) qs.set("q", state.q);
    if (state.offset) qs.set("offset", String(state.offset));
    es = new EventSource("/events" + (qs.toString() ? "?" + qs : ""));
    es.addEventListener("update", function (ev) {
      var u = JSON.parse(ev.data);
      setLive(true); // first: leaving the offline state restores the buttons, then the update sets them
      Object.keys(targets).forEach(function (k) {
        if (u[k] !== last[k]) { targets[k].innerHTML = u[k]; last[k] = u[k]; }
      });
      var badge = $("state");
      badge.textContent = u.state;
      badge.className = "badge " + u.state;
      $("drain").disabled = u.state === "draining";
    });
    es.addEventListener("ping", function () { setLive(true); });
    var mine = es;
    es.onopen = function () { setLive(true); };
    es.onerror = function () {
      setLive(false);
      // EventSource retries by itself after a dropped stream, but gives up
      // on an HTTP error (e.g. 503: too many live views): retry here.
      if (mine.readyState === EventSource.CLOSED) {
        setTimeout(function () { if (es === mine) open(); }, 3000);
      }
    };
  }

  function setLive(on) {
    var l = $("live");
    l.textContent = on ? "live" : "disconnected";
    l.classList.toggle("on", on);
    clearTimeout(silence);
    if (on) {
      lastSeen = new Date();
      // Silent for SILENT_MS: reconnect quietly (a busy browser or daemon
      // may just be late); still nothing SILENT_MS later: disconnected.
      silence = setTimeout(function () {
        if (es) open();
        silence = setTimeout(function () { setLive(false); }, SILENT_MS);
      }, SILENT_MS);
    }
    setOffline(!on);
  }

  // setOffline shows or clears the disconnected state.
  function setOffline(on) {
    if (on === offline) return;
    offline = on;
    if (on) $("offline-since").textContent = lastSeen.toLocaleTimeString();
    $("offline").hidden = !on;
    document.body.classList.toggle("stale", on);
    document.querySelectorAll("button[data-action], #drain").forEach(function (b) {
      if (on) { b.dataset.wasDisabled = b.disabled ? "1" : ""; b.disabled = true; }
      else if (b.dataset.wasDisabled !== undefined) { b.disabled = b.dataset.wasDisabled === "1"; delete b.dataset.wasDisabled; }
    });
  }

  function navigate() {
    var qs = new URLSearchParams();
    if (state.q) qs.set("q", state.q);
    if (state.offset) qs.set("offset", String(state.offset));
    history.replaceState(null, "", "/" + (qs.toString() ? "?" + qs : ""));
    open();
  }

  function flash(text, bad) {
    var f = $("flash");
    f.textContent = text;
    f.className = bad ? "bad" : "ok";
    f.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () { f.hidden = true; }, 4000);
  }

  // pending resolves the open confirmation. The dialog's close event is
  // dispatched asynchronously, so a late close of a previous dialog can
  // arrive after the next one opened: it is ignored while the dialog is open.
  var pending = null;
  $("confirm").addEventListener("close", function () {
    var d = $("confirm");
    if (d.open || !pending) return;
    var p = pending;
    pending = null;
    p(d.returnValue === "ok");
  });

  function confirmBox(text, okLabel) {
    return new Promise(function (resolve) {
      if (pending) pending(false);
      pending = resolve;
      var d = $("confirm");
      $("confirm-text").textContent = text;
      $("confirm-ok").textContent = okLabel;
      d.returnValue = "";
      d.showModal();
      $("confirm-cancel").focus();
    });
  }

  // human is the sentence for a failed action: the server's message, else
  // one for its code or status; never a bare code.
  function human(status, body) {
    if (body && body.message) return body.message;
    switch (body && body.error) {
      case "not_found": return "It no longer exists: it may have closed or been removed already.";
      case "csrf": return "This page's security token has expired: reload the page and try again.";
      case "unauthorized": return "The daemon asks for credentials again: reload the page and sign in.";
    }
    return "The daemon answered with an error (HTTP " + status + "); see its log.";
  }

  function post(url, done) {
    return fetch(url, { method: "POST", headers: { "X-CSRF-Token": token }, credentials: "same-origin" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) { flash(human(r.status, body), true); return; }
          flash(done);
          open(); // fresh update now rather than at the next tick
        });
      }, function () {
        flash("The daemon did not answer: it may have stopped. Nothing was done.", true);
        setLive(false);
      });
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action], #drain, a[data-offset]");
    if (!b) return;
    if (b.matches("a[data-offset]")) {
      ev.preventDefault();
      state.offset = parseInt(b.dataset.offset, 10) || 0;
      navigate();
      return;
    }
    if (b.id === "drain") {
      confirmBox("Drain this node? It stops taking new connections and requests, finishes what is in flight, then asks every client to reconnect elsewhere. This cannot be undone without a restart.", "Drain node")
        .then(function (ok) { if (ok) post("/api/drain", "Drain started"); });
      return;
    }
    var id;
    switch (b.dataset.action) {
      case "kick":
        id = b.dataset.id;
        confirmBox("Close session " + id + "? Its client is disconnected (it may reconnect and resume).", "Close session")
          .then(function (ok) { if (ok) post("/api/sessions/" + encodeURIComponent(id) + "/close", "Session " + id + " closed"); });
        break;
      case "reset":
        id = b.dataset.name;
        post("/api/backends/" + encodeURIComponent(id) + "/reset", "Breakers of " + id + " reset");
        break;
    }
  });

  var debounce = null;
  $("search").addEventListener("submit", function (ev) { ev.preventDefault(); });
  $("q").addEventListener("input", function () {
    clearTimeout(debounce);
    debounce = setTimeout(function () {
      state.q = $("q").value.trim();
      state.offset = 0;
      navigate();
    }, 250);
  });

  open();
})();
