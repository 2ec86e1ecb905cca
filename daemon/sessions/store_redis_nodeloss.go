package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// Node-loss keys in Redis (docs/sessions.md, "Node loss"). Node-wide keys
// carry the hash tag {node:<name>}, a session's keys its own {<id>}, so
// every script touches one cluster slot:
//
//	<p>nodes                     set: names of the nodes that may hold runs
//	<p>{node:<name>}:alive       string: the live process's token, PX ttl
//	<p>{node:<name>}:inflight    hash: "<sid> <seq> <req>" -> "<token> <started ms> <route>[ <data>]"
//	<p>{<sid>}:run               hash: req -> token of the process running it
//	<p>{<sid>}:lost              hash: req -> token whose run a survivor ended
//
// A token is "<node>/<incarnation>": the incarnation is random per process,
// so a replica restarted under the same name is told apart from the
// process that crashed.

func (s *RedisStore) kNodeSet() string             { return s.prefix + "nodes" }
func (s *RedisStore) kAlive(node string) string    { return s.prefix + "{node:" + node + "}:alive" }
func (s *RedisStore) kInflight(node string) string { return s.prefix + "{node:" + node + "}:inflight" }
func (s *RedisStore) kRun(id string) string        { return s.prefix + "{" + id + "}:run" }
func (s *RedisStore) kLost(id string) string       { return s.prefix + "{" + id + "}:lost" }

// runField is the inflight hash field of run number seq (unique in the
// process), request req of session sid: "<sid> <seq> <req>". Neither sid
// nor seq has a space; req may. The number keeps a late removal of an
// ended run from deleting the entry of a newer run of the same id.
func runField(sid string, seq uint64, req string) string {
	return sid + " " + strconv.FormatUint(seq, 10) + " " + req
}

// runRecord is one entry of a node's inflight hash.
type runRecord struct {
	SID, Req, Route string
	Token           string
	Started         time.Time
	Data            []byte // the request's data when its route retries on node loss, else nil
	field, value    string // as stored, for the compare-and-delete
}

func parseRunRecord(field, value string) (runRecord, bool) {
	sid, rest, ok := strings.Cut(field, " ")
	if !ok || sid == "" {
		return runRecord{}, false
	}
	_, req, ok := strings.Cut(rest, " ")
	if !ok || req == "" {
		return runRecord{}, false
	}
	tok, rest, ok := strings.Cut(value, " ")
	if !ok || tok == "" {
		return runRecord{}, false
	}
	ms, rest, _ := strings.Cut(rest, " ")
	started, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return runRecord{}, false
	}
	route, data, hasData := strings.Cut(rest, " ")
	if route, err = url.PathUnescape(route); err != nil {
		return runRecord{}, false
	}
	rec := runRecord{SID: sid, Req: req, Route: route, Token: tok, Started: time.UnixMilli(started),
		field: field, value: value}
	if hasData {
		rec.Data = []byte(data)
	}
	return rec, true
}

// maybeRan reports whether a store call that failed with err may still
// have executed: anything but a refused or failed dial (the command was
// never sent).
func maybeRan(err error) bool {
	var op *net.OpError
	return !(errors.As(err, &op) && op.Op == "dial")
}

// runValue encodes an inflight entry; the route is path-escaped (a route
// name may hold a space), data (nil: none) comes last, verbatim.
func runValue(token string, started time.Time, route string, data []byte) string {
	v := token + " " + strconv.FormatInt(started.UnixMilli(), 10) + " " + url.PathEscape(route)
	if data != nil {
		v += " " + string(data)
	}
	return v
}

