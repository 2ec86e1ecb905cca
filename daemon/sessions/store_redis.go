package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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

// keys of a session: the hash (user, times, context, holder, epoch, pos:
// the newest position, dlv: the delivered cursor, lb: the log's bytes), the
// history list, the replay log list, the set of nodes that held it.
func (s *RedisStore) kSession(id string) string { return s.prefix + "{" + id + "}" }
func (s *RedisStore) kHistory(id string) string { return s.prefix + "{" + id + "}:h" }
func (s *RedisStore) kLog(id string) string     { return s.prefix + "{" + id + "}:l" }
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

// luaAppend2 numbers a terminal (HINCRBY pos), appends it to the log,
// trims the log by count and bytes (the hash's lb field counts them),
// refreshes the TTLs, and returns {pos, holder node, holder conn, epoch};
// {-1} if the session is gone. An empty head and tail append ARGV[6]
// (a count) lost positions instead. With ARGV[7] (the appending node's
// field of the session hash, "o:<node>") and ARGV[8] (the append's
// unique id), the append is done once whatever the number of attempts:
// the field keeps "<id> <pos>" of the node's last append, and an attempt
// whose id is there already (an earlier one ran, its answer lost to a
// timeout) appends nothing and returns that position.
// KEYS: session, log. ARGV: head, tail, max, max bytes, ttl ms, gaps,
// once field, once id ("" "": no once).
var luaAppend2 = rueidis.NewLuaScript(`
local once = ARGV[7] ~= ''
if once then
  local v = redis.call('HGET', KEYS[1], ARGV[7])
  if v and string.sub(v, 1, #ARGV[8] + 1) == ARGV[8] .. ' ' then
    local h = redis.call('HMGET', KEYS[1], 'hnode', 'hconn', 'epoch')
    return {tonumber(string.sub(v, #ARGV[8] + 2)), h[1] or '', h[2] or '0', h[3] or '0'}
  end
end
` + luaAppendBody)

// luaAppendBody is luaAppend2's text after its once check; luaRunTerm
// (node loss) runs it after its own checks, with once false.
const luaAppendBody = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local pos, n, lb
local gaps = tonumber(ARGV[6])
if gaps > 0 then
  for i = 1, gaps do
    pos = redis.call('HINCRBY', KEYS[1], 'pos', 1)
    n = redis.call('RPUSH', KEYS[2], '')
  end
  lb = tonumber(redis.call('HGET', KEYS[1], 'lb') or '0')
