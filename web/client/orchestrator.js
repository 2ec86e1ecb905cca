// @ts-check
// orchestratord client: one WebSocket to an orchestratord /ws endpoint that
// gets the wire contract (v1.1) right: resume with session and position,
// chunk and terminal de-duplication, cancel, close codes, backoff, acks and
// an application ping after the tab slept. ES module, no dependency. The
// contract is docs/protocol.md; this file is the library, served as is by
// the daemon at /client/orchestrator.js and type-checked by tsc (JSDoc).

const CONTRACT_STOP = {
  1002: "protocol_error",
  1003: "unsupported_data",
  1007: "invalid_data",
  1008: "policy_violation",
  1009: "message_too_big",
};

/**
 * A localStorage-like synchronous key/value store. `localStorage`,
 * `sessionStorage` and {@link memoryStorage} fit.
 * @typedef {object} StorageLike
 * @property {(key: string) => string | null} getItem
 * @property {(key: string, value: string) => void} setItem
 * @property {(key: string) => void} removeItem
 */

/**
 * What the library needs of a WebSocket (the browser's, Node 22's global, or
 * the `ws` package's).
 * @typedef {object} SocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: {data: any}) => void) | null} onmessage
 * @property {((ev: {code: number, reason: string}) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 * @property {((ev: any) => void) | null} onopen
 */

/** @typedef {new (url: string, protocols?: string | string[]) => SocketLike} SocketConstructor */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [token] a JWT, sent as the `token` query parameter.
 * @property {() => string | Promise<string>} [getToken] called for a token
 *   before the first connection, after a 4001 close (token expired) and
 *   after an attempt that failed before the welcome (maybe a 401).
 * @property {StorageLike} [storage] where the session id, the last position
 *   and the requests in flight are kept (default: memory; pass
 *   `localStorage` so that a page reload resumes).
 * @property {string} [storageKey] default `"orchestratord:" + url`.
 * @property {SocketConstructor} [WebSocket] default: the global WebSocket.
 * @property {"queue" | "reject"} [offline] requests made while disconnected:
 *   queued until the next welcome (default) or rejected (`disconnected`).
 * @property {number} [queueMax] bound of that queue (default 64); past it
 *   `queue_full`.
 * @property {"resend" | "reject"} [unreceived] requests the server never
 *   received (not running, not answered, per the resume's welcome): sent
 *   again (default) or rejected (`not_received`).
 * @property {boolean} [retryDraining] a request refused with `draining`
 *   before any chunk is sent again after the reconnect (default true).
 * @property {number} [backoffMin] ms, first retry cap (default 250).
 * @property {number} [backoffMax] ms, largest retry cap (default 15000).
 * @property {number} [pingTimeout] ms to wait for the pong of an
 *   application ping before reconnecting (default 5000).
 * @property {number} [ackDelay] ms between a terminal and its `ack`
 *   (default 500).
 */

/**
 * @typedef {object} RequestOptions
 * @property {AbortSignal} [signal] aborting sends `cancel`; the result
 *   rejects at once with code `canceled`.
 * @property {(data: any, seq: number) => void} [onChunk] called per chunk,
 *   besides the `chunks` iterable.
 */

/**
 * @typedef {object} RequestHandle
 * @property {string} id the request id on the wire.
 * @property {string} type the route.
 * @property {any} data what was sent.
 * @property {AsyncIterable<any>} chunks the chunks' data in `seq` order,
 *   each once; ends at the terminal (an error ends it quietly: see result).
 * @property {Promise<any>} result the result's data, or a rejection with an
 *   {@link OrchestratorError}.
 * @property {boolean} restored true for a request restored from storage.
 */

/**
 * @typedef {object} StateEvent
 * @property {"connecting" | "open" | "resuming" | "closed"} state
 * @property {string} [reason] why (closed: `client`, `replaced`,
 *   `token_expired`, `policy_violation`, ...; resuming: `draining`, ...).
 * @property {number} [code] the close code that led here.
 * @property {number} [delay] ms until the next attempt (resuming, connecting).
 * @property {string} [node] the node (open).
 * @property {string} [session] the session id (open).
 * @property {boolean} [resumed] whether the session was resumed (open).
 */

/** A protocol error: `code` is the contract's (or the library's) code. */
export class OrchestratorError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {{id?: string, closeCode?: number, pos?: number}} [extra]
   */
  constructor(code, message, extra) {
    super(message || code);
    this.name = "OrchestratorError";
    /** @type {string} */ this.code = code;
    /** @type {string | undefined} */ this.id = extra && extra.id;
    /** @type {number | undefined} */ this.closeCode = extra && extra.closeCode;
    /** @type {number | undefined} */ this.pos = extra && extra.pos;
  }
}

