package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// TestReplicasE2E runs two daemons sharing a real Redis behind a real
// nginx (round robin, WebSocket upgrade; testdata/nginx/replicas.conf):
// takeover across replicas (4009), live resume of a streaming answer on the
// other replica, and failover after SIGKILL with history and outbox. It
// runs on each topology: the shared Redis with the redis bus, the same
// with the nats bus (NATS at 127.0.0.1:4222), and a 3-master Redis
// Cluster started by the test (sharded pub/sub bus).
func TestReplicasE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs the binary")
	}
	requireRedis(t)
	nginx := lookNginx(t)
	bin := buildDaemon(t, t.TempDir())
	t.Run("redis", func(t *testing.T) {
		testReplicas(t, bin, nginx, "  redis_url: redis://127.0.0.1:6379/0\n")
	})
	t.Run("redis_nats_bus", func(t *testing.T) {
		requireNATS(t)
		testReplicas(t, bin, nginx, "  redis_url: redis://127.0.0.1:6379/0\n  bus: nats\n  nats_urls: [\"nats://127.0.0.1:4222\"]\n")
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartClusterT(t, clusterE2EPorts)
		testReplicas(t, bin, nginx, fmt.Sprintf("  redis_url: %q\n", c.URL()))
	})
}

// testReplicas is TestReplicasE2E on one topology: store is the
// sessions section's lines after "store: redis".
func testReplicas(t *testing.T, bin, nginx, store string) {
	llm := httptest.NewServer(http.HandlerFunc(fakeOpenAI))
	defer llm.Close()
	stream := httptest.NewServer(http.HandlerFunc(slowNDJSON))
	defer stream.Close()

	reps, front := startReplicas(t, bin, nginx, "replicas.conf", [2]string{"replica-a", "replica-b"}, fmt.Sprintf(`sessions:
  store: redis
%sbackends:
  llm: {kind: openai, endpoints: [%q], model: test-model, system_prompt: "be brief"}
  stream: {kind: http, endpoints: [%q]}
  slow: {kind: echo, delay: 1s}
routes:
  chat: {backend: llm, timeout: 10s}
  stream: {backend: stream, timeout: 30s, idle_timeout: 3s}
  slow: {backend: slow, timeout: 5s}
`, store, llm.URL+"/v1", stream.URL+"/stream"))
	a, b := reps[0], reps[1]

	t.Run("takeover_4009_across_replicas", func(t *testing.T) {
		c1, err := dialWS(a.client, "", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c1.close()
		c2, err := dialWS(b.client, "session="+c1.welcome.Session, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.close()
		if !c2.welcome.Resumed || c2.welcome.Node != "replica-b" {
			t.Fatalf("second connection welcome %+v, want resumed on replica-b", c2.welcome)
		}
		if code := readUntilClose(t, c1, 5*time.Second); code != 4009 {
			t.Fatalf("older connection on replica-a closed with %d, want 4009", code)
		}
	})

	t.Run("live_resume_on_other_replica", func(t *testing.T) {
		// The stream sends a chunk every 100 ms for 5 s. The client reads
		// for 1 s on the first replica, drops, comes back through nginx
		// 2 s later on the other replica.
		c1, err := dialWS(front, "", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		first := c1.welcome.Node
		if err := c1.request("stream", "st1", map[string]any{"n": 50}); err != nil {
			t.Fatal(err)
		}
		seen := 0
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			m, err := c1.read(2 * time.Second)
			if err != nil {
				t.Fatalf("first connection: %v", err)
			}
			if m.Type != "chunk" || m.Seq != seen {
				t.Fatalf("first connection got %+v, want chunk seq %d", m, seen)
			}
			seen++
		}
		c1.close()
		time.Sleep(2 * time.Second) // the scenario: the client is away for 2 s
		var c2 *wsClient
		for try := 0; try < 4; try++ {
			c, err := dialWS(front, "session="+c1.welcome.Session, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if c.welcome.Node != first {
				c2 = c
				break
			}
			c.close() // round robin: the next one lands on the other replica
		}
		if c2 == nil {
			t.Fatalf("never landed on the replica other than %s", first)
		}
		defer c2.close()
		if !c2.welcome.Resumed {
			t.Fatalf("welcome %+v, want resumed", c2.welcome)
		}
		next := 0
		for {
			m, err := c2.read(5 * time.Second)
			if err != nil {
				t.Fatalf("resumed connection after seq %d: %v", next-1, err)
			}
			if m.ID != "st1" {
				continue // the outbox of earlier subtests' sessions is not ours
			}
			if m.Type == "chunk" {
				if m.Seq != next {
					t.Fatalf("chunk seq %d, want %d (gap or duplicate)", m.Seq, next)
				}
				next++
				continue
			}
			if m.Type != "result" || string(m.Data) != `"done"` {
				t.Fatalf("terminal %+v, want result done", m)
			}
			break
		}
		if next != 50 {
			t.Fatalf("resumed connection saw %d chunks, want 50 (seen %d before the drop)", next, seen)
		}
		// Exactly one terminal: nothing more for st1 arrives.
		if err := c2.request("slow", "probe", "p"); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := c2.read(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if m.ID == "st1" {
				t.Fatalf("second terminal for st1: %+v", m)
			}
			if m.ID == "probe" && m.terminal() {
				break
			}
		}
	})

	t.Run("failover_after_sigkill", func(t *testing.T) {
		// A chat turn and an unanswered request on replica-a, then
		// replica-a dies; the client resumes through nginx on replica-b with
		// its history and the answer from the outbox.
		c1, err := dialWS(a.client, "", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := c1.request("chat", "c1", map[string]string{"text": "my name is Ann"}); err != nil {
			t.Fatal(err)
		}
		if m := readTerminal(t, c1, "c1"); m.Type != "result" || !strings.Contains(string(m.Data), "hi Ann") {
			t.Fatalf("first chat turn: %+v", m)
		}
		if err := c1.request("slow", "late", "kept"); err != nil {
			t.Fatal(err)
		}
		c1.close()
		// replica-a has seen the client go before the answer is produced
		// (slow: 1 s), and stored it before it reports nothing in flight.
		waitForNode(t, a.admin, "connections", 0)
		waitUntilIdle(t, a.admin)
		a.signal(syscall.SIGKILL)
		<-a.done

		// As a client would: a 502/503 while the survivor's store answers
		// again (a Redis Cluster can be failing over on a loaded machine)
		// is retried, for a bounded time.
		c2, err := dialWSRetry(front, "session="+c1.welcome.Session, 5*time.Second, 30*time.Second)
		if err != nil {
			t.Fatalf("reconnect through nginx after replica-a died: %v", err)
		}
		defer c2.close()
		if !c2.welcome.Resumed || c2.welcome.Node != "replica-b" {
			t.Fatalf("welcome %+v, want resumed on replica-b", c2.welcome)
		}
		if m := readTerminal(t, c2, "late"); m.Type != "result" || string(m.Data) != `"kept"` {
			t.Fatalf("outbox entry: %+v", m)
		}
		if err := c2.request("chat", "c2", map[string]string{"text": "what is my name?"}); err != nil {
			t.Fatal(err)
		}
		if m := readTerminal(t, c2, "c2"); m.Type != "result" || !strings.Contains(string(m.Data), `"text":"Ann"`) {
			t.Fatalf("second chat turn on replica-b did not see the history: %+v", m)
		}
	})
}

// readTerminal reads until the terminal of id, checking chunks come first.
func readTerminal(t *testing.T, c *wsClient, id string) msg {
	t.Helper()
	for {
		m, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the terminal of %s: %v", id, err)
		}
		if m.ID == id && m.terminal() {
			return m
		}
	}
}

// readUntilClose reads until the server closes and returns the close code.
func readUntilClose(t *testing.T, c *wsClient, timeout time.Duration) int {
	t.Helper()
	for {
		_, err := c.read(timeout)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			return int(ce.Code)
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}

// waitUntilIdle waits until the node has no request in flight.
func waitUntilIdle(t *testing.T, admin string) {
	t.Helper()
	waitForNode(t, admin, "in_flight", 0)
}

// waitForNode waits until the admin API's /api/node field has value want.
func waitForNode(t *testing.T, admin, field string, want float64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%s = %v", field, want), func() bool {
		resp, err := probeClient.Get("http://" + admin + "/api/node")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v map[string]any
		if json.NewDecoder(resp.Body).Decode(&v) != nil {
			return false
		}
		got, ok := v[field].(float64)
		return ok && got == want
	})
}

// lookNginx returns the nginx binary, skipping (or failing with CI=true)
// when it is missing.
func lookNginx(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("nginx is required with CI=true (.ci/run installs it)")
	}
	t.Skip("nginx not installed")
	return ""
}

// startReplicas writes a config with the e2e defaults (configYAML) and
// extra (sessions, backends, routes), starts one daemon on it per node
// name, each with client and admin ports of its own, waits until both are
// ready and puts nginx with the template testdata/nginx/<nginxConf> in
// front of them. It returns the replicas, in the order of names, and
// nginx's address.
func startReplicas(t *testing.T, bin, nginx, nginxConf string, names [2]string, extra string) (reps [2]*proc, front string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfg, configYAML("127.0.0.1:1", "127.0.0.1:1", 100*time.Millisecond, 3*time.Second, extra))
	for i, name := range names {
		client, admin := freePort(t), freePort(t)
		reps[i] = startProc(t, client, admin, []string{"ORCH_LISTEN_CLIENT=" + client, "ORCH_LISTEN_ADMIN=" + admin, "ORCH_NODE=" + name},
			nil, bin, "serve", "--config", cfg)
	}
	for _, r := range reps {
		r.waitReady(15 * time.Second)
	}
	return reps, startNginxConf(t, nginx, nginxConf, reps[0].client, reps[1].client)
}