else
  pos = redis.call('HINCRBY', KEYS[1], 'pos', 1)
  local e = ARGV[1] .. pos .. ARGV[2]
  n = redis.call('RPUSH', KEYS[2], e)
  lb = redis.call('HINCRBY', KEYS[1], 'lb', #e)
end
local max, maxb = tonumber(ARGV[3]), tonumber(ARGV[4])
local dropped = 0
while n > max or (lb > maxb and n > 1) do
  local old = redis.call('LPOP', KEYS[2])
  lb = lb - #old
  n = n - 1
  dropped = dropped + 1
end
if dropped > 0 then redis.call('HSET', KEYS[1], 'lb', lb) end
if once then redis.call('HSET', KEYS[1], ARGV[7], ARGV[8] .. ' ' .. pos) end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'hnode', 'hconn', 'epoch')
return {pos, h[1] or '', h[2] or '0', h[3] or '0'}`

// Append implements Store: one round trip (a Lua script).
func (s *RedisStore) Append(ctx context.Context, id string, msg []byte, at int) (Appended, error) {
	return s.appendOnce(ctx, id, msg, at, onceKey{})
}

// onceKey makes an append idempotent (luaAppend2): field is the appending
// node's field of the session hash, id unique to the terminal (or gap)
// among every append of that node, the same for each attempt of it. The
// zero onceKey appends at every attempt.
type onceKey struct{ field, id string }

// appendOnce is Append, done once per k across attempts: an attempt after
// one whose answer was lost (a timeout: the script may have run) returns
// the position that one took instead of appending again. Only the node's
// last append is remembered: k must be that node's newest append to the
// session (a node retries a session's oldest waiting terminal before it
// appends anything else to that session).
func (s *RedisStore) appendOnce(ctx context.Context, id string, msg []byte, at int, k onceKey) (Appended, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	head, tail := events.SplitPos(msg, at)
	r, err := luaAppend2.Exec(ctx, s.c, []string{s.kSession(id), s.kLog(id)},
		[]string{string(head), string(tail), strconv.Itoa(s.lim.replayMax),
			strconv.FormatInt(s.lim.replayBytes, 10), s.ttlMS(), "0", k.field, k.id}).ToArray()
	if err != nil {
		return Appended{}, fmt.Errorf("append to the log of %s: %w", id, err)
	}
	p, _ := r[0].AsInt64()
	if p < 0 {
		return Appended{}, notFound(id)
	}
	h, err := holderOf(r[1:])
	if err != nil {
		return Appended{}, err
	}
	pos := uint64(p)
	return Appended{Pos: pos, Msg: events.AppendPos(make([]byte, 0, len(msg)+24), msg, at, pos), Holder: h}, nil
}

// AppendGap implements Store.
func (s *RedisStore) AppendGap(ctx context.Context, id string, n int) error {
	return s.appendGapOnce(ctx, id, n, onceKey{})
}

// appendGapOnce is AppendGap, done once per k across attempts (see
// appendOnce); each attempt of k must give the same n.
func (s *RedisStore) appendGapOnce(ctx context.Context, id string, n int, k onceKey) error {
	if n <= 0 {
		return nil
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	r, err := luaAppend2.Exec(ctx, s.c, []string{s.kSession(id), s.kLog(id)},
		[]string{"", "", strconv.Itoa(s.lim.replayMax), strconv.FormatInt(s.lim.replayBytes, 10),
			s.ttlMS(), strconv.Itoa(n), k.field, k.id}).ToArray()
	if err != nil {
		return fmt.Errorf("append gap to the log of %s: %w", id, err)
	}
	if p, _ := r[0].AsInt64(); p < 0 {
		return notFound(id)
	}
	return nil
}

// luaReadLog returns {pos, first position of the log, entries after
// ARGV[1]}; nil if the session is gone. KEYS: session, log.
var luaReadLog = rueidis.NewLuaScript(`
local p = redis.call('HGET', KEYS[1], 'pos')
if not redis.call('HGET', KEYS[1], 'user') then return false end
local pos = tonumber(p or '0')
local n = redis.call('LLEN', KEYS[2])
local first = pos - n + 1
local from = tonumber(ARGV[1]) - first + 1
if from < 0 then from = 0 end
return {pos, first, redis.call('LRANGE', KEYS[2], from, -1)}`)

// ReadLog implements Store.
func (s *RedisStore) ReadLog(ctx context.Context, id string, after uint64) ([]LogEntry, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	r, err := luaReadLog.Exec(ctx, s.c, []string{s.kSession(id), s.kLog(id)},
		[]string{strconv.FormatUint(after, 10)}).ToArray()
	if rueidis.IsRedisNil(err) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read the log of %s: %w", id, err)
	}
	entries, _, err := logOf(r, after)
	return entries, err
}

// logOf decodes {pos, first, entries} into log entries after `after`.
func logOf(r []rueidis.RedisMessage, after uint64) ([]LogEntry, uint64, error) {
	pos, _ := r[0].AsInt64()
	first, _ := r[1].AsInt64()
	v, err := r[2].AsStrSlice()
	if err != nil {
		return nil, 0, fmt.Errorf("decode log: %w", err)
	}
	p := max(uint64(first), after+1)
	out := make([]LogEntry, 0, len(v))
	for _, m := range v {
		out = append(out, LogEntry{Pos: p, Msg: []byte(m)})
		p++
	}
	return out, uint64(pos), nil
}

// luaCursor raises the delivered cursor to min(ARGV[1], pos), and with
// ARGV[2] = "1" (an ack) drops the log entries up to it.
// KEYS: session, log.
var luaCursor = rueidis.NewLuaScript(`
local p = redis.call('HGET', KEYS[1], 'pos')
if not redis.call('HGET', KEYS[1], 'user') then return -1 end
local pos = tonumber(p or '0')
local a = math.min(tonumber(ARGV[1]), pos)
local d = tonumber(redis.call('HGET', KEYS[1], 'dlv') or '0')
if a > d then redis.call('HSET', KEYS[1], 'dlv', a) end
if ARGV[2] == '1' then
  local n = redis.call('LLEN', KEYS[2])
  local drop = a - (pos - n + 1) + 1
  if drop > 0 then
    local lb = 0
    for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, drop - 1)) do lb = lb + #e end
    redis.call('LTRIM', KEYS[2], drop, -1)
    redis.call('HINCRBY', KEYS[1], 'lb', -lb)
  end
