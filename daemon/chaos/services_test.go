package chaos

// Test-owned infrastructure processes: redis-server, nats-server, nginx.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/internal/logbuf"
)

// service is an external process the test starts, kills and restarts on
// the same address.
type service struct {
	t    *testing.T
	name string
	addr string
	argv []string
	cmd  *exec.Cmd
	done chan struct{}
	logs *logbuf.Buffer
}

// startService runs argv and waits until addr accepts connections.
func startService(t *testing.T, name, addr string, argv ...string) *service {
	t.Helper()
	s := &service{t: t, name: name, addr: addr, argv: argv}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *service) start() {
	s.t.Helper()
	s.logs, s.done = &logbuf.Buffer{}, make(chan struct{})
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.name, err)
	}
	done, cmd := s.done, s.cmd
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	eventually(s.t, 10*time.Second, s.name+" listening", func() bool {
		select {
		case <-done:
			s.t.Fatalf("%s exited: %s", s.name, s.logs.String())
		default:
		}
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// kill sends SIGKILL and waits for the exit.
func (s *service) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// restart starts the process again on the same address.
func (s *service) restart() {
	s.t.Helper()
	s.kill()
	s.start()
}

// startRedis runs a throwaway redis-server on a free port.
func startRedis(t *testing.T) *service {
	t.Helper()
	bin := need(t, "redis-server")
	addr := freeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	s := startService(t, "redis-server", addr, bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	eventually(t, 5*time.Second, "redis PONG", func() bool { return redisPing(addr) })
	return s
}

// redisPing reports whether Redis at addr answers PING.
func redisPing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// startNATS runs a throwaway nats-server on a free port.
func startNATS(t *testing.T) *service {
	t.Helper()
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		bin = need(t, "nats-server")
	}
	addr := freeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	return startService(t, "nats-server", addr, bin, "-a", "127.0.0.1", "-p", port)
}

// startNginx runs nginx in front of the replicas with the config template
// of testdata/chaos/nginx.conf; it returns the front address.
func startNginx(t *testing.T, replicas ...string) string {
	t.Helper()
	bin := need(t, "nginx")
	tmpl, err := os.ReadFile("../../testdata/chaos/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	front := freeAddr(t)
	var servers strings.Builder
	for _, r := range replicas {
		fmt.Fprintf(&servers, "    server %s max_fails=1 fail_timeout=10s;\n", r)
	}
	conf := strings.NewReplacer("{{DIR}}", dir, "{{LISTEN}}", front, "{{SERVERS}}", servers.String()).Replace(string(tmpl))
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startService(t, "nginx", front, bin, "-p", dir, "-c", path)
	return front
}
