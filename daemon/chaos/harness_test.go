package chaos

// The daemon harness: the binary built once per test binary, a daemon
// subprocess with its config, logs, probes, metrics and /proc figures.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/internal/logbuf"
)

// secret is the HS256 key every daemon of the suite verifies tokens with.
const secret = "chaos-0123456789abcdef0123456789abcdef"

// daemonBin is the daemon built by TestMain.
var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	daemonBin = filepath.Join(dir, "orchestratord")
	args := []string{"build", "-o", daemonBin}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("CHAOS_RACE") == "1" {
		args = append(args, "-race")
		env = os.Environ()
	}
	cmd := exec.Command("go", append(args, "github.com/orchestratord/orchestratord/daemon/cmd/orchestratord")...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// long reports whether the long form runs (CHAOS_LONG=1).
func long() bool { return os.Getenv("CHAOS_LONG") == "1" }

// scale returns short in the short form and long in the long form.
func scale(short, long_ int) int {
	if long() {
		return long_
	}
	return short
}

// inCI reports whether missing infrastructure must fail the test.
func inCI() bool { return os.Getenv("CI") == "true" }

// need skips, or fails under CI=true, when a required program is missing.
func need(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is required (CI=true): %v", prog, err)
		}
		t.Skipf("%s not installed", prog)
	}
	return p
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eventually polls cond every 10ms until it is true or fails the test.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// poll polls cond every 10ms until it is true (true) or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// daemon is one orchestratord subprocess.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *logbuf.Buffer
	done   chan struct{}
	err    error
	client string // client listener host:port
	admin  string // admin listener host:port
	cfg    string // config file
	env    []string
}

// baseConfig is the config every scenario starts from: node, listeners,
// a short drain (unless extra has its own), warn logs; extra is appended.
func baseConfig(node, client, admin, extra string) string {
	drain := `drain:
  lb_grace: 100ms
  timeout: 3s
  reconnect_after: 100ms
`
	if strings.Contains("\n"+extra, "\ndrain:") {
		drain = ""
	}
	return fmt.Sprintf(`node: %s
listen:
  client: %q
  admin: %q
%slog:
  level: warn
%s`, node, client, admin, drain, extra)
}

// startDaemon writes the config (made by baseConfig from extra) and starts
// the daemon with ORCH_JWT_SECRET and env. It waits until /readyz is 200.
func startDaemon(t *testing.T, node, extra string, env ...string) *daemon {
	t.Helper()
	d := newDaemon(t, node, freeAddr(t), freeAddr(t), extra, env...)
	d.start()
	d.waitReady(15 * time.Second)
	return d
}