/** @returns {StorageLike} an in-memory storage (the default). */
export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

/**
 * @template T
 * @returns {{push(v: T): void, end(): void, iter: AsyncIterable<T>}}
 */
function channel() {
  /** @type {T[]} */ const buf = [];
  /** @type {((r: IteratorResult<T>) => void) | null} */ let wake = null;
  let ended = false;
  return {
    push(v) {
      if (ended) return;
      if (wake) { const w = wake; wake = null; w({ value: v, done: false }); } else buf.push(v);
    },
    end() {
      ended = true;
      if (wake) { const w = wake; wake = null; w({ value: undefined, done: true }); }
    },
    iter: {
      [Symbol.asyncIterator]() {
        return {
          next() {
            if (buf.length) return Promise.resolve({ value: /** @type {T} */ (buf.shift()), done: false });
            if (ended) return Promise.resolve({ value: undefined, done: true });
            return new Promise((r) => { wake = r; });
          },
          return() { ended = true; buf.length = 0; return Promise.resolve({ value: undefined, done: true }); },
        };
      },
    },
  };
}

/**
 * One request of this client.
 * @typedef {object} Req
 * @property {string} id
 * @property {string} type
 * @property {any} data
 * @property {boolean} sent it went out on some connection
 * @property {number} nextSeq
 * @property {boolean} done
 * @property {boolean} restored
 * @property {(v: any) => void} resolve
 * @property {(e: OrchestratorError) => void} reject
 * @property {{push(v: any): void, end(): void}} ch
 * @property {((data: any, seq: number) => void) | undefined} onChunk
 * @property {RequestHandle} handle
 */

/** A connection to orchestratord that survives drops: see {@link connect}. */
export class Client {
  /**
   * @param {string} url the /ws URL (ws:// or wss://).
   * @param {ConnectOptions} [opts]
   */
  constructor(url, opts = {}) {
    const WS = opts.WebSocket || /** @type {any} */ (globalThis).WebSocket;
    if (!WS) throw new TypeError("orchestratord: no WebSocket: pass one in options.WebSocket (the ws package on Node 20)");
    /** @private */ this._WS = /** @type {SocketConstructor} */ (WS);
    /** @private */ this._url = url;
    /** @private */ this._o = {
      offline: "queue", queueMax: 64, unreceived: "resend", retryDraining: true,
      backoffMin: 250, backoffMax: 15000, pingTimeout: 5000, ackDelay: 500, ...opts,
    };
    /** @private */ this._store = opts.storage || memoryStorage();
    /** @private */ this._key = opts.storageKey || "orchestratord:" + url;
    /** @private @type {string | undefined} */ this._token = opts.token;
    /** @private */ this._refresh = !opts.token;
    /** @private @type {SocketLike | null} */ this._ws = null;
    /** @private @type {Map<string, Req>} */ this._reqs = new Map();
    /** @private @type {Req[]} */ this._queue = [];
    /** @private @type {string[]} */ this._out = []; // control frames waiting for a connection
    /** @private @type {Set<string>} */ this._internal = new Set(); // ids of our cancels and pings
    /** @private @type {Map<string, Function[]>} */ this._on = new Map();
    /** @private */ this._n = 0;
    /** @private */ this._prefix = Math.random().toString(36).slice(2, 8) + Date.now().toString(36).slice(-4) + "-";
    /** @private */ this._attempt = 0;
    /** @private @type {number | undefined} */ this._afterMs = undefined;
    /** @private */ this._open = false;
    /** @private */ this._stopped = false;
    /** @private @type {any} */ this._timer = null;
    /** @private @type {any} */ this._ackTimer = null;
    /** @private @type {any} */ this._pingTimer = null;
    /** @private @type {any} */ this._tick = null;
    /** @private */ this._lastTick = 0;
    /** @private */ this._replayLeft = 0;
    /** @private @type {string[] | null} */ this._inflight = null;
    /** @private */ this._acked = 0;
    /** @type {StateEvent} */ this.state = { state: "connecting" };

    const saved = this._load();
    /** @type {string} the session id ("" before the first welcome). */
    this.session = saved.session || "";
    /** @type {number} the last terminal position received (0: none). */
    this.pos = saved.pos || 0;
    /** @private */ this._positions = !!saved.v11;
    /**
     * Requests that were in flight when the page (or process) that used the
     * same storage went away: they continue here, each once.
     * @type {RequestHandle[]}
     */
    this.restored = [];
    for (const r of saved.reqs || []) {
      const q = this._newReq(r.id, r.type, r.data, {}, true);
      q.sent = !!r.sent;
      this._reqs.set(q.id, q);
      if (!q.sent) this._queue.push(q);
      this.restored.push(q.handle);
    }
    /** @private */ this._onVisible = () => {
      if (/** @type {any} */ (globalThis).document?.visibilityState === "visible") this._ping();
    };
    /** @type {any} */ (globalThis).document?.addEventListener?.("visibilitychange", this._onVisible);
    this._connect();
  }

