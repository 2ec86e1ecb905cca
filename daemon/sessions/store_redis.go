package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// DefaultOpTimeout bounds one Redis operation when the caller's context has
// no earlier deadline: with Redis down, calls fail this fast.
const DefaultOpTimeout = time.Second

// RedisStore is the Store shared by replicas. Each session is a few keys
// with the session id as hash tag, so that every Lua script touches a single
// cluster slot (docs/sessions.md lists them). Every operation is one round
// trip (a Lua script or a pipelined DoMulti), except PatchContext, which is
// a read then a compare-and-set script (retried on conflict).
type RedisStore struct {
	c         rueidis.Client
	prefix    string
	lim       limits
	opTimeout time.Duration
	log       *slog.Logger
	closeOnce sync.Once
}

// RedisOptions tunes a RedisStore beyond config.Sessions.
type RedisOptions struct {
	// Prefix starts every key and channel name. Default "orch:".
	Prefix string
	// OpTimeout bounds each operation. Default DefaultOpTimeout.
	OpTimeout time.Duration
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Prefix == "" {
		o.Prefix = "orch:"
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	return o
}

// OpenRedisStore dials Redis and returns the store.
func OpenRedisStore(cfg config.Sessions, opts RedisOptions, log *slog.Logger) (*RedisStore, error) {
	opts = opts.withDefaults()
	c, err := newRedisClient(cfg, opts.OpTimeout, false)
	if err != nil {
		return nil, err
	}
	return &RedisStore{c: c, prefix: opts.Prefix, lim: limitsOf(cfg), opTimeout: opts.OpTimeout, log: log}, nil
}

// keys of a session: the hash, the history list, the outbox list, the set
// of nodes that held it.
func (s *RedisStore) kSession(id string) string { return s.prefix + "{" + id + "}" }
func (s *RedisStore) kHistory(id string) string { return s.prefix + "{" + id + "}:h" }
func (s *RedisStore) kOutbox(id string) string  { return s.prefix + "{" + id + "}:o" }
func (s *RedisStore) kNodes(id string) string   { return s.prefix + "{" + id + "}:n" }

func (s *RedisStore) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opTimeout)
}

func (s *RedisStore) ttlMS() string { return strconv.FormatInt(s.lim.ttl.Milliseconds(), 10) }

func nowMS() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) }

func notFound(id string) error { return fmt.Errorf("session %s: %w", id, ErrNotFound) }

// Get implements Store: HMGET and LRANGE pipelined in one round trip.
func (s *RedisStore) Get(ctx context.Context, id string) (*Session, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	r := s.c.DoMulti(ctx,
		s.c.B().Hmget().Key(s.kSession(id)).Field("user", "created", "updated", "ctx").Build(),
		s.c.B().Lrange().Key(s.kHistory(id)).Start(0).Stop(-1).Build())
	f, err := r[0].ToArray()
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	hist, err := r[1].AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("get history of %s: %w", id, err)
	}
	user, err := f[0].ToString()
	if rueidis.IsRedisNil(err) {
		return nil, notFound(id)
	}
	created, _ := f[1].AsInt64()
	updated, _ := f[2].AsInt64()
	c, _ := f[3].ToString()
	sess := &Session{ID: id, User: user, Created: time.UnixMilli(created), Updated: time.UnixMilli(updated),
		Context: json.RawMessage(c), History: make([]events.Turn, 0, len(hist))}
	if len(sess.Context) == 0 {
		sess.Context = json.RawMessage("{}")
	}
	for _, h := range hist {
		var t events.Turn
		if err := json.Unmarshal([]byte(h), &t); err != nil {
			return nil, fmt.Errorf("decode history of %s: %w", id, err)
		}
		sess.History = append(sess.History, t)
	}
	return sess, nil
}

// Owner implements Store.
func (s *RedisStore) Owner(ctx context.Context, id string) (string, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	u, err := s.c.Do(ctx, s.c.B().Hget().Key(s.kSession(id)).Field("user").Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", notFound(id)
	}
	if err != nil {
		return "", fmt.Errorf("get owner of %s: %w", id, err)
	}
	return u, nil
}

// Create implements Store: HSET and PEXPIRE pipelined.
func (s *RedisStore) Create(ctx context.Context, user string) (*Session, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	now := time.Now()
	id := NewID()
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	k := s.kSession(id)
	for _, r := range s.c.DoMulti(ctx,
		s.c.B().Hset().Key(k).FieldValue().FieldValue("user", user).FieldValue("created", ms).
			FieldValue("updated", ms).FieldValue("ctx", "{}").FieldValue("ver", "0").Build(),
		s.c.B().Pexpire().Key(k).Milliseconds(s.lim.ttl.Milliseconds()).Build()) {
		if err := r.Error(); err != nil {
			return nil, fmt.Errorf("create session: %w", err)
		}
	}
	t := time.UnixMilli(now.UnixMilli())
	return &Session{ID: id, User: user, Created: t, Updated: t, Context: json.RawMessage("{}")}, nil
}