// newDaemon prepares a daemon without starting it.
func newDaemon(t *testing.T, node, client, admin, extra string, env ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, client: client, admin: admin, cfg: filepath.Join(t.TempDir(), "config.yaml"),
		env: append([]string{"ORCH_JWT_SECRET=" + secret}, env...)}
	if err := os.WriteFile(d.cfg, []byte(baseConfig(node, client, admin, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// start runs the process; it is killed at the end of the test, and its log
// is checked for panics and data races.
func (d *daemon) start() {
	t := d.t
	t.Helper()
	d.logs, d.done = &logbuf.Buffer{}, make(chan struct{})
	d.cmd = exec.Command(daemonBin, "serve", "--config", d.cfg)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ORCH_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") &&
			!strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	d.cmd.Env = append(env, d.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	logs, done, cmd := d.logs, d.done, d.cmd
	go func() {
		d.err = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		d.checkLog(logs)
		if t.Failed() {
			t.Logf("daemon %s (pid %d) log tail:\n%s", d.client, cmd.Process.Pid, tail(logs.String(), 40))
		}
	})
}

// checkLog fails the test when the log shows a panic or a data race.
func (d *daemon) checkLog(logs *logbuf.Buffer) {
	s := logs.String()
	for _, bad := range []string{"panic", "DATA RACE", "fatal error:"} {
		if strings.Contains(s, bad) {
			d.t.Errorf("daemon log contains %q:\n%s", bad, tail(s, 60))
			return
		}
	}
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// pid is the process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited reports whether the process has exited.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitReady waits until the admin /readyz answers 200.
func (d *daemon) waitReady(timeout time.Duration) {
	d.t.Helper()
	eventually(d.t, timeout, "daemon ready", func() bool {
		if d.exited() {
			d.t.Fatalf("daemon exited before it was ready: %v\n%s", d.err, tail(d.logs.String(), 30))
		}
		return httpStatus("http://"+d.admin+"/readyz", nil) == 200
	})
}

// signal sends sig to the daemon.
func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

// exitCode waits for the exit and returns the code (-1 when killed).
func (d *daemon) exitCode(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("daemon did not exit within %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

var httpc = &http.Client{Timeout: 5 * time.Second}

// httpStatus GETs url with the headers and returns the status (0 on error).
func httpStatus(url string, hdr http.Header) int {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metrics scrapes the admin /metrics and returns "name{labels}" → value
// (labels as printed by the exposition format).
func (d *daemon) metrics() (map[string]float64, error) {
	resp, err := httpc.Get("http://" + d.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// metric returns one series (0 when absent or unreadable).
func (d *daemon) metric(series string) float64 {
	m, err := d.metrics()
	if err != nil {
		return -1
	}
	return m[series]
}

// stats are the daemon's resource figures.
type stats struct {
	goroutines int
	fds        int
	rssKB      int // VmRSS
	heapKB     int // go_memstats_heap_inuse_bytes after a forced GC
}

func (s stats) String() string {
	return fmt.Sprintf("goroutines=%d fds=%d rss=%.1fMiB heap=%.1fMiB", s.goroutines, s.fds, float64(s.rssKB)/1024, float64(s.heapKB)/1024)
}

// stats reads /proc/PID and go_goroutines.
func (d *daemon) stats() stats {
	d.t.Helper()
	var s stats
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid()))
	if err == nil {
		s.fds = len(ents)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid())); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				s.rssKB, _ = strconv.Atoi(f[1])
			}
		}
	}
	// A heap profile with gc=1 runs a collection first (loopback admin:
	// no credentials), so heap_inuse counts live objects only.
	if resp, err := httpc.Get("http://" + d.admin + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	m, err := d.metrics()
	if err != nil {
		s.goroutines, s.heapKB = -1, -1
		return s
	}
	s.goroutines = int(m["go_goroutines"])
	s.heapKB = int(m["go_memstats_heap_inuse_bytes"] / 1024)
	return s
}

// baseline waits for the daemon to settle and returns its figures.
func (d *daemon) baseline() stats {
	d.t.Helper()
	s := d.stats()
	d.t.Logf("baseline: %s", s)
	return s
}

// settles asserts that goroutines and fds come back to base (within small
// tolerances), that the live heap (after a forced GC) is within
// heapSlackMiB of base, and logs RSS (the Go runtime returns freed pages
// to the OS lazily, so RSS is bounded by the tests that stress memory
// rather than compared here). It returns the figures it saw last.
func (d *daemon) settles(base stats, heapSlackMiB int) stats {
	d.t.Helper()
	var last stats
	ok := poll(20*time.Second, func() bool {
		last = d.stats()
		return last.goroutines <= base.goroutines+8 && last.fds <= base.fds+4 &&
			last.heapKB <= base.heapKB+heapSlackMiB*1024
	})
	if !ok {
		d.t.Errorf("daemon did not return to baseline (heap slack %d MiB): before %s, after %s", heapSlackMiB, base, last)
	}
	if last.goroutines < 0 {
		d.t.Logf("/metrics unreadable: goroutines and heap not compared")
	}
	d.t.Logf("after: %s (before: %s)", last, base)
	return last
}

// mint returns a valid HS256 token for sub.
func mint(t testing.TB, sub string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), sub, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