  /**
   * Subscribe to an event: `state` ({@link StateEvent}), `welcome` (the
   * welcome message), `missed` (`{missed}`: the server's replay log had lost
   * terminals after our position), `restart` (`{id}`: a request restarted
   * on another replica; its chunks start again at seq 0), `orphan` (a chunk
   * or terminal for no request of this client), `error` (an
   * {@link OrchestratorError} not tied to a request), `message` (any other
   * server message).
   * @param {"state" | "welcome" | "missed" | "restart" | "orphan" | "error" | "message"} event
   * @param {(ev: any) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(event, fn) {
    const l = this._on.get(event) || [];
    l.push(fn);
    this._on.set(event, l);
    return () => { const i = l.indexOf(fn); if (i >= 0) l.splice(i, 1); };
  }

  /**
   * Send a request on route `type`.
   * @param {string} type
   * @param {any} [data]
   * @param {RequestOptions} [opts]
   * @returns {RequestHandle}
   */
  request(type, data, opts = {}) {
    const q = this._newReq(this._prefix + ++this._n, type, data === undefined ? null : data, opts, false);
    const sig = opts.signal;
    if (this._stopped) this._finish(q, new OrchestratorError("closed", "client is closed", { id: q.id }));
    else if (sig && sig.aborted) this._finish(q, new OrchestratorError("canceled", "aborted before it was sent", { id: q.id }));
    else {
      if (this._open) {
        this._reqs.set(q.id, q);
        this._send(q);
      } else if (this._o.offline === "reject") {
        this._finish(q, new OrchestratorError("disconnected", "not connected", { id: q.id }));
      } else if (this._queue.length >= this._o.queueMax) {
        this._finish(q, new OrchestratorError("queue_full", "too many requests waiting for a connection", { id: q.id }));
      } else {
        this._reqs.set(q.id, q);
        this._queue.push(q);
      }
      if (!q.done) {
        this._save();
        if (sig) sig.addEventListener("abort", () => this.cancel(q.id), { once: true });
      }
    }
    return q.handle;
  }

  /**
   * Cancel a request: a queued one is dropped, a sent one gets `cancel`
   * (now, or after the reconnect). Its result rejects with `canceled`.
   * @param {string} id
   */
  cancel(id) {
    const q = this._reqs.get(id);
    if (!q || q.done) return;
    const i = this._queue.indexOf(q);
    if (i >= 0) this._queue.splice(i, 1);
    else {
      const cid = this._prefix + "c" + ++this._n;
      this._internal.add(cid);
      this._control({ type: "cancel", id: cid, data: { id } });
    }
    this._finish(q, new OrchestratorError("canceled", "canceled by the client", { id }));
  }

  /** Reconnect now (after a close that stopped the client, or to retry at once). */
  reconnect() {
    if (this._stopped && this.state.reason === "replaced") {
      // Taking the session back from the tab that took it over: continue
      // from what that tab stored.
      const saved = this._load();
      this.session = saved.session || this.session;
      this.pos = Math.max(this.pos, saved.pos || 0);
    }
    this._stopped = false;
    clearTimeout(this._timer);
    if (!this._ws) this._connect();
  }