// startNginxConf runs nginx with the template testdata/nginx/<name> in
// front of a and b, and returns its address.
func startNginxConf(t *testing.T, nginx, name, a, b string) string {
	t.Helper()
	tmpl, err := os.ReadFile("../../../testdata/nginx/" + name)
	if err != nil {
		t.Fatal(err)
	}
	dir, front := t.TempDir(), freePort(t)
	conf := strings.NewReplacer("{{A}}", a, "{{B}}", b, "{{LISTEN}}", front, "{{DIR}}", dir).Replace(string(tmpl))
	writeFile(t, filepath.Join(dir, "nginx.conf"), conf)
	startProc(t, front, "", nil, nil, nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	eventually(t, 5*time.Second, "nginx listening", func() bool {
		c, err := probeClient.Get("http://" + front + "/healthz")
		if err != nil {
			return false
		}
		c.Body.Close()
		return true
	})
	return front
}

// fakeOpenAI is an OpenAI-compatible streaming chat server that remembers
// nothing: it answers from the messages it is sent.
func fakeOpenAI(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct{ Role, Content string } `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
		return
	}
	last := req.Messages[len(req.Messages)-1].Content
	reply := "hi Ann"
	if strings.Contains(last, "what is my name") {
		reply = "unknown"
		for _, m := range req.Messages {
			if m.Role == "user" && strings.Contains(m.Content, "my name is Ann") {
				reply = "Ann"
			}
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, part := range strings.SplitAfter(reply, " ") {
		b, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"delta": map[string]string{"content": part}}}})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
}

// slowNDJSON streams {"chunk":i} every 100 ms, n times (default 50), then
// the final object.
func slowNDJSON(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Data struct{ N int } `json:"data"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	n := body.Data.N
	if n == 0 {
		n = 50
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl := w.(http.Flusher)
	for i := 0; i < n; i++ {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		fmt.Fprintf(w, "{\"chunk\":%d}\n", i)
		fl.Flush()
	}
	fmt.Fprint(w, "{\"data\":\"done\"}\n")
}
