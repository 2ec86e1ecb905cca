/** @returns {StorageLike} an in-memory storage (the default). */
export function memoryStorage(): StorageLike;
/**
 * Connect to an orchestratord /ws endpoint. The client connects at once and
 * keeps reconnecting (resuming its session) until {@link Client.close} or a
 * close code that means stop.
 * @param {string} url
 * @param {ConnectOptions} [opts]
 * @returns {Client}
 */
export function connect(url: string, opts?: ConnectOptions): Client;
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
    constructor(code: string, message?: string, extra?: {
        id?: string;
        closeCode?: number;
        pos?: number;
    });
    /** @type {string} */ code: string;
    /** @type {string | undefined} */ id: string | undefined;
    /** @type {number | undefined} */ closeCode: number | undefined;
    /** @type {number | undefined} */ pos: number | undefined;
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
    constructor(url: string, opts?: ConnectOptions);
    /** @private */ private _WS;
    /** @private */ private _url;
    /** @private */ private _o;
    /** @private */ private _store;
    /** @private */ private _key;
    /** @private @type {string | undefined} */ private _token;
    /** @private */ private _refresh;
    /** @private @type {SocketLike | null} */ private _ws;
    /** @private @type {Map<string, Req>} */ private _reqs;
    /** @private @type {Req[]} */ private _queue;
    /** @private @type {string[]} */ private _out;
    /** @private @type {Set<string>} */ private _internal;
    /** @private @type {Map<string, Function[]>} */ private _on;
    /** @private */ private _n;
    /** @private */ private _prefix;
    /** @private */ private _attempt;
    /** @private @type {number | undefined} */ private _afterMs;
    /** @private */ private _open;
    /** @private */ private _stopped;
    /** @private @type {any} */ private _timer;
    /** @private @type {any} */ private _ackTimer;
    /** @private @type {any} */ private _pingTimer;
    /** @private @type {any} */ private _tick;
    /** @private */ private _lastTick;
    /** @private */ private _replayLeft;
    /** @private @type {string[] | null} */ private _inflight;
    /** @private */ private _acked;
    /** @type {StateEvent} */ state: StateEvent;
    /** @type {string} the session id ("" before the first welcome). */
    session: string;
    /** @type {number} the last terminal position received (0: none). */
    pos: number;
    /** @private */ private _positions;
    /**
     * Requests that were in flight when the page (or process) that used the
     * same storage went away: they continue here, each once.
     * @type {RequestHandle[]}
     */
    restored: RequestHandle[];
    /** @private */ private _onVisible;
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
    on(event: "state" | "welcome" | "missed" | "restart" | "orphan" | "error" | "message", fn: (ev: any) => void): () => void;
    /**
     * Send a request on route `type`.
     * @param {string} type
     * @param {any} [data]
     * @param {RequestOptions} [opts]
     * @returns {RequestHandle}
     */
    request(type: string, data?: any, opts?: RequestOptions): RequestHandle;
    /**
     * Cancel a request: a queued one is dropped, a sent one gets `cancel`
     * (now, or after the reconnect). Its result rejects with `canceled`.
     * @param {string} id
     */
    cancel(id: string): void;
    /** Reconnect now (after a close that stopped the client, or to retry at once). */
    reconnect(): void;
    /**
     * Close for good: pending requests reject with `closed`. The session (and
     * what is stored) stays, so a new client with the same storage resumes it.
     */
    close(): void;
    /** @private */
    private _connect;
    /**
     * @private
     * @param {number} code
     * @param {string} [reason]
     */
    private _closed;
    /**
     * @private
     * @param {number} delay
     * @param {string} reason
     * @param {number} [code]
     */
    private _retry;
    /**
     * @private
     * @param {string} reason
     * @param {number} code
     * @param {string} [message]
     */
    private _stop;
    /**
     * @private
     * @param {any} raw
     */
    private _message;
    /**
     * @private
     * @param {any} m
     */
    private _welcome;
    /**
     * After a resume's replay: sent requests neither running (welcome's
     * inflight) nor answered were never received.
     * @private
     */
    private _settle;
    /**
     * @private
     * @param {(q: Req) => boolean} pick
     */
    private _unreceived;
    /**
     * @private
     * @param {any} m
     */
    private _terminal;
    /** @private */
    private _scheduleAck;
    /** @private */
    private _ping;
    /**
     * @private
     * @param {string} id
     * @param {string} type
     * @param {any} data
     * @param {RequestOptions} opts
     * @param {boolean} restored
     * @returns {Req}
     */
    private _newReq;
    /**
     * @private
     * @param {Req} q
     */
    private _send;
    /**
     * @private
     * @param {object} msg
     */
    private _control;
    /**
     * @private
     * @param {Req} q
     * @param {any} v result data or an OrchestratorError
     * @param {boolean} [noSave]
     */
    private _finish;
    /** @private */
    private _load;
    /** @private */
    private _save;
    /**
     * Forget the session: the next connection starts a new one. Pending
     * requests reject with `closed`.
     */
    reset(): void;
    /**
     * @private
     * @param {StateEvent} s
     */
    private _setState;
    /**
     * @private
     * @param {string} event
     * @param {any} v
     */
    private _emit;
}
/**
 * A localStorage-like synchronous key/value store. `localStorage`,
 * `sessionStorage` and {@link memoryStorage} fit.
 */
