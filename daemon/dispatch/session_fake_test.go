package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
)

// testSession is a session record as dispatch sees it (Session), for the
// router's tests: the in-flight registry and the limiter state of
// sessions.Record, whose own tests cover it against this same contract.
type testSession struct {
	id, user string
	tat      atomic.Int64
	mu       sync.Mutex
	calls    map[string]context.CancelCauseFunc
	trace    atomic.Pointer[string]
}

func (s *testSession) setTraceID(id string) { s.trace.Store(&id) }

func (s *testSession) TraceID() string {
	if p := s.trace.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *testSession) ID() string               { return s.id }
func (s *testSession) User() string             { return s.user }
func (s *testSession) RateState() *atomic.Int64 { return &s.tat }

func (s *testSession) Register(id string, cancel context.CancelCauseFunc, max int) (dup, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.calls[id]; ok {
		return true, false
	}
	if len(s.calls) >= max {
		return false, true
	}
	if s.calls == nil {
		s.calls = map[string]context.CancelCauseFunc{}
	}
	s.calls[id] = cancel
	return false, false
}

func (s *testSession) Unregister(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calls, id)
	return len(s.calls)
}

func (s *testSession) Cancel(id string, cause error) bool {
	s.mu.Lock()
	c, ok := s.calls[id]
	s.mu.Unlock()
	if ok {
		c(cause)
	}
	return ok
}

func (s *testSession) CancelAll(cause error) {
	s.mu.Lock()
	var cs []context.CancelCauseFunc
	for _, c := range s.calls {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c(cause)
	}
}

func (s *testSession) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// session returns the test session id of user, known to the store's Each.
func (st *fakeStore) session(id, user string) *testSession {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := &testSession{id: id, user: user}
	st.sessions = append(st.sessions, s)
	return s
}

func (st *fakeStore) Each(fn func(Session)) {
	st.mu.Lock()
	ss := append([]*testSession(nil), st.sessions...)
	st.mu.Unlock()
	for _, s := range ss {
		fn(s)
	}
}

// Hold returns the test session id (made on first use).
func (st *fakeStore) Hold(id, user string) (Session, func()) {
	st.mu.Lock()
	for _, s := range st.sessions {
		if s.id == id {
			st.mu.Unlock()
			return s, func() {}
		}
	}
	st.mu.Unlock()
	return st.session(id, user), func() {}
}
