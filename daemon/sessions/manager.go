package sessions

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// Outlet is a live connection as the manager sees it. Methods never block.
// Send, SendTerminal, Queued and NotifyDrained are called with the
// session's lock held (that is what keeps a session's messages in order),
// so no method may call back into the Manager on the calling goroutine: a
// Detach caused by a failed Send or a Kick must come from another
// goroutine (the connection's close path). Kick and Cut may be called
// with or without the lock.
type Outlet interface {
	// Send queues one encoded server message (text frame); error if the
	// connection is gone.
	Send(msg []byte) error
	// SendTerminal queues a terminal tagged with its position, so that
	// the connection can tell at close which ones its peer acknowledged
	// (netpoll's SendTagged and Acked).
	SendTerminal(msg []byte, pos uint64) error
	// Queued returns the bytes queued on the connection, not yet written.
	Queued() int
	// NotifyDrained calls fn once (maybe at once, on the caller's
	// goroutine) when Queued falls to below or less; fn must not block.
	NotifyDrained(below int, fn func())
	// Kick closes the connection with 4009: the session was taken over
	// by a newer connection.
	Kick()
	// Cut closes the connection with 4008 (slow consumer).
	Cut()
	// Acked returns the newest position its peer's TCP acknowledged, with
	// every terminal sent before it (netpoll's Conn.Acked).
	Acked() uint64
}

// Options tunes a Manager beyond config.Sessions; the zero value is the
// production setting.
type Options struct {
	// Redis tunes the Redis store and bus (key prefix, operation timeout).
	Redis RedisOptions
	// AckTimeout bounds how long Attach waits for the other replicas to
	// replay the output of the session's requests. Default 2s.
	AckTimeout time.Duration
	// TouchEvery is the least time between two TTL refreshes of one
	// session. Default: a hundredth of the TTL, between 1s and 1m.
	TouchEvery time.Duration
	// PaceBytes is how much of a replay may wait in a connection's queue
	// at once; the rest follows as the socket drains. Set it to half of
	// ws.outbound_queue_bytes. Default 512 KiB.
	PaceBytes int
}

func (o Options) paceBytes() int {
	if o.PaceBytes <= 0 {
		return 512 << 10
	}
	return o.PaceBytes
}

// maxBacklog bounds the live bytes that may wait behind a paced replay;
// past it the connection is cut with 4008 (its terminals stay in the log).
func (o Options) maxBacklog() int { return max(8*o.paceBytes(), 4<<20) }

