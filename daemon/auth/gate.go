package auth

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

const (
	// refusalLogRate and refusalLogBurst bound the "handshake refused" log
	// lines per second, so that a client retrying a bad token in a loop
	// cannot flood the log; the lines left out are counted in the next one.
	refusalLogRate  = 10
	refusalLogBurst = 20
)

// Handshake is what the Gate reads of a WebSocket handshake. The gateway
// fills it from the engine's request; it is only read during Check.
type Handshake struct {
	// Path and RawQuery are the request target, split at '?'.
	Path, RawQuery string
	// Header holds the request headers with canonical keys.
	Header http.Header
	// Remote is the client's address: the TCP peer's, or the one a trusted
	// proxy reported (netpoll.Request.Client). Per-IP limits and logs use
	// it.
	Remote netip.AddrPort
}

// gateState is the hot-reloadable part of the Gate, replaced whole.
type gateState struct {
	gen     uint64
	perIP   int
	rate    float64
	burst   int
	origins []string // normalised; nil: any origin
}

// tracksIPs reports whether handshakes are counted per source address.
func (s *gateState) tracksIPs() bool { return s.perIP > 0 || s.rate > 0 }

// Gate decides whether a handshake gets in, running the checks in order of
// cost so that a refused handshake is cheap:
//
//  1. draining (503 draining), node-wide connection cap (503 at_capacity)
//  2. path (404 not_found)
//  3. per-IP connections (429 too_many_connections) and per-IP handshake
//     rate (429 rate_limited)
//  4. Origin allow-list (403 origin_not_allowed)
//  5. token (401 unauthorized), or anonymous when allowed and no token
//
// It never writes to the client; the gateway sends the Refusal. It is safe
// for concurrent use.
type Gate struct {
	v         *Verifier
	log       *slog.Logger
	path      string
	anonymous bool
	jwt       config.JWT
	ref       refusals
	now       func() time.Time // time.Now; replaced by tests

	draining atomic.Bool
	conns    Slots // node-wide connections
	state    atomic.Pointer[gateState]
	ips      ipTable

	logBucket     Bucket
	logSuppressed atomic.Int64
}

// NewGate builds the Gate from the config's ws.path, ws.allowed_origins,
// limits and auth sections. v may be nil when auth.anonymous is true and no
// algorithm is configured; a token is then always refused.
func NewGate(cfg config.Config, v *Verifier, log *slog.Logger) *Gate {
	g := &Gate{
		v:         v,
		log:       log,
		path:      cfg.WS.Path,
		anonymous: cfg.Auth.Anonymous,
		jwt:       cfg.Auth.JWT,
		ref:       newRefusals(),
		now:       time.Now,
	}
	if g.path == "" {
		g.path = "/ws"
	}
	g.logBucket.Init(refusalLogRate, refusalLogBurst)
	g.Update(cfg.Limits, cfg.WS.AllowedOrigins)
	return g
}

// Update applies new limits and a new Origin allow-list (SIGHUP) without
// dropping anyone: connections over a lowered cap stay, and new handshakes
// are refused until enough have closed. Per-IP handshake buckets restart
// full under new rate settings. Connections admitted while no per-IP limit
// was configured are not counted against a per-IP limit enabled later.
func (g *Gate) Update(limits config.Limits, origins []string) {
	old := g.state.Load()
	st := &gateState{perIP: limits.PerIPConnections, rate: limits.HandshakeRate, burst: limits.HandshakeBurst}
	if old != nil {
		st.gen = old.gen + 1
	}
	if st.burst <= 0 && st.rate > 0 {
		st.burst = max(1, int(2*st.rate))
	}
	for _, o := range origins {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		if o == "*" {
			st.origins = nil
			break
		}
		if o != "" {
			st.origins = append(st.origins, o)
		}
	}
	g.conns.SetLimit(limits.MaxConnections)
	g.state.Store(st)
}

// SetDraining turns draining on or off; while on, every handshake gets 503
// draining.
func (g *Gate) SetDraining(on bool) { g.draining.Store(on) }

// Draining reports whether the Gate is draining.
func (g *Gate) Draining() bool { return g.draining.Load() }

// Connections returns the number of connections admitted and not yet
// released.
func (g *Gate) Connections() int { return g.conns.InUse() }

