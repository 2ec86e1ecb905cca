package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// nginxStreamConf is the stream (PROXY protocol) sample of docs/deploy.md.
const nginxStreamConf = "../../../docs/nginx/orchestratord-stream.conf"

// nginxStreamModule returns the directive that loads nginx's stream module
// ("" when it is built in), skipping (or failing with CI=true) when nginx
// has none: Debian's nginx-light builds it as a module shipped separately
// in libnginx-mod-stream.
func nginxStreamModule(t *testing.T, nginx string) string {
	t.Helper()
	out, _ := exec.Command(nginx, "-V").CombinedOutput()
	v := string(out)
	missing := func(why string) string {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx stream module required with CI=true (.ci/run installs libnginx-mod-stream): %s", why)
		}
		t.Skipf("nginx stream module: %s", why)
		return ""
	}
	switch {
	case strings.Contains(v, "--with-stream=dynamic"):
		dir := "/usr/lib/nginx/modules"
		if m := regexp.MustCompile(`--modules-path=(\S+)`).FindStringSubmatch(v); m != nil {
			dir = m[1]
		}
		so := filepath.Join(dir, "ngx_stream_module.so")
		if _, err := os.Stat(so); err != nil {
			return missing(so + " not installed")
		}
		return "load_module " + so + ";"
	case strings.Contains(v, "--with-stream ") || strings.HasSuffix(strings.TrimSpace(v), "--with-stream"):
		return ""
	}
	return missing("nginx -V lists no --with-stream")
}

// startNginxMain runs nginx with main-context lines main and, when httpInclude
// is set, an http block including it.
func startNginxMain(t *testing.T, nginx, dir, front, main, httpInclude string) {
	t.Helper()
	httpBlock := ""
	if httpInclude != "" {
		httpBlock = fmt.Sprintf(`http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  fastcgi_temp_path %[1]s;
  uwsgi_temp_path %[1]s;
  scgi_temp_path %[1]s;
  include %[2]s;
}`, dir, httpInclude)
	}
	writeFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf(`%[2]s
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
%[3]s
`, dir, main, httpBlock))
	startProc(t, front, "", nil, nil, nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
}

// sample reads a docs/nginx sample and makes the replacements, failing
// when one no longer applies.
func sample(t *testing.T, path string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for old, s := range repl {
		if !strings.Contains(conf, old) {
			t.Fatalf("%s no longer contains %q: update this test", path, old)
		}
		conf = strings.ReplaceAll(conf, old, s)
	}
	return conf
}