// Manager binds live connections to sessions: it creates and resumes
// sessions, delivers the output of requests to the session's connection
// wherever it is, keeps the outbox, and kicks older connections. Safe for
// concurrent use.
type Manager struct {
	node string
	log  *slog.Logger
	// store is the session store. Terminal appends to the memory store
	// go through memStore (appendRecord, on the record held), not through
	// store: a test wrapping store to fail Append must use another backend.
	store Store
	bus   *bus      // nil for the memory store: one node, nothing to relay
	nl    *nodeLoss // nil for the memory store: no survivor (nodeloss.go)
	opts  Options

	reg   *registry     // the node's records, shared with the memory store
	conns atomic.Uint64 // connection numbers, unique on this node
	begun atomic.Uint64 // stream order, for replays

	lim       limits
	touchq    chan string  // async TTL refreshes (redis store)
	asyncq    chan asyncOp // async cursor and ack writes (redis store)
	pendMu    sync.Mutex
	pending   []pendingTerm  // terminals waiting for the store, from pendHead; guarded by pendMu
	pendHead  int            // guarded by pendMu
	pendBy    map[string]int // waiting terminals per session; guarded by pendMu
	pendGaps  map[string]int // positions of terminals dropped past maxPending, per session; pendMu
	pendBytes atomic.Int64
	once      onceIDs       // ids that make a terminal's appends idempotent (pending.go)
	retryKick chan struct{} // nil with the memory store
	// onceStore is the store when its appends can be made idempotent
	// per once id (the Redis store); nil for the memory store, whose
	// appends are never in doubt.
	onceStore onceAppender
	// memStore is the store when it is the memory store keeping its
	// sessions in this Manager's records (m.reg): a terminal is appended
	// to the record the Manager holds, not looked up again by id.
	memStore *MemoryStore
	// clock0 is the origin of Record.touched: a monotonic reading
	// TouchEvery before the manager opened, so that a record never
	// touched (0) is due. time.Since(clock0) reads one clock, time.Now two.
	clock0    time.Time
	lastWarn  atomic.Int64 // unix nanos of the last rate-limited warning
	muted     atomic.Int64 // warnings dropped since
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open returns a Manager for node with the store cfg.Store names ("memory"
// or "redis"); for redis it also subscribes to the bus.
func Open(ctx context.Context, cfg config.Sessions, node string, log *slog.Logger) (*Manager, error) {
	return OpenOptions(ctx, cfg, node, log, Options{})
}

// OpenOptions is Open with Options.
func OpenOptions(ctx context.Context, cfg config.Sessions, node string, log *slog.Logger, opts Options) (*Manager, error) {
	if node == "" {
		return nil, errors.New("sessions: empty node name")
	}
	lim := limitsOf(cfg)
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 2 * time.Second
	}
	if opts.TouchEvery <= 0 {
		opts.TouchEvery = min(max(lim.ttl/100, time.Second), time.Minute)
	}
	opts.Redis = opts.Redis.withDefaults()
	m := &Manager{node: node, log: log, opts: opts, lim: lim, pendBy: make(map[string]int), pendGaps: make(map[string]int),
		clock0: time.Now().Add(-opts.TouchEvery), once: newOnceIDs(node)}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.reg = newRegistry(m)
	switch cfg.Store {
	case "", "memory":
		ms := newMemoryStore(cfg, log, m.reg)
		m.store, m.memStore = ms, ms
	case "redis":
		rs, err := OpenRedisStore(cfg, opts.Redis, log)
		if err != nil {
			m.cancel()
			return nil, fmt.Errorf("open redis session store: %w", err)
		}
		m.store, m.onceStore = rs, rs
		b, err := openBus(ctx, m, cfg, rs.c, opts.Redis)
		if err != nil {
			m.cancel()
			rs.Close()
			return nil, fmt.Errorf("open session bus: %w", err)
		}
		m.bus = b
		// NODELOSS HOOK: liveness key, run records, sweeper (nodeloss.go).
		if m.nl, err = startNodeLoss(ctx, m, rs, cfg.NodeLossAfter.D()); err != nil {
			m.cancel()
			b.close()
			rs.Close()
			return nil, fmt.Errorf("open node-loss sweeper: %w", err)
		}
		m.touchq = make(chan string, 4096)
		m.asyncq = make(chan asyncOp, 16384)
		m.retryKick = make(chan struct{}, 1)
		m.wg.Add(3)
		go m.toucher()
		go m.retryPending()
		go m.asyncWriter()
	default:
		m.cancel()
		return nil, fmt.Errorf("sessions.store: unknown store %q (want memory or redis)", cfg.Store)
	}
	return m, nil
}

// Store returns the manager's store.
func (m *Manager) Store() Store { return m.store }

// Node returns the node name the manager was opened with.
func (m *Manager) Node() string { return m.node }

// Lookup reports the owner of a session id (for the handshake's 403 check):
// ErrNotFound if unknown/expired.
func (m *Manager) Lookup(ctx context.Context, id string) (string, error) {
	if !ValidID(id) {
		return "", notFound(id)
	}
	return m.store.Owner(ctx, id)
}

// Attach binds out to a session of user. resumeID "" or unknown/expired: a
// fresh session, resumed=false. ErrForbidden when resumeID exists but
// belongs to another user. Before Attach returns, it has sent through out,
// in order: the welcome (welcome fills in the node's part of it); the
// replay (the log's terminals after from, in position order, paced by the
// socket); then, for every request of this session still in flight on any
// replica, the messages already produced (in seq order, no gaps); from
// then on live output, behind whatever of the replay still waits. Any
// older connection of the session, on any replica, is kicked.
func (m *Manager) Attach(ctx context.Context, user, resumeID string, from Resume, out Outlet, welcome func(w *events.Welcome) []byte) (id string, resumed bool, err error) {
	l, resumed, err := m.Bind(ctx, user, resumeID, from, out, welcome)
	if err != nil {
		return "", false, err
	}
	return l.id, resumed, nil
}

// Bind is Attach returning the session's record, which the connection
// holds until its Detach (exactly one per successful Bind): the record
// stays registered meanwhile, even when a newer connection took the
// session over.
func (m *Manager) Bind(ctx context.Context, user, resumeID string, from Resume, out Outlet, welcome func(w *events.Welcome) []byte) (rec *Record, resumed bool, err error) {
	var id string
	// A resume goes straight to Claim, which checks the owner (one round
	// trip); unknown or expired ids fall back to a fresh session.
	if resumeID != "" && ValidID(resumeID) {
		id, resumed = resumeID, true
	}
	var (
		l       *Record
		claim   Claim
		conn    = m.conns.Add(1)
		retries = 0
	)
	// retry reports whether a store operation that timed out on its own
	// bound (Redis: OpTimeout) is tried again: at most twice, while ctx
	// lasts. A host stalled for a second under load is no store outage;
	// a refused connection or a closed store still fails at once.
	retry := func(err error) bool {
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || retries == 2 {
			return false
		}
		retries++
		m.log.Debug("session store operation timed out, attach tried again", slog.Any("err", err))
		return true
	}
	for {
		if !resumed {
			s, err := m.store.Create(ctx, user)
			if err != nil {
				if retry(err) {
					continue
				}
				return nil, false, err
			}
			id = s.ID
			from = Resume{}
		}
		l = m.holdLocal(id)
		if !l.takeTurn(ctx) {
			m.unhold(l)
			return nil, false, fmt.Errorf("attach session %s: %w", id, ctx.Err())
		}
		l.mu.Lock()
		from.Delivered = max(from.Delivered, l.dlv())
		if l.out != nil {
			// A takeover on this node: what the older connection's peer
			// acknowledged so far counts as delivered (its close comes
			// after this claim).
			acked := min(l.out.Acked(), l.sent)
			from.Delivered = max(from.Delivered, acked)
		}
		// Once claimed, another node may learn of conn from the store and
		// relay to it before it is bound below: kept until then.
		l.setBinding(&pendingBind{conn: conn})
		l.mu.Unlock()
		claim, err = m.store.Claim(ctx, id, user, m.node, conn, from)
		if err == nil {
			break
		}
		l.mu.Lock()
		l.setBinding(nil)
		l.mu.Unlock()
		l.giveTurn()
		m.unhold(l)
		if retry(err) {
			continue
		}
		if !resumed || !errors.Is(err, ErrNotFound) {
			return nil, false, err
		}
		resumed = false // unknown or expired: a fresh session
	}
	l.mu.Lock()
	var early []outMsg // relayed to conn before it was bound (onRelay)
	if pb := l.binding(); pb != nil {
		early = pb.q
		l.setBinding(nil)
	}
	older := l.out // kicked once the lock is released
	var bl *backlog
	if older != nil {
		// The replay waits for the older connection's final Acked
		// (Detach): what its peer acknowledged by then is not replayed;
		// never past the older connection's contiguous mark. A resume
		// with ?last= said itself what it holds: everything after Last
		// is sent (contract 4a), whatever the older connection's peer
		// acknowledged (the same client may have dropped it since).
		capAt := l.sent
		if from.HasLast {
			capAt = min(capAt, from.Last)
		}
		bl = &backlog{older: older, capAt: capAt}
	}
	l.out, l.conn = out, conn
	l.setRemote(nil)
	l.setBl(bl)
	l.setAhead(nil)
	if bl != nil {
		time.AfterFunc(takeoverWait, func() { m.stopWaiting(l, bl) })
	}
	l.sent = claim.Pos
	m.setUserLocked(l, user)
	l.setDetached(0)
	if ms, ok := m.store.(*MemoryStore); ok {
		// The claim cleared it; an older connection's Detach may have set
		// it again since. Under l.mu, as Detach sets it (record before
		// shard), so the last of the two to hold l.mu decides.
		ms.SetDetached(id, time.Time{})
	}
	l.conns++
	l.epoch = max(l.epoch, uint32(claim.Epoch))
	l.touched.Store(int64(time.Since(m.clock0)))
	w := events.Welcome{Session: id, Resumed: resumed, Recovered: claim.Missed == 0, Missed: claim.Missed, Replay: len(claim.Log)}
	streams := l.sortedStreams()
	if resumed {
		// The session's requests in flight on any replica: those
		// recorded in the store (read with the claim: each is either
		// listed there or its terminal is in the log), and those running
		// here (a request not recorded: the inline echo, the memory
		// store, or one whose record write failed).
		w.Inflight = make([]string, 0, len(streams)+len(claim.Running))
		for _, s := range streams {
			// Registered: not ended, or its terminal is not logged yet
			// (it waits for the turn this claim holds, or for the store).
			w.Inflight = append(w.Inflight, s.req)
		}
		for _, r := range claim.Running {
			if !slices.Contains(w.Inflight, r) {
				w.Inflight = append(w.Inflight, r)
			}
		}
	}
	if out.Send(welcome(&w)) == nil {
		msgs := make([]outMsg, 0, len(claim.Log))
		for _, e := range claim.Log {
			msgs = append(msgs, outMsg{e.Msg, e.Pos})
		}
		for _, s := range streams {
			for _, c := range s.replay() {
				msgs = append(msgs, outMsg{c, 0})
			}
		}
		m.replayLocked(l, msgs)
		for _, o := range early {
			m.sendLocked(l, o.msg, o.pos)
		}
	}
	l.mu.Unlock()
	l.giveTurn()
	m.unhold(l)
	if older != nil {
		older.Kick()
	}
	if m.bus != nil && len(claim.Nodes) > 0 {
		m.bus.announce(ctx, id, conn, claim.Epoch, claim.Nodes)
	}
	return l, resumed, nil
}

// sortedStreams returns l's streams in the order they began; l.mu held.
func (l *Record) sortedStreams() []*Stream {
	ss := make([]*Stream, 0, len(l.streams))
	for _, s := range l.streams {
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(a, b *Stream) int { return cmp.Compare(a.order, b.order) })
	return ss
}

// Get returns a copy of the session (context and history for dispatch).
func (m *Manager) Get(ctx context.Context, id string) (*Session, error) { return m.store.Get(ctx, id) }

// Restore re-creates session id of user when the store lost it (see
// Store.Restore); its positions go on after the ones this node numbered
// (restore in delivery.go). A session that exists is left alone.
func (m *Manager) Restore(ctx context.Context, id, user string) error {
	l := m.holdLocal(id)
	defer m.unhold(l)
	if !l.takeTurn(ctx) {
		return ctx.Err()
	}
	defer l.giveTurn()
	return m.restore(ctx, l, user)
}

// PatchContext applies an RFC 7386 merge patch to the session's context.
func (m *Manager) PatchContext(ctx context.Context, id string, patch json.RawMessage) error {
	return m.store.PatchContext(ctx, id, patch)
}

// AppendHistory appends chat turns to the session's bounded history.
func (m *Manager) AppendHistory(ctx context.Context, id string, turns []events.Turn) error {
	return m.store.AppendHistory(ctx, id, turns)
}

// Touch records activity on the session: its TTL is refreshed at most once
// per Options.TouchEvery while it is attached here. It never blocks: with
// Redis the refresh is sent by a background goroutine (dropped, with a
// debug log, if that one is more than 4096 behind).
func (m *Manager) Touch(id string) {
	m.touch(id, nil)
}

// touch is Touch; l is the session's record if the caller has it.
func (m *Manager) touch(id string, l *Record) {
	now := int64(time.Since(m.clock0))
	if l == nil {
		if l = m.lockLocal(id, false); l != nil {
			l.mu.Unlock()
		}
	}
	if l != nil {
		last := l.touched.Load()
		if now-last < int64(m.opts.TouchEvery) || !l.touched.CompareAndSwap(last, now) {
			return
		}
	}
	if m.touchq == nil {
		_ = m.store.Touch(m.ctx, id) // memory: a map write
		return
	}
	select {
	case m.touchq <- id:
	default:
		m.log.Debug("session touch queue full", slog.String("session", id))
	}
}

func (m *Manager) toucher() {
	defer m.wg.Done()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-sweep.C:
			m.sweepDetached(now)
		case id := <-m.touchq:
			if err := m.store.Touch(m.ctx, id); err != nil && !errors.Is(err, ErrNotFound) && m.ctx.Err() == nil {
				m.warn("session touch failed", slog.String("session", id), slog.Any("err", err))
			}
		}
	}
}

