package lifecycle

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/internal/logbuf"
)

// recorder records what a drain or Run did, stamped with the time since
// the recorder was made (fake time inside a synctest bubble).
type recorder struct {
	mu     sync.Mutex
	start  time.Time
	events []string
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

func (r *recorder) add(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s@%s", what, time.Since(r.start)))
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// recordingNotifier is a Notifier whose messages go to r (as "notify:X")
// instead of a socket.
func recordingNotifier(r *recorder, log *slog.Logger) *Notifier {
	n := NewNotifier("test", log)
	n.sink = func(_, state string) error {
		r.add("notify:" + strings.SplitN(state, "\n", 2)[0])
		return nil
	}
	return n
}

// testLogger logs to the test's output and to the returned buffer.
func testLogger(t *testing.T) (*slog.Logger, *logbuf.Buffer) {
	buf := &logbuf.Buffer{}
	h := slog.NewTextHandler(&teeWriter{a: buf, b: t.Output()}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), buf
}

type teeWriter struct {
	mu   sync.Mutex
	a, b interface{ Write([]byte) (int, error) }
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.b.Write(p)
	return w.a.Write(p)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