// tcpFrom connects to addr from the loopback address local.
func tcpFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// dialWSFrom opens a WebSocket to addr from local, with extra handshake
// headers, and reads the welcome. A refused handshake returns its status
// (statusOf).
func dialWSFrom(local, addr string, hdr http.Header) (*wsClient, error) {
	tcp, err := tcpFrom(local, addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{Timeout: 5 * time.Second, NetDial: func(context.Context, string, string) (net.Conn, error) { return tcp, nil }}
	if hdr != nil {
		d.Header = ws.HandshakeHeaderHTTP(hdr)
	}
	conn, br, _, err := d.Dial(ctx, "ws://"+addr+"/ws")
	if err != nil {
		tcp.Close()
		return nil, err
	}
	c := &wsClient{conn: conn, r: br}
	if c.r == nil {
		c.r = bufio.NewReader(conn)
	}
	m, err := c.read(5 * time.Second)
	if err != nil || m.Type != "welcome" {
		conn.Close()
		return nil, fmt.Errorf("welcome: %+v %v", m, err)
	}
	c.welcome = m
	return c, nil
}

// sessionRemotes returns the remote address of each attached session, by
// session id, from the admin API.
func sessionRemotes(t *testing.T, admin string) map[string]string {
	t.Helper()
	resp, err := probeClient.Get("http://" + admin + "/api/sessions?limit=100")
	if err != nil {
		t.Fatalf("GET /api/sessions: %v", err)
	}
	defer resp.Body.Close()
	var page struct {
		Sessions []struct {
			ID     string `json:"id"`
			Remote string `json:"remote"`
		} `json:"sessions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatalf("decode /api/sessions: %v", err)
	}
	out := map[string]string{}
	for _, s := range page.Sessions {
		out[s.ID] = s.Remote
	}
	return out
}

// clientAddrDaemon starts a daemon with a per-IP limit of 2, trusting
// 127.0.0.1 (where nginx connects from), with or without the PROXY
// protocol.
func (e *e2e) clientAddrDaemon(t *testing.T, dir string, proxyProtocol bool) *proc {
	t.Helper()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, configYAML("127.0.0.1:1", "127.0.0.1:1", 0, 3*time.Second, `limits:
  per_ip_connections: 2
backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`))
	client, admin := freePort(t), freePort(t)
	p := e.startDaemon(t, cfg, client, admin, "ORCH_LISTEN_CLIENT="+client, "ORCH_LISTEN_ADMIN="+admin,
		"ORCH_LISTEN_TRUSTED_PROXIES=127.0.0.1", "ORCH_LISTEN_PROXY_PROTOCOL="+strconv.FormatBool(proxyProtocol))
	p.waitReady(10 * time.Second)
	return p
}

// checkClientAddresses connects through front from 127.0.0.5 and
// 127.0.0.6 (each also trying to spoof its address with X-Forwarded-For):
// the admin API shows each client's own address, and the per-IP limit (2)
// applies to each separately. withPort: the proxy reports ports (PROXY
// protocol) and the admin API shows them.
func checkClientAddresses(t *testing.T, d *proc, front string, withPort bool) {
	t.Helper()
	want := map[string]string{} // session id -> expected remote
	var clients []*wsClient
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for _, local := range []string{"127.0.0.5", "127.0.0.6"} {
		for i := range 2 {
			hdr := http.Header{"X-Forwarded-For": {"203.0.113.66"}, "X-Real-Ip": {"203.0.113.67"}}
			c, err := dialWSFrom(local, front, hdr)
			if err != nil {
				t.Fatalf("client %d from %s: %v", i, local, err)
			}
			clients = append(clients, c)
			w := local
			if withPort {
				w = c.conn.LocalAddr().String()
			}
			want[c.welcome.Session] = w
		}
		// The third from the same address is over the per-IP limit.
		if c, err := dialWSFrom(local, front, nil); err == nil || statusOf(err) != 429 {
			if c != nil {
				c.close()
			}
			t.Fatalf("third client from %s: %v (status %d), want 429", local, err, statusOf(err))
		}
	}
	var got map[string]string
	eventually(t, 5*time.Second, "all sessions in /api/sessions", func() bool {
		got = sessionRemotes(t, d.admin)
		return len(got) == len(want)
	})
	for id, w := range want {
		if got[id] != w {
			t.Errorf("session %s: admin shows remote %q, want %q", id, got[id], w)
		}
	}
	// A slot freed on one address does not lend one to the other.
	clients[0].close()
	clients = clients[1:]
	eventually(t, 5*time.Second, "a slot of 127.0.0.5 freed", func() bool {
		c, err := dialWSFrom("127.0.0.5", front, nil)
		if err != nil {
			return false
		}
		clients = append(clients, c)
		return true
	})
	if c, err := dialWSFrom("127.0.0.6", front, nil); statusOf(err) != 429 {
		if c != nil {
			c.close()
		}
		t.Fatalf("127.0.0.6 after 127.0.0.5 freed a slot: %v, want 429", err)
	}
}

// testNginxClientAddress: nginx (docs/nginx/orchestratord.conf, sending
// X-Forwarded-For and X-Real-IP) in front of a daemon trusting it; see
// checkClientAddresses. A client outside the trusted list, talking to the
// daemon directly, cannot set its address with X-Forwarded-For.
func (e *e2e) testNginxClientAddress(t *testing.T) {
	nginx := lookNginx(t)
	dir := t.TempDir()
	d := e.clientAddrDaemon(t, dir, false)
	front := freePort(t)
	writeFile(t, filepath.Join(dir, "orchestratord.conf"), sample(t, nginxConf, map[string]string{
		"10.0.0.11:8080": d.client, "10.0.0.12:8080": d.client, "listen 80;": "listen " + front + ";",
	}))
	startNginxMain(t, nginx, dir, front, "", filepath.Join(dir, "orchestratord.conf"))
	eventually(t, 5*time.Second, "nginx answering /healthz", func() bool { return status(front, "/healthz") == 200 })
	checkClientAddresses(t, d, front, false)

	// Directly from 127.0.0.7, not trusted: the headers are ignored, the
	// address is the peer's, and the per-IP limit counts it as itself.
	var direct []*wsClient
	defer func() {
		for _, c := range direct {
			c.close()
		}
	}()
	for i := range 2 {
		hdr := http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", 10+i)}, "X-Real-Ip": {"203.0.113.99"}}
		c, err := dialWSFrom("127.0.0.7", d.client, hdr)
		if err != nil {
			t.Fatalf("direct client %d: %v", i, err)
		}
		direct = append(direct, c)
	}
	if _, err := dialWSFrom("127.0.0.7", d.client, http.Header{"X-Forwarded-For": {"203.0.113.50"}}); statusOf(err) != 429 {
		t.Fatalf("third direct client with a new X-Forwarded-For: %v, want 429", err)
	}
	eventually(t, 5*time.Second, "direct sessions listed", func() bool {
		got := sessionRemotes(t, d.admin)
		for _, c := range direct {
			if got[c.welcome.Session] != c.conn.LocalAddr().String() {
				return false
			}
		}
		return true
	})
}

// testNginxStreamProxyProtocol: nginx's stream module
// (docs/nginx/orchestratord-stream.conf, proxy_protocol on) in front of a
// daemon with listen.proxy_protocol; see checkClientAddresses. Directly, an
// untrusted peer's PROXY header is a 400, and a trusted peer without one is
// closed without a response.
func (e *e2e) testNginxStreamProxyProtocol(t *testing.T) {
	nginx := lookNginx(t)
	load := nginxStreamModule(t, nginx)
	dir := t.TempDir()
	d := e.clientAddrDaemon(t, dir, true)
	front := freePort(t)
	writeFile(t, filepath.Join(dir, "orchestratord-stream.conf"), sample(t, nginxStreamConf, map[string]string{
		"10.0.0.11:8080": d.client, "10.0.0.12:8080": d.client, "listen 80;": "listen " + front + ";",
	}))
	startNginxMain(t, nginx, dir, front, load+"\ninclude "+filepath.Join(dir, "orchestratord-stream.conf")+";", "")
	eventually(t, 5*time.Second, "nginx stream answering /healthz", func() bool { return status(front, "/healthz") == 200 })
	checkClientAddresses(t, d, front, true)

	raw := func(local, send string) string {
		t.Helper()
		c, err := tcpFrom(local, d.client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, send)
		out, _ := io.ReadAll(c)
		return string(out)
	}
	const head = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if out := raw("127.0.0.7", "PROXY TCP4 203.0.113.5 127.0.0.1 4711 80\r\n"+head); !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.HasSuffix(out, `{"error":"bad_request"}`+"\n") {
		t.Errorf("untrusted peer with a PROXY header: %q, want 400 bad_request", out)
	}
	if out := raw("127.0.0.1", head); out != "" {
		t.Errorf("trusted peer without a PROXY header: %q, want the connection closed without a response", out)
	}
}