// Ready returns nil when the store (and, with Redis, the bus subscription)
// is usable, else an error saying why.
func (m *Manager) Ready(ctx context.Context) error {
	if m.ctx.Err() != nil {
		return ErrClosed
	}
	if err := m.store.Ping(ctx); err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	if m.bus != nil && !m.bus.subscribed.Load() {
		return errors.New("session bus: not subscribed")
	}
	return nil
}

// Close stops the manager's goroutines and closes the store and bus.
// Requests still in flight should have ended first (drain); an End after
// Close can only be logged. Idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		if m.nl != nil { // NODELOSS HOOK: before the store closes
			m.nl.close()
		}
		if m.bus != nil {
			m.bus.close()
		}
		m.wg.Wait()
		m.closeErr = m.store.Close()
	})
	return m.closeErr
}

// warn logs a warning at most once every 10 seconds, so that a store outage
// does not log once per message; the next one says how many were dropped.
func (m *Manager) warn(msg string, attrs ...slog.Attr) {
	now := time.Now().UnixNano()
	last := m.lastWarn.Load()
	if now-last < int64(10*time.Second) || !m.lastWarn.CompareAndSwap(last, now) {
		m.muted.Add(1)
		return
	}
	if n := m.muted.Swap(0); n > 0 {
		attrs = append(attrs, slog.Int64("suppressed", n))
	}
	m.log.LogAttrs(m.ctx, slog.LevelWarn, msg, attrs...)
}

// Stats counts what this node holds: sessions with a live connection here,
// and requests in flight here.
type Stats struct {
	Attached int
	Streams  int
}

// Stats returns this node's counts (for metrics and the admin page).
func (m *Manager) Stats() Stats {
	var st Stats
	for i := range m.reg.shards {
		sh := &m.reg.shards[i]
		sh.mu.Lock()
		ls := make([]*Record, 0, sh.m.Len())
		for l := range sh.m.all() {
			ls = append(ls, l)
		}
		sh.mu.Unlock()
		for _, l := range ls {
			l.mu.Lock()
			if l.out != nil {
				st.Attached++
			}
			st.Streams += len(l.streams)
			l.mu.Unlock()
		}
	}
	return st
}