// luaRestore creates the session hash only when it does not exist.
// KEYS: session. ARGV: user, now ms, ttl ms.
var luaRestore = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'created', ARGV[2], 'updated', ARGV[2], 'ctx', '{}', 'ver', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)

// Restore implements Store: one round trip.
func (s *RedisStore) Restore(ctx context.Context, id, user string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	ms := strconv.FormatInt(time.Now().UnixMilli(), 10)
	if err := luaRestore.Exec(ctx, s.c, []string{s.kSession(id)}, []string{user, ms, strconv.FormatInt(s.lim.ttl.Milliseconds(), 10)}).Error(); err != nil {
		return fmt.Errorf("restore session %s: %w", id, err)
	}
	return nil
}

// luaPatch sets the context if its version is still ARGV[1].
// KEYS: session. ARGV: expected version, new context, now ms, ttl ms.
var luaPatch = rueidis.NewLuaScript(`
local v = redis.call('HGET', KEYS[1], 'ver')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'ctx', ARGV[2], 'ver', tostring(tonumber(v) + 1), 'updated', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`)

// PatchContext implements Store: HMGET ctx+version, merge in Go (exact
// numbers, exact RFC 7386), then a compare-and-set script; retried when
// another writer got in between.
func (s *RedisStore) PatchContext(ctx context.Context, id string, patch json.RawMessage) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	k := s.kSession(id)
	for range 16 {
		f, err := s.c.Do(ctx, s.c.B().Hmget().Key(k).Field("ctx", "ver").Build()).ToArray()
		if err != nil {
			return fmt.Errorf("patch context of %s: %w", id, err)
		}
		ver, err := f[1].ToString()
		if rueidis.IsRedisNil(err) {
			return notFound(id)
		}
		cur, _ := f[0].ToString()
		next, err := MergePatch([]byte(cur), patch)
		if err != nil {
			return fmt.Errorf("patch context of %s: %w", id, err)
		}
		ok, err := luaPatch.Exec(ctx, s.c, []string{k}, []string{ver, string(next), nowMS(), s.ttlMS()}).AsInt64()
		if err != nil {
			return fmt.Errorf("patch context of %s: %w", id, err)
		}
		switch ok {
		case 1:
			return nil
		case -1:
			return notFound(id)
		}
	}
	return fmt.Errorf("patch context of %s: too many concurrent writers", id)
}

// luaAppend appends turns and trims the history.
// KEYS: session, history. ARGV: max, ttl ms, now ms, turns...
var luaAppend = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'updated', ARGV[3])
return 1`)

// AppendHistory implements Store.
func (s *RedisStore) AppendHistory(ctx context.Context, id string, turns []events.Turn) error {
	if len(turns) == 0 {
		return nil
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	args := make([]string, 0, 3+len(turns))
	args = append(args, strconv.Itoa(s.lim.historyMax), s.ttlMS(), nowMS())
	for _, t := range turns {
		b, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("encode turn: %w", err)
		}
		args = append(args, string(b))
	}
	n, err := luaAppend.Exec(ctx, s.c, []string{s.kSession(id), s.kHistory(id)}, args).AsInt64()
	if err != nil {
		return fmt.Errorf("append history of %s: %w", id, err)
	}
	if n < 0 {
		return notFound(id)
	}
	return nil
}

// luaPush appends to the outbox, trims it, and returns
// {dropped, holder node, holder conn, epoch}; {-1} if the session is gone.
// KEYS: session, outbox. ARGV: max, ttl ms, msgs...
var luaPush = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local len = redis.call('LLEN', KEYS[2])
local dropped = 0
if len > tonumber(ARGV[1]) then
  dropped = len - tonumber(ARGV[1])
  redis.call('LTRIM', KEYS[2], dropped, -1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'hnode', 'hconn', 'epoch')
return {dropped, h[1] or '', h[2] or '0', h[3] or '0'}`)

// PushOutbox implements Store.
func (s *RedisStore) PushOutbox(ctx context.Context, id string, msgs ...[]byte) (Holder, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	args := make([]string, 0, 2+len(msgs))
	args = append(args, strconv.Itoa(s.lim.outboxMax), s.ttlMS())
	for _, m := range msgs {
		args = append(args, string(m))
	}
	r, err := luaPush.Exec(ctx, s.c, []string{s.kSession(id), s.kOutbox(id)}, args).ToArray()
	if err != nil {
		return Holder{}, fmt.Errorf("push outbox of %s: %w", id, err)
	}
	dropped, _ := r[0].AsInt64()
	if dropped < 0 {
		return Holder{}, notFound(id)
	}
	if dropped > 0 {
		s.log.Warn("session outbox full, oldest messages dropped",
			slog.String("session", id), slog.Int64("dropped", dropped))
	}
	return holderOf(r[1:])
}