// luaRunEnd settles the normal end of a run: it reports 1 when the caller
// may write the request's terminal (the marker still named its token, and
// is deleted now; or it was never recorded), 0 when a survivor took the run
// over (its tombstone names the token; the late terminal must be dropped).
// KEYS: run, lost. ARGV: req, token.
var luaRunEnd = rueidis.NewLuaScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
return 1`)

// luaRunTerm settles a recorded run AND appends its terminal to the
// session's log in one script (one slot: every key is the session's), so
// that a marker leaves the store only together with the terminal that
// answers it: a process that dies before or after the script leaves
// either the marker (a survivor still finds it) or the terminal (in the
// log), never neither.
//
//   - mode "end" (the node running the request, its normal end): the
//     marker names this process's token: deleted, the terminal appended;
//     a survivor's tombstone names it: the tombstone is deleted and {-2}
//     returned (the late terminal is dropped); neither (never recorded):
//     appended; but when an earlier attempt of this very script may have
//     run with its answer lost (ARGV[10] "1": it timed out or the
//     connection broke), the log is searched for this terminal first
//     (same text around its position): found, {-4}, that attempt settled
//     the run and the terminal is in the log already; not found (the
//     store lost the marker with its data, a Redis restarted empty), it
//     is appended.
//   - mode "take" (a survivor, token: the dead process's): the marker must
//     still name the dead token, else {-3} (its node ended it or another
//     survivor took it); it is deleted, a tombstone left, and the
//     node_lost terminal appended. A session that expired answers {-1}
//     with the marker removed.
//
// Then luaAppendBody: {pos, holder node, holder conn, epoch} or {-1}.
// KEYS: session, log, run, lost. ARGV: head, tail, max, max bytes, ttl
// ms, "0", req, token, mode, maybe done ("1"/"0").
var luaRunTerm = rueidis.NewLuaScript(`
local req, tok = ARGV[7], ARGV[8]
local once = false
if ARGV[9] == 'take' then
  if redis.call('HGET', KEYS[3], req) ~= tok then return {-3} end
  redis.call('HDEL', KEYS[3], req)
  redis.call('HSET', KEYS[4], req, tok)
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
elseif redis.call('HGET', KEYS[3], req) == tok then
  redis.call('HDEL', KEYS[3], req)
elseif redis.call('HGET', KEYS[4], req) == tok then
  redis.call('HDEL', KEYS[4], req)
  return {-2}