export type StorageLike = {
    getItem: (key: string) => string | null;
    setItem: (key: string, value: string) => void;
    removeItem: (key: string) => void;
};
/**
 * What the library needs of a WebSocket (the browser's, Node 22's global, or
 * the `ws` package's).
 */
export type SocketLike = {
    readyState: number;
    send: (data: string) => void;
    close: (code?: number, reason?: string) => void;
    onmessage: ((ev: {
        data: any;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: any) => void) | null;
    onopen: ((ev: any) => void) | null;
};
export type SocketConstructor = new (url: string, protocols?: string | string[]) => SocketLike;
export type ConnectOptions = {
    /**
     * a JWT, sent as the `token` query parameter.
     */
    token?: string | undefined;
    /**
     * called for a token
     * before the first connection, after a 4001 close (token expired) and
     * after an attempt that failed before the welcome (maybe a 401).
     */
    getToken?: (() => string | Promise<string>) | undefined;
    /**
     * where the session id, the last position
     * and the requests in flight are kept (default: memory; pass
     * `localStorage` so that a page reload resumes).
     */
    storage?: StorageLike | undefined;
    /**
     * default `"orchestratord:" + url`.
     */
    storageKey?: string | undefined;
    /**
     * default: the global WebSocket.
     */
    WebSocket?: SocketConstructor | undefined;
    /**
     * requests made while disconnected:
     * queued until the next welcome (default) or rejected (`disconnected`).
     */
    offline?: "queue" | "reject" | undefined;
    /**
     * bound of that queue (default 64); past it
     * `queue_full`.
     */
    queueMax?: number | undefined;
    /**
     * requests the server never
     * received (not running, not answered, per the resume's welcome): sent
     * again (default) or rejected (`not_received`).
     */
    unreceived?: "reject" | "resend" | undefined;
    /**
     * a request refused with `draining`
     * before any chunk is sent again after the reconnect (default true).
     */
    retryDraining?: boolean | undefined;
    /**
     * ms, first retry cap (default 250).
     */
    backoffMin?: number | undefined;
    /**
     * ms, largest retry cap (default 15000).
     */
    backoffMax?: number | undefined;
    /**
     * ms to wait for the pong of an
     * application ping before reconnecting (default 5000).
     */
    pingTimeout?: number | undefined;
    /**
     * ms between a terminal and its `ack`
     * (default 500).
     */
    ackDelay?: number | undefined;
};
export type RequestOptions = {
    /**
     * aborting sends `cancel`; the result
     * rejects at once with code `canceled`.
     */
    signal?: AbortSignal | undefined;
    /**
     * called per chunk,
     * besides the `chunks` iterable.
     */
    onChunk?: ((data: any, seq: number) => void) | undefined;
};
export type RequestHandle = {
    /**
     * the request id on the wire.
     */
    id: string;
    /**
     * the route.
     */
    type: string;
    /**
     * what was sent.
     */
    data: any;
    /**
     * the chunks' data in `seq` order,
     * each once; ends at the terminal (an error ends it quietly: see result).
     */
    chunks: AsyncIterable<any>;
    /**
     * the result's data, or a rejection with an
     * {@link OrchestratorError}.
     */
    result: Promise<any>;
    /**
     * true for a request restored from storage.
     */
    restored: boolean;
};
export type StateEvent = {
    state: "connecting" | "open" | "resuming" | "closed";
    /**
     * why (closed: `client`, `replaced`,
     * `token_expired`, `policy_violation`, ...; resuming: `draining`, ...).
     */
    reason?: string | undefined;
    /**
     * the close code that led here.
     */
    code?: number | undefined;
    /**
     * ms until the next attempt (resuming, connecting).
     */
    delay?: number | undefined;
    /**
     * the node (open).
     */
    node?: string | undefined;
    /**
     * the session id (open).
     */
    session?: string | undefined;
    /**
     * whether the session was resumed (open).
     */
    resumed?: boolean | undefined;
};
/**
 * One request of this client.
 */
export type Req = {
    id: string;
    type: string;
    data: any;
    /**
     * it went out on some connection
     */
    sent: boolean;
    nextSeq: number;
    done: boolean;
    restored: boolean;
    resolve: (v: any) => void;
    reject: (e: OrchestratorError) => void;
    ch: {
        push(v: any): void;
        end(): void;
    };
    onChunk: ((data: any, seq: number) => void) | undefined;
    handle: RequestHandle;
};