func holderOf(f []rueidis.RedisMessage) (Holder, error) {
	var h Holder
	var err error
	h.Node, _ = f[0].ToString()
	c, _ := f[1].ToString()
	e, _ := f[2].ToString()
	if c != "" {
		if h.Conn, err = strconv.ParseUint(c, 10, 64); err != nil {
			return Holder{}, fmt.Errorf("bad holder conn %q: %w", c, err)
		}
	}
	if e != "" {
		if h.Epoch, err = strconv.ParseUint(e, 10, 64); err != nil {
			return Holder{}, fmt.Errorf("bad holder epoch %q: %w", e, err)
		}
	}
	return h, nil
}

// luaDrain returns and deletes the outbox. KEYS: outbox.
var luaDrain = rueidis.NewLuaScript(`
local v = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return v`)

// DrainOutbox implements Store.
func (s *RedisStore) DrainOutbox(ctx context.Context, id string) ([][]byte, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	v, err := luaDrain.Exec(ctx, s.c, []string{s.kOutbox(id)}, nil).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("drain outbox of %s: %w", id, err)
	}
	return toBytes(v), nil
}

func toBytes(v []string) [][]byte {
	if len(v) == 0 {
		return nil
	}
	out := make([][]byte, len(v))
	for i, s := range v {
		out[i] = []byte(s)
	}
	return out
}

// luaClaim makes node/conn the holder, bumps the epoch, records the node,
// drains the outbox, refreshes every TTL, and returns
// {epoch, {nodes before}, {outbox}}; nil if the session is gone.
// {-1} if it is another user's.
// KEYS: session, outbox, nodes, history. ARGV: node, conn, ttl ms, now ms, user.
var luaClaim = rueidis.NewLuaScript(`
local u = redis.call('HGET', KEYS[1], 'user')
if not u then return false end
if u ~= ARGV[5] then return {-1} end
local ep = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'hnode', ARGV[1], 'hconn', ARGV[2], 'updated', ARGV[4])
local nodes = redis.call('SMEMBERS', KEYS[3])
redis.call('SADD', KEYS[3], ARGV[1])
local ob = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return {ep, nodes, ob}`)

// Claim implements Store.
func (s *RedisStore) Claim(ctx context.Context, id, user, node string, conn uint64) (Claim, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	r, err := luaClaim.Exec(ctx, s.c,
		[]string{s.kSession(id), s.kOutbox(id), s.kNodes(id), s.kHistory(id)},
		[]string{node, strconv.FormatUint(conn, 10), s.ttlMS(), nowMS(), user}).ToArray()
	if rueidis.IsRedisNil(err) {
		return Claim{}, notFound(id)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim session %s: %w", id, err)
	}
	var c Claim
	ep, err := r[0].AsInt64()
	if err != nil {
		return Claim{}, fmt.Errorf("claim session %s: %w", id, err)
	}
	if ep < 0 {
		return Claim{}, fmt.Errorf("claim session %s: %w", id, ErrForbidden)
	}
	c.Epoch = uint64(ep)
	nodes, _ := r[1].AsStrSlice()
	for _, n := range nodes {
		if n != node {
			c.Nodes = append(c.Nodes, n)
		}
	}
	ob, _ := r[2].AsStrSlice()
	c.Outbox = toBytes(ob)
	return c, nil
}

// Holder implements Store.
func (s *RedisStore) Holder(ctx context.Context, id string) (Holder, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	f, err := s.c.Do(ctx, s.c.B().Hmget().Key(s.kSession(id)).Field("user", "hnode", "hconn", "epoch").Build()).ToArray()
	if err != nil {
		return Holder{}, fmt.Errorf("get holder of %s: %w", id, err)
	}
	if f[0].IsNil() {
		return Holder{}, notFound(id)
	}
	return holderOf(f[1:])
}

// Touch implements Store: PEXPIRE of every key and the updated time,
// pipelined in one round trip.
func (s *RedisStore) Touch(ctx context.Context, id string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	ms := s.lim.ttl.Milliseconds()
	r := s.c.DoMulti(ctx,
		s.c.B().Pexpire().Key(s.kSession(id)).Milliseconds(ms).Build(),
		s.c.B().Pexpire().Key(s.kHistory(id)).Milliseconds(ms).Build(),
		s.c.B().Pexpire().Key(s.kOutbox(id)).Milliseconds(ms).Build(),
		s.c.B().Pexpire().Key(s.kNodes(id)).Milliseconds(ms).Build())
	for _, x := range r {
		if err := x.Error(); err != nil {
			return fmt.Errorf("touch session %s: %w", id, err)
		}
	}
	if n, _ := r[0].AsInt64(); n == 0 {
		return notFound(id)
	}
	return nil
}

// Ping implements Store.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.c.Do(ctx, s.c.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("redis unreachable: %w", err)
	}
	return nil
}

// Close closes the connections. Idempotent.
func (s *RedisStore) Close() error {
	s.closeOnce.Do(s.c.Close)
	return nil
}