  /**
   * Close for good: pending requests reject with `closed`. The session (and
   * what is stored) stays, so a new client with the same storage resumes it.
   */
  close() {
    /** @type {any} */ (globalThis).document?.removeEventListener?.("visibilitychange", this._onVisible);
    this._stop("client", 1000);
  }

  // ---- connection ----

  /** @private */
  async _connect() {
    clearTimeout(this._timer);
    if (this._stopped || this._ws) return;
    this._setState({ state: this.session ? "resuming" : "connecting" });
    if (this._o.getToken && (this._refresh || !this._token)) {
      try {
        this._token = await this._o.getToken();
        this._refresh = false;
      } catch (e) {
        return this._retry(Math.random() * Math.min(this._o.backoffMax, this._o.backoffMin * 2 ** this._attempt++), "token");
      }
      if (this._stopped || this._ws) return;
    }
    const q = [];
    if (this.session) {
      q.push("session=" + encodeURIComponent(this.session));
      if (this._positions) q.push("last=" + this.pos);
    }
    if (this._token) q.push("token=" + encodeURIComponent(this._token));
    const url = this._url + (q.length ? (this._url.includes("?") ? "&" : "?") + q.join("&") : "");
    /** @type {SocketLike} */ let ws;
    try {
      ws = new this._WS(url);
    } catch (e) {
      return this._stop("bad_url", 0, String(e));
    }
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._message(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._closed(ev.code, ev.reason); };
    ws.onerror = () => {};
  }

  /**
   * @private
   * @param {number} code
   * @param {string} [reason]
   */
  _closed(code, reason) {
    const ws = this._ws;
    if (ws) { ws.onmessage = ws.onclose = ws.onerror = null; }
    this._ws = null;
    const wasOpen = this._open;
    this._open = false;
    clearInterval(this._tick);
    clearTimeout(this._pingTimer);
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (this._stopped) return;
    if (!wasOpen) this._refresh = true; // refused before the welcome: maybe a 401
    if (code === 4009) return this._stop("replaced", code, "the session was taken over by a newer connection");
    const stop = /** @type {Record<number, string>} */ (CONTRACT_STOP)[code];
    if (stop) return this._stop(stop, code, reason);
    if (code === 4001) {
      if (!this._o.getToken) return this._stop("token_expired", code);
      this._refresh = true;
      return this._retry(0, "token_expired", code);
    }
    const after = this._afterMs;
    this._afterMs = undefined;
    if ((code === 1012 || code === 1001) && after !== undefined) {
      return this._retry(after + Math.random() * Math.min(after, this._o.backoffMax), "draining", code);
    }
    const cap = Math.min(this._o.backoffMax, this._o.backoffMin * 2 ** this._attempt++);
    this._retry(Math.random() * cap, code === 1012 || code === 1001 ? "draining" : "disconnected", code);
  }

