// Package redistest starts real Redis topologies for tests: a Redis
// Cluster (3 masters with one replica each) and a Sentinel setup (one
// master, one replica, three Sentinels), on loopback ports of a given
// range, in a temporary directory removed by Close. It drives
// redis-server and redis-cli; with CI=true their absence is a failure.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require returns nil when redis-server and redis-cli are installed. A
// test calls Skip(t, err) with the result: a failure under CI=true.
func Require() error {
	for _, b := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed: %w", b, err)
		}
	}
	return nil
}

// SkipUnlessInstalled skips t when redis-server or redis-cli is missing,
// or fails it with CI=true.
func SkipUnlessInstalled(t testing.TB) {
	t.Helper()
	if err := Require(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v (.ci/run installs redis-server, which brings redis-cli)", err)
		}
		t.Skip(err)
	}
}

// Server is one redis-server (or Sentinel) process.
type Server struct {
	Port int
	Addr string // 127.0.0.1:Port
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// Kill SIGKILLs the server and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-s.done
}

// Alive reports whether the process still runs.
func (s *Server) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Cli runs redis-cli against the server and returns its trimmed output.
func (s *Server) Cli(args ...string) (string, error) {
	return cli(s.Port, args...)
}

func cli(port int, args ...string) (string, error) {
	out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("redis-cli -p %d %s: %w: %s", port, strings.Join(args, " "), err, s)
	}
	if strings.HasPrefix(s, "ERR") || strings.HasPrefix(s, "(error)") {
		return s, fmt.Errorf("redis-cli -p %d %s: %s", port, strings.Join(args, " "), s)
	}
	return s, nil
}

// info returns the INFO section as a map ("cluster": CLUSTER INFO).
func (s *Server) info(section string) map[string]string {
	args := []string{"INFO", section}
	if section == "cluster" {
		args = []string{"CLUSTER", "INFO"}
	}
	out, err := s.Cli(args...)
	if err != nil {
		return nil
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// WaitReplicasSynced waits until every replica of this master has
// acknowledged the master's replication stream up to where it is now
// (slaveN offset >= the master_repl_offset read first): whatever was
// written before the call survives a kill of the master. WAIT would not
// do: it only covers the writes of the connection that sends it.
func (s *Server) WaitReplicasSynced(timeout time.Duration) error {
	want := int64(-1)
	return waitFor(timeout, "replicas in sync with "+s.Addr, func() bool {
		r := s.info("replication")
		if want < 0 {
			w, err := strconv.ParseInt(r["master_repl_offset"], 10, 64)
			if err != nil {
				return false
			}
			want = w
		}
		n, _ := strconv.Atoi(r["connected_slaves"])
		if n == 0 {
			return false
		}
		for i := range n {
			var off int64 = -1
			for _, kv := range strings.Split(r["slave"+strconv.Itoa(i)], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok && k == "offset" {
					off, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if off < want {
				return false
			}
		}
		return true
	})
}

// Role is "master" or "slave" (empty when it does not answer).
func (s *Server) Role() string { return s.info("replication")["role"] }

// LogTail returns the end of the server's log (for failure messages).
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// start runs redis-server with args (a config file first, for Sentinels)
// and waits until it answers PING.
func start(dir string, port int, args ...string) (*Server, error) {
	s := &Server{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{}),
		log: filepath.Join(dir, fmt.Sprintf("redis-%d.log", port))}
	base := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no",
		"--logfile", s.log, "--daemonize", "no", "--protected-mode", "no"}
	var argv []string
	if len(args) > 0 && strings.HasSuffix(args[0], ".conf") {
		argv = append([]string{args[0]}, append(base, args[1:]...)...)
	} else {
		argv = append(base, args...)
	}
	s.cmd = exec.Command("redis-server", argv...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server on %d: %w", port, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, err := s.Cli("PING"); err == nil && out == "PONG" {
			return s, nil
		}
		if !s.Alive() || time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("redis-server on %d did not answer PING: %s", port, s.LogTail())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// startT starts a topology (what) for one test: skipped (failed under
// CI=true) without redis-server, closed at the end of the test.
func startT[T interface{ Close() }](t testing.TB, what string, start func() (T, error)) T {
	t.Helper()
	SkipUnlessInstalled(t)
	v, err := start()
	if err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	t.Cleanup(v.Close)
	return v
}

// startOver calls start up to three times: a port free a moment ago may be
// taken by an outgoing connection before redis-server binds it, and the
// next try picks other ports.
func startOver[T any](start func() (T, error)) (v T, err error) {
	for range 3 {
		if v, err = start(); err == nil {
			return v, nil
		}
	}
	return v, err
}

// prepare is the start of a topology: the binaries are there, a new
// temporary directory named after prefix, n free ports in base..base+99.
func prepare(prefix string, base, n int) (dir string, ports []int, err error) {
	if err := Require(); err != nil {
		return "", nil, err
	}
	if ports, err = freePorts(base, 100, n); err != nil {
		return "", nil, err
	}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", nil, err
	}
	return dir, ports, nil
}

// freePorts returns n ports of base..base+span-1 free a moment ago. They
// need not be consecutive: outgoing connections of the machine take
// ephemeral ports from the same numbers.
func freePorts(base, span, n int) ([]int, error) {
	var out []int
	for p := base; p < base+span && len(out) < n; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, p)
	}
	if len(out) < n {
		return nil, fmt.Errorf("no %d free ports between %d and %d", n, base, base+span-1)
	}
	return out, nil
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	return nil
}

// Single is one standalone redis-server in its own directory.
type Single struct {
	*Server
	dir string
}

// StartSingle starts one redis-server on a free port of base..base+99
// with extra arguments (ACL users, ...).
func StartSingle(base int, args ...string) (*Single, error) {
	if err := Require(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redis-single-")
	if err != nil {
		return nil, err
	}
	// A port free a moment ago may be taken by an outgoing connection
	// before redis-server binds it: try another.
	for range 3 {
		var ports []int
		if ports, err = freePorts(base, 100, 1); err != nil {
			break
		}
		var s *Server
		if s, err = start(dir, ports[0], args...); err == nil {
			return &Single{Server: s, dir: dir}, nil
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

// StartSingleT is StartSingle for one test.
func StartSingleT(t testing.TB, base int, args ...string) *Single {
	t.Helper()
	SkipUnlessInstalled(t)
	s, err := StartSingle(base, args...)
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Close kills the server and removes its directory.
func (s *Single) Close() {
	s.Kill()
	os.RemoveAll(s.dir)
}