// Check runs the admission checks on h. On success it returns the identity
// and a nil Refusal, and the connection holds a slot (node-wide and per
// source address) until Release(h.Remote.Addr()) is called, exactly once,
// when the connection closes; the gateway must also call Release when it
// fails to complete an admitted upgrade. On refusal it holds nothing.
//
// Check verifies signatures and, with a JWKS URL, may wait up to 3 s for a
// rate-limited JWKS refresh when a token names an unknown kid: call it off
// the poller goroutines, as netpoll's Gatekeeper contract already requires.
func (g *Gate) Check(h *Handshake) (Identity, *Refusal) {
	if g.draining.Load() {
		return Identity{}, g.refuse(h, g.ref.draining, nil)
	}
	if !g.conns.TryAcquire() {
		return Identity{}, g.refuse(h, g.ref.atCapacity, nil)
	}
	if h.Path != g.path {
		g.conns.Release()
		return Identity{}, g.refuse(h, g.ref.notFound, nil)
	}
	st := g.state.Load()
	addr := h.Remote.Addr()
	tracked := st.tracksIPs()
	if tracked {
		switch g.ips.acquire(addr, g.now(), st) {
		case CodeTooManyConnections:
			g.conns.Release()
			return Identity{}, g.refuse(h, g.ref.tooMany, nil)
		case CodeRateLimited:
			g.conns.Release()
			return Identity{}, g.refuse(h, g.ref.rateLimited, nil)
		}
	}
	if r, err := g.admit(h, st); r != nil {
		g.conns.Release()
		if tracked {
			g.ips.release(addr, g.now())
		}
		return Identity{}, g.refuse(h, r, err)
	}
	id, r, err := g.identify(h)
	if r != nil {
		g.conns.Release()
		if tracked {
			g.ips.release(addr, g.now())
		}
		return Identity{}, g.refuse(h, r, err)
	}
	return id, nil
}

// admit runs the Origin check.
func (g *Gate) admit(h *Handshake, st *gateState) (*Refusal, error) {
	if st.origins == nil {
		return nil, nil
	}
	vals := h.Header["Origin"]
	if len(vals) == 0 {
		// Browsers always send Origin on a WebSocket handshake; a client
		// that does not is not a browser page, and cross-site WebSocket
		// hijacking (what the allow-list prevents) needs a browser.
		return nil, nil
	}
	o := strings.TrimRight(strings.TrimSpace(vals[0]), "/")
	for _, allowed := range st.origins {
		if strings.EqualFold(o, allowed) {
			return nil, nil
		}
	}
	return g.ref.origin, errOrigin
}

// identify extracts and verifies the token, or lets an anonymous handshake
// in when allowed.
func (g *Gate) identify(h *Handshake) (Identity, *Refusal, error) {
	tok, ok := ExtractToken(h.Header, h.RawQuery, g.jwt)
	if !ok {
		if g.anonymous {
			return Identity{User: AnonymousUser, Anonymous: true}, nil, nil
		}
		return Identity{}, g.ref.unauthorized, errNoToken
	}
	id, err := g.VerifyToken(tok)
	if err != nil {
		return Identity{}, g.ref.unauthorized, err
	}
	return id, nil, nil
}

// VerifyToken decides on a token found in a handshake, as Check does (the
// check-token subcommand calls it too, so that it cannot decide otherwise):
// the identity, or the reason it is refused with 401, for the log.
func (g *Gate) VerifyToken(tok string) (Identity, error) {
	if g.v == nil {
		return Identity{}, errNoVerifier
	}
	return g.v.Verify(tok)
}

// Release gives back the slots of a connection admitted by Check, from
// address addr. Call it exactly once per successful Check.
func (g *Gate) Release(addr netip.Addr) {
	g.conns.Release()
	// Always look the address up: per-IP limits may have been switched off
	// since this connection was counted. An uncounted address is a miss.
	g.ips.release(addr, g.now())
}

// Reject refuses a handshake that Check admitted, for a reason found after
// it (the gateway: resuming another user's session, session store down). It
// gives back the slots Check took, logs the refusal as Check logs its own,
// and returns the table's row for code.
func (g *Gate) Reject(h *Handshake, code string, reason error) *Refusal {
	g.Release(h.Remote.Addr())
	return g.refuse(h, RefusalOf(code), reason)
}

// refuse logs a refusal and returns r. 401s and 403 forbidden are logged at
// Info, 503 store_unavailable at Warn, with the reason and the remote
// address (rate-limited); the rest at Debug.
func (g *Gate) refuse(h *Handshake, r *Refusal, reason error) *Refusal {
	level := slog.LevelInfo
	if r.Code == CodeStoreUnavailable {
		level = slog.LevelWarn
	}
	if r.Status == http.StatusUnauthorized || r.Code == CodeForbidden || r.Code == CodeStoreUnavailable {
		if !g.logBucket.Allow(g.now()) {
			g.logSuppressed.Add(1)
			return r
		}
		attrs := []slog.Attr{
			slog.String("remote", remoteString(h.Remote)),
			slog.Int("status", r.Status),
			slog.String("code", r.Code),
			slog.Any("err", reason),
		}
		if n := g.logSuppressed.Swap(0); n > 0 {
			attrs = append(attrs, slog.Int64("suppressed", n))
		}
		g.log.LogAttrs(context.Background(), level, "handshake refused", attrs...)
		return r
	}
	if ctx := context.Background(); g.log.Enabled(ctx, slog.LevelDebug) {
		g.log.LogAttrs(ctx, slog.LevelDebug, "handshake refused",
			slog.String("remote", remoteString(h.Remote)),
			slog.Int("status", r.Status),
			slog.String("code", r.Code))
	}
	return r
}

// remoteString formats a client address for the log: without the port when
// it is unknown (an address from X-Forwarded-For has none).
func remoteString(a netip.AddrPort) string {
	if a.Port() == 0 {
		return a.Addr().String()
	}
	return a.String()
}