  /**
   * @private
   * @param {number} delay
   * @param {string} reason
   * @param {number} [code]
   */
  _retry(delay, reason, code) {
    if (this._stopped) return;
    this._setState({ state: this.session ? "resuming" : "connecting", reason, code, delay: Math.round(delay) });
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /**
   * @private
   * @param {string} reason
   * @param {number} code
   * @param {string} [message]
   */
  _stop(reason, code, message) {
    const first = !this._stopped;
    this._stopped = true;
    clearTimeout(this._timer);
    const ws = this._ws;
    if (ws) { this._closed(code); try { ws.close(1000); } catch (e) { /* already closed */ } }
    if (!first) return;
    const err = (/** @type {string} */ id) => new OrchestratorError(reason === "client" ? "closed" : reason,
      message || "connection closed (" + reason + ")", { id, closeCode: code });
    for (const q of [...this._reqs.values()]) if (!q.done) this._finish(q, err(q.id), true);
    this._queue.length = 0;
    this._setState({ state: "closed", reason, code });
  }

  /**
   * @private
   * @param {any} raw
   */
  _message(raw) {
    /** @type {any} */ let m;
    try { m = JSON.parse(String(raw)); } catch (e) { return this._emit("error", new OrchestratorError("protocol", "unparseable frame from the server")); }
    switch (m && m.type) {
      case "welcome": return this._welcome(m);
      case "chunk": {
        const q = this._reqs.get(m.id);
        if (!q || q.done) { if (!this._internal.has(m.id)) this._emit("orphan", m); return; }
        if (typeof m.seq === "number") {
          if (m.seq < q.nextSeq) return; // already seen (live resume replay)
          q.nextSeq = m.seq + 1;
        }
        if (q.onChunk) q.onChunk(m.data, m.seq);
        return q.ch.push(m.data);
      }
      case "result":
      case "error": return this._terminal(m);
      case "pong": clearTimeout(this._pingTimer); return;
      case "reconnect": this._afterMs = typeof m.after_ms === "number" ? m.after_ms : undefined; return;
      case "restart": {
        const q = this._reqs.get(m.id);
        if (q) q.nextSeq = 0;
        return this._emit("restart", { id: m.id });
      }
      default: this._emit("message", m);
    }
  }

  /**
   * @private
   * @param {any} m
   */
  _welcome(m) {
    const fresh = !m.resumed;
    const lostSession = fresh && !!this.session;
    this.session = m.session;
    this._positions = "recovered" in m;
    if (fresh) this.pos = 0;
    this._open = true;
    this._attempt = 0;
    this._replayLeft = typeof m.replay === "number" ? m.replay : 0;
    this._inflight = Array.isArray(m.inflight) ? m.inflight : null;
    this._acked = this.pos;
    this._save();
    this._emit("welcome", m);
    if (m.resumed && m.recovered === false) this._emit("missed", { missed: m.missed });
    this._setState({ state: "open", node: m.node, session: m.session, resumed: !!m.resumed });
    if (!this._open) return; // a listener closed us
    // Requests sent on a session the server no longer has were never
    // received by this one.
    if (lostSession) this._unreceived(() => true);
    else if (this._inflight && this._replayLeft === 0) this._settle();
    for (const f of this._out.splice(0)) this._ws && this._ws.send(f);
    for (const q of this._queue.splice(0)) if (!q.done) this._send(q);
    this._lastTick = Date.now();
    clearInterval(this._tick);
    this._tick = setInterval(() => {
      const now = Date.now();
      if (now - this._lastTick > 6000) this._ping(); // the timer slept: so did the tab
      this._lastTick = now;
    }, 2000);
    if (this._tick.unref) this._tick.unref();
  }

  /**
   * After a resume's replay: sent requests neither running (welcome's
   * inflight) nor answered were never received.
   * @private
   */
  _settle() {
    const running = new Set(this._inflight || []);
    this._inflight = null;
    // A request that streamed a chunk was received: if it is not running
    // and not answered, its terminal is still to come (e.g. node_lost from
    // the replica that died running it), so it is not sent twice.
    this._unreceived((q) => !running.has(q.id) && q.nextSeq === 0);
  }

  /**
   * @private
   * @param {(q: Req) => boolean} pick
   */
  _unreceived(pick) {
    for (const q of [...this._reqs.values()]) {
      if (q.done || !q.sent || !pick(q) || this._queue.includes(q)) continue;
      if (this._o.unreceived === "reject") this._finish(q, new OrchestratorError("not_received", "the server never received this request", { id: q.id }));
      else {
        if (q.nextSeq > 0) this._emit("restart", { id: q.id });
        q.nextSeq = 0;
        this._send(q);
      }
    }
  }

  /**
   * @private
   * @param {any} m
   */
  _terminal(m) {
    if (typeof m.pos === "number") {
      if (m.pos <= this.pos) return; // replayed twice
      this.pos = m.pos;
      this._scheduleAck();
      if (this._replayLeft > 0 && --this._replayLeft === 0 && this._inflight) this._settle();
    }
    if (this._internal.delete(m.id)) return this._save();
    const q = this._reqs.get(m.id);
    if (!q || q.done) {
      this._save();
      if (m.type === "error" && !m.id) return this._emit("error", new OrchestratorError(m.code, m.message));
      if (!q) this._emit("orphan", m);
      return;
    }
    if (m.type === "result") return this._finish(q, m.data);
    if (m.code === "draining" && this._o.retryDraining && q.nextSeq === 0) {
      // Refused by a draining node before any output: send it again after
      // the reconnect that follows.
      q.sent = false;
      this._queue.push(q);
      return this._save();
    }
    this._finish(q, new OrchestratorError(m.code, m.message, { id: q.id, pos: m.pos }));
  }

  /** @private */
  _scheduleAck() {
    if (this._ackTimer || !this._open) return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      if (this._open && this.pos > this._acked) {
        this._acked = this.pos;
        this._ws && this._ws.send(JSON.stringify({ type: "ack", pos: this.pos }));
      }
    }, this._o.ackDelay);
    if (this._ackTimer.unref) this._ackTimer.unref();
  }

  /** @private */
  _ping() {
    if (!this._open || !this._ws) return;
    const id = this._prefix + "p" + ++this._n;
    this._ws.send(JSON.stringify({ type: "ping", id }));
    clearTimeout(this._pingTimer);
    const ws = this._ws;
    this._pingTimer = setTimeout(() => {
      if (this._ws !== ws) return;
      this._closed(4000, "ping timeout"); // the connection is dead: do not wait for its close
      try { ws.close(4000, "ping timeout"); } catch (e) { /* gone */ }
    }, this._o.pingTimeout);
  }

  // ---- requests ----

  /**
   * @private
   * @param {string} id
   * @param {string} type
   * @param {any} data
   * @param {RequestOptions} opts
   * @param {boolean} restored
   * @returns {Req}
   */
  _newReq(id, type, data, opts, restored) {
    const ch = channel();
    /** @type {any} */ let res;
    /** @type {any} */ let rej;
    const result = new Promise((a, b) => { res = a; rej = b; });
    result.catch(() => {}); // a caller that only reads chunks must not crash Node
    /** @type {Req} */
    const q = {
      id, type, data, sent: false, nextSeq: 0, done: false, restored, resolve: res, reject: rej, ch, onChunk: opts.onChunk,
      handle: { id, type, data, chunks: ch.iter, result, restored },
    };
    return q;
  }

  /**
   * @private
   * @param {Req} q
   */
  _send(q) {
    if (!this._ws) return;
    this._ws.send(JSON.stringify({ type: q.type, id: q.id, data: q.data }));
    if (!q.sent) { q.sent = true; this._save(); }
  }

  /**
   * @private
   * @param {object} msg
   */
  _control(msg) {
    const f = JSON.stringify(msg);
    if (this._open && this._ws) this._ws.send(f);
    else if (this._out.length < this._o.queueMax) this._out.push(f);
  }

  /**
   * @private
   * @param {Req} q
   * @param {any} v result data or an OrchestratorError
   * @param {boolean} [noSave]
   */
  _finish(q, v, noSave) {
    if (q.done) return;
    q.done = true;
    this._reqs.delete(q.id);
    q.ch.end();
    if (v instanceof OrchestratorError) q.reject(v); else q.resolve(v);
    if (!noSave) this._save();
  }

  // ---- storage and events ----

  /** @private */
  _load() {
    try { return JSON.parse(this._store.getItem(this._key) || "{}") || {}; } catch (e) { return {}; }
  }

  /** @private */
  _save() {
    // After a takeover (4009) the storage belongs to the newer connection's
    // page (another tab sharing localStorage): do not overwrite it.
    if (this._stopped && this.state.reason === "replaced") return;
    const reqs = [];
    for (const q of this._reqs.values()) if (!q.done) reqs.push({ id: q.id, type: q.type, data: q.data, sent: q.sent });
    try {
      this._store.setItem(this._key, JSON.stringify({ session: this.session, pos: this.pos, v11: this._positions, reqs }));
    } catch (e) { /* storage full or denied: resume still works within this page */ }
  }

  /**
   * Forget the session: the next connection starts a new one. Pending
   * requests reject with `closed`.
   */
  reset() {
    this._store.removeItem(this._key);
    this.session = "";
    this.pos = 0;
    this._positions = false;
    const ws = this._ws;
    this._stop("client", 1000);
    this._stopped = false;
    if (ws) ws.close(1000, "new session");
    this._connect();
  }

  /**
   * @private
   * @param {StateEvent} s
   */
  _setState(s) {
    this.state = s;
    this._emit("state", s);
  }

  /**
   * @private
   * @param {string} event
   * @param {any} v
   */
  _emit(event, v) {
    for (const fn of [...(this._on.get(event) || [])]) {
      try { fn(v); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }
}

/**
 * Connect to an orchestratord /ws endpoint. The client connects at once and
 * keeps reconnecting (resuming its session) until {@link Client.close} or a
 * close code that means stop.
 * @param {string} url
 * @param {ConnectOptions} [opts]
 * @returns {Client}
 */
export function connect(url, opts) {
  return new Client(url, opts);
}