end
return 1`)

func (s *RedisStore) cursor(ctx context.Context, id string, pos uint64, ack bool) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	a := "0"
	if ack {
		a = "1"
	}
	n, err := luaCursor.Exec(ctx, s.c, []string{s.kSession(id), s.kLog(id)},
		[]string{strconv.FormatUint(pos, 10), a}).AsInt64()
	if err != nil {
		return fmt.Errorf("move the delivered cursor of %s: %w", id, err)
	}
	if n < 0 {
		return notFound(id)
	}
	return nil
}

// Delivered implements Store.
func (s *RedisStore) Delivered(ctx context.Context, id string, pos uint64) error {
	return s.cursor(ctx, id, pos, false)
}

// Ack implements Store.
func (s *RedisStore) Ack(ctx context.Context, id string, pos uint64) error {
	return s.cursor(ctx, id, pos, true)
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
// raises the delivered cursor, refreshes every TTL, and returns
// {epoch, {nodes before}, pos, first, {log entries after the resume
// point}, resume point}; nil if the session is gone, {-1} if it is
// another user's.
// The 7th element lists the request ids recorded as running on any
// replica (the node-loss markers, read in the same step: a request is
// either listed there or its terminal is in the log).
// KEYS: session, log, nodes, history, runs. ARGV: node, conn, ttl ms,
// now ms, user, has last ("1"/"0"), last, delivered.
var luaClaim = rueidis.NewLuaScript(`
local u = redis.call('HGET', KEYS[1], 'user')
if not u then return false end
if u ~= ARGV[5] then return {-1} end
local ep = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'hnode', ARGV[1], 'hconn', ARGV[2], 'updated', ARGV[4])
local nodes = redis.call('SMEMBERS', KEYS[3])
redis.call('SADD', KEYS[3], ARGV[1])
local pos = tonumber(redis.call('HGET', KEYS[1], 'pos') or '0')
local dlv = math.max(tonumber(redis.call('HGET', KEYS[1], 'dlv') or '0'), math.min(tonumber(ARGV[8]), pos))
local after = dlv
if ARGV[6] == '1' then
  after = math.min(tonumber(ARGV[7]), pos)
  dlv = math.max(dlv, after)
end
redis.call('HSET', KEYS[1], 'dlv', dlv)
local n = redis.call('LLEN', KEYS[2])
local first = pos - n + 1
local from = after - first + 1
if from < 0 then from = 0 end
local entries = redis.call('LRANGE', KEYS[2], from, -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return {ep, nodes, pos, first, entries, after, redis.call('HKEYS', KEYS[5])}`)

// Claim implements Store.
func (s *RedisStore) Claim(ctx context.Context, id, user, node string, conn uint64, from Resume) (Claim, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	hasLast := "0"
	if from.HasLast {
		hasLast = "1"
	}
	r, err := luaClaim.Exec(ctx, s.c,
		[]string{s.kSession(id), s.kLog(id), s.kNodes(id), s.kHistory(id), s.kRun(id)},
		[]string{node, strconv.FormatUint(conn, 10), s.ttlMS(), nowMS(), user, hasLast,
			strconv.FormatUint(from.Last, 10), strconv.FormatUint(from.Delivered, 10)}).ToArray()
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
	after, _ := r[5].AsInt64()
	c.After = uint64(after)
	entries, pos, err := logOf(r[2:5], c.After)
	if err != nil {
		return Claim{}, fmt.Errorf("claim session %s: %w", id, err)
	}
	c.Pos = pos
	c.Log, c.Missed = replayOf(slices.Values(entries), c.After, pos)
	if len(r) > 6 {
		c.Running, _ = r[6].AsStrSlice()
	}
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
		s.c.B().Pexpire().Key(s.kLog(id)).Milliseconds(ms).Build(),
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