elseif ARGV[10] == '1' then
  local h, t = ARGV[1], ARGV[2]
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if string.sub(e, 1, #h) == h and (#t == 0 or string.sub(e, -#t) == t) then return {-4} end
  end
end
` + luaAppendBody)

// luaRunSwap hands an orphaned run of a retry_on_node_loss route over to
// the survivor that runs it again: only when the marker still names the
// dead token, it is made to name the survivor's (whose inflight entry for
// the rerun is written before), and a tombstone is left for the dead
// token; 1 returned. The marker never leaves the store, so a survivor
// that dies before its rerun is recorded leaves a run the next survivor
// finds (in its own inflight hash). With ARGV[5] "1" (an earlier attempt
// of this survivor may have run, its answer lost), a marker already
// naming the survivor with the dead token's tombstone also answers 1.
// KEYS: run, lost. ARGV: req, dead token, survivor token, ttl ms, again.
var luaRunSwap = rueidis.NewLuaScript(`
local m = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == '1' and m == ARGV[3] and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then return 1 end
if m ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`)

// recordAdopted writes the inflight entries of reruns this node is about
// to take over (their markers are set by swapRun), in one HSET.
func (s *RedisStore) recordAdopted(ctx context.Context, node, token string, runs []*runRec) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	hs := s.c.B().Hset().Key(s.kInflight(node)).FieldValue()
	for _, r := range runs {
		hs = hs.FieldValue(runField(r.sid, r.seq, r.req), runValue(token, r.started, r.route, r.data))
	}
	if err := s.c.Do(ctx, hs.Build()).Error(); err != nil {
		return fmt.Errorf("record reruns on %s: %w", node, err)
	}
	return nil
}

// swapRun runs luaRunSwap: won reports whether the run is now this
// survivor's (token) to run again.
func (s *RedisStore) swapRun(ctx context.Context, sid, req, dead, token string, again bool) (won bool, err error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	a := "0"
	if again {
		a = "1"
	}
	n, err := luaRunSwap.Exec(ctx, s.c, []string{s.kRun(sid), s.kLost(sid)},
		[]string{req, dead, token, s.ttlMS(), a}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("hand run %s/%s over: %w", sid, req, err)
	}
	return n == 1, nil
}

// Outcomes of appendRun besides success and ErrNotFound.
var (
	// errRunDropped: a survivor had taken the run over (mode end): the
	// terminal was not appended and must be dropped.
	errRunDropped = errors.New("run taken over by a surviving replica: late terminal dropped")
	// errRunNotTaken: the run was settled already (mode take): by its
	// node's normal end or by another survivor.
	errRunNotTaken = errors.New("run already settled")
	// errRunSettled: the normal end found its run settled by an earlier
	// attempt whose answer was lost: the terminal is in the log (a
	// resume replays it), not appended twice.
	errRunSettled = errors.New("run settled by an earlier attempt: terminal already logged")
)

// appendRun is Append for the terminal of a recorded run (luaRunTerm):
// take false is the normal end by the process of token, take true a
// survivor's takeover of the dead token's run; maybeDone: an earlier
// attempt may have run (see luaRunTerm). One round trip.
func (s *RedisStore) appendRun(ctx context.Context, id string, msg []byte, at int, req, token string, take, maybeDone bool) (Appended, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	mode, rec := "end", "0"
	if take {
		mode = "take"
	}
	if maybeDone {
		rec = "1"
	}
	head, tail := events.SplitPos(msg, at)
	r, err := luaRunTerm.Exec(ctx, s.c, []string{s.kSession(id), s.kLog(id), s.kRun(id), s.kLost(id)},
		[]string{string(head), string(tail), strconv.Itoa(s.lim.replayMax),
			strconv.FormatInt(s.lim.replayBytes, 10), s.ttlMS(), "0", req, token, mode, rec}).ToArray()
	if err != nil {
		return Appended{}, fmt.Errorf("settle run %s/%s and log its terminal: %w", id, req, err)
	}
	p, _ := r[0].AsInt64()
	switch p {
	case -1:
		return Appended{}, notFound(id)
	case -2:
		return Appended{}, errRunDropped
	case -3:
		return Appended{}, errRunNotTaken
	case -4:
		return Appended{}, errRunSettled
	}
	if p < 0 || len(r) < 4 {
		return Appended{}, fmt.Errorf("settle run %s/%s: unexpected answer %d", id, req, p)
	}
	h, err := holderOf(r[1:])
	if err != nil {
		return Appended{}, err
	}
	pos := uint64(p)
	return Appended{Pos: pos, Msg: events.AppendPos(make([]byte, 0, len(msg)+24), msg, at, pos), Holder: h}, nil
}

// luaInflightDel deletes inflight entries whose value is still the one
// given and returns how many entries are left.
// KEYS: inflight. ARGV: field, value, field, value...
var luaInflightDel = rueidis.NewLuaScript(`
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return redis.call('HLEN', KEYS[1])`)

// refreshAlive sets the node's liveness key to token for ttl and registers
// the node, in one round trip. It returns the value the key held before
// ("" if none).
func (s *RedisStore) refreshAlive(ctx context.Context, node, token string, ttl time.Duration) (string, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	r := s.c.DoMulti(ctx,
		s.c.B().Set().Key(s.kAlive(node)).Value(token).Get().PxMilliseconds(ttl.Milliseconds()).Build(),
		s.c.B().Sadd().Key(s.kNodeSet()).Member(node).Build())
	prev, err := r[0].ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return "", fmt.Errorf("refresh liveness of %s: %w", node, err)
	}
	if err := r[1].Error(); err != nil {
		return "", fmt.Errorf("register node %s: %w", node, err)
	}
	return prev, nil
}

// dropAlive removes the node's liveness key (clean shutdown) and, when it
// has no run left, its registration.
func (s *RedisStore) dropAlive(ctx context.Context, node, token string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	r := s.c.DoMulti(ctx,
		s.c.B().Get().Key(s.kAlive(node)).Build(),
		s.c.B().Hlen().Key(s.kInflight(node)).Build())
	cur, err := r[0].ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return fmt.Errorf("read liveness of %s: %w", node, err)
	}
	if cur != token {
		return nil // another process of this name owns it now
	}
	left, err := r[1].AsInt64()
	if err != nil {
		return fmt.Errorf("count runs of %s: %w", node, err)
	}
	cmds := rueidis.Commands{s.c.B().Del().Key(s.kAlive(node)).Build()}
	if left == 0 {
		cmds = append(cmds, s.c.B().Srem().Key(s.kNodeSet()).Member(node).Build())
	}
	for _, x := range s.c.DoMulti(ctx, cmds...) {
		if err := x.Error(); err != nil {
			return fmt.Errorf("drop liveness of %s: %w", node, err)
		}
	}
	return nil
}

// recordRuns writes the inflight entries of runs begun on node and their
// per-session markers: the node's hash first, so that a marker never
// exists without the entry that lets a survivor find it. On one server
// that is one pipelined round trip (one connection runs the commands in
// order). On a Cluster the pipeline is split by slot and each shard's
// part is sent on its own, so the markers could land while the node's
// hash did not (a cancelled or failed write): there the hash is written
// first, in a round trip of its own, and the markers only once it is in.
// It reports, per run, whether its marker was written.
func (s *RedisStore) recordRuns(ctx context.Context, node, token string, runs []*runRec) []bool {
	ctx, cancel := s.op(ctx)
	defer cancel()
	hs := s.c.B().Hset().Key(s.kInflight(node)).FieldValue()
	for _, r := range runs {
		hs = hs.FieldValue(runField(r.sid, r.seq, r.req), runValue(token, r.started, r.route, r.data))
	}
	ok := make([]bool, len(runs))
	ttl := s.lim.ttl.Milliseconds()
	cmds := make(rueidis.Commands, 0, 1+2*len(runs))
	split := s.c.Mode() == rueidis.ClientModeCluster
	if split {
		if err := s.c.Do(ctx, hs.Build()).Error(); err != nil {
			return ok
		}
	} else {
		cmds = append(cmds, hs.Build())
	}
	first := len(cmds)
	for _, r := range runs {
		cmds = append(cmds,
			s.c.B().Hset().Key(s.kRun(r.sid)).FieldValue().FieldValue(r.req, token).Build(),
			s.c.B().Pexpire().Key(s.kRun(r.sid)).Milliseconds(ttl).Build())
	}
	res := s.c.DoMulti(ctx, cmds...)
	head := split || res[0].Error() == nil
	for i := range runs {
		ok[i] = head && res[first+2*i].Error() == nil
	}
	return ok
}

// endRun settles the normal end of a run (luaRunEnd, one round trip).
// owned reports whether the caller may write the terminal. The node's
// inflight entry is removed separately (clearEnded, batched).
func (s *RedisStore) endRun(ctx context.Context, token, sid, req string) (owned bool, err error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	n, err := luaRunEnd.Exec(ctx, s.c, []string{s.kRun(sid), s.kLost(sid)}, []string{req, token}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("settle end of %s/%s: %w", sid, req, err)
	}
	return n == 1, nil
}

// clearEnded removes the inflight entries of runs that ended on node, in
// one HDEL. An entry left behind (a crash before this) is harmless: its
// marker is gone, so a sweep takes nothing and removes it.
func (s *RedisStore) clearEnded(ctx context.Context, node string, fields []string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.c.Do(ctx, s.c.B().Hdel().Key(s.kInflight(node)).Field(fields...).Build()).Error(); err != nil {
		return fmt.Errorf("clear ended runs of %s: %w", node, err)
	}
	return nil
}

// nodeLive is a registered node's liveness as read by a sweep: the token
// of its live process ("" when its liveness has lapsed) and how long its
// key has left (negative: unknown).
type nodeLive struct {
	token string
	left  time.Duration
}

// nodeList returns the registered nodes and their liveness: SMEMBERS,
// then GET and PTTL of every node's key in one pipelined round trip.
func (s *RedisStore) nodeList(ctx context.Context) (map[string]nodeLive, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	names, err := s.c.Do(ctx, s.c.B().Smembers().Key(s.kNodeSet()).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make(map[string]nodeLive, len(names))
	if len(names) == 0 {
		return out, nil
	}
	cmds := make(rueidis.Commands, 0, 2*len(names))
	for _, n := range names {
		cmds = append(cmds, s.c.B().Get().Key(s.kAlive(n)).Build(), s.c.B().Pttl().Key(s.kAlive(n)).Build())
	}
	res := s.c.DoMulti(ctx, cmds...)
	for i, n := range names {
		tok, err := res[2*i].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("read liveness of %s: %w", n, err)
		}
		ms, err := res[2*i+1].AsInt64()
		if err != nil {
			return nil, fmt.Errorf("read liveness of %s: %w", n, err)
		}
		out[n] = nodeLive{token: tok, left: time.Duration(ms) * time.Millisecond} // -1 ms: no TTL, -2 ms: no key
	}
	return out, nil
}

// scanRuns returns node's inflight entries, HSCAN page by page.
func (s *RedisStore) scanRuns(ctx context.Context, node string) ([]runRecord, error) {
	var out []runRecord
	var cursor uint64
	for {
		octx, cancel := s.op(ctx)
		e, err := s.c.Do(octx, s.c.B().Hscan().Key(s.kInflight(node)).Cursor(cursor).Count(1000).Build()).AsScanEntry()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("scan runs of %s: %w", node, err)
		}
		for i := 0; i+1 < len(e.Elements); i += 2 {
			if rec, ok := parseRunRecord(e.Elements[i], e.Elements[i+1]); ok {
				out = append(out, rec)
			} else {
				// Unreadable: treat as settled so that it is removed.
				out = append(out, runRecord{field: e.Elements[i], value: e.Elements[i+1]})
			}
		}
		cursor = e.Cursor
		if cursor == 0 {
			return out, nil
		}
	}
}

// takeBatch bounds the takes (luaRunTerm, mode take) under way at once.
const takeBatch = 128

// clearRuns removes settled entries from node's inflight hash (only those
// still holding the value read) and returns how many entries are left.
func (s *RedisStore) clearRuns(ctx context.Context, node string, runs []runRecord) (int64, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	args := make([]string, 0, 2*len(runs))
	for _, r := range runs {
		args = append(args, r.field, r.value)
	}
	n, err := luaInflightDel.Exec(ctx, s.c, []string{s.kInflight(node)}, args).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("clear runs of %s: %w", node, err)
	}
	return n, nil
}

// forgetNode unregisters a node whose liveness lapsed and whose runs are
// all settled. If the node came back meanwhile (its key is set again), it
// is registered again, so that a partitioned node is never left out.
func (s *RedisStore) forgetNode(ctx context.Context, node string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.c.Do(ctx, s.c.B().Srem().Key(s.kNodeSet()).Member(node).Build()).Error(); err != nil {
		return fmt.Errorf("unregister node %s: %w", node, err)
	}
	res := s.c.DoMulti(ctx,
		s.c.B().Exists().Key(s.kAlive(node)).Build(),
		s.c.B().Hlen().Key(s.kInflight(node)).Build())
	alive, _ := res[0].AsInt64()
	left, _ := res[1].AsInt64()
	if alive > 0 || left > 0 {
		if err := s.c.Do(ctx, s.c.B().Sadd().Key(s.kNodeSet()).Member(node).Build()).Error(); err != nil {
			return fmt.Errorf("register node %s again: %w", node, err)
		}
	}
	return nil
}

// runningIn returns the request ids of session sid that a node has
// recorded as running (the markers), for a welcome's in-flight list.
func (s *RedisStore) runningIn(ctx context.Context, sid string) ([]string, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	ids, err := s.c.Do(ctx, s.c.B().Hkeys().Key(s.kRun(sid)).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("list runs of %s: %w", sid, err)
	}
	return ids, nil
}
