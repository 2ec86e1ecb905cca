package main

import (
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// nginxConf is the sample of docs/deploy.md, checked here against real
// daemons.
const nginxConf = "../../../docs/nginx/orchestratord.conf"

// testNginxDrain puts nginx, configured with docs/nginx/orchestratord.conf,
// in front of two replicas and drains one while clients keep connecting
// through nginx: no handshake fails (the 503s of the draining replica are
// retried on the other one), and the drained replica's clients get
// reconnect and 1012 through the proxy.
func (e *e2e) testNginxDrain(t *testing.T) {
	nginx := lookNginx(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, configYAML("127.0.0.1:1", "127.0.0.1:1", 500*time.Millisecond, 3*time.Second, `backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`))
	var replicas [2]*proc
	for i := range replicas {
		client, admin := freePort(t), freePort(t)
		replicas[i] = e.startDaemon(t, cfg, client, admin,
			"ORCH_LISTEN_CLIENT="+client, "ORCH_LISTEN_ADMIN="+admin, fmt.Sprintf("ORCH_NODE=replica-%d", i))
	}
	for _, r := range replicas {
		r.waitReady(10 * time.Second)
	}

	front := freePort(t)
	writeFile(t, filepath.Join(dir, "orchestratord.conf"), sample(t, nginxConf, map[string]string{
		"10.0.0.11:8080": replicas[0].client,
		"10.0.0.12:8080": replicas[1].client,
		"listen 80;":     "listen " + front + ";",
	}))
	startNginxMain(t, nginx, dir, front, "", filepath.Join(dir, "orchestratord.conf"))
	eventually(t, 5*time.Second, "nginx answering /healthz", func() bool { return status(front, "/healthz") == 200 })

	// Clients through nginx, spread over both replicas (least_conn).
	const n = 10
	byNode := map[string][]*wsClient{}
	for i := 0; i < n; i++ {
		c, err := dialWS(front, "", 5*time.Second)
		if err != nil {
			t.Fatalf("client %d through nginx: %v", i, err)
		}
		defer c.close()
		byNode[c.welcome.Node] = append(byNode[c.welcome.Node], c)
	}
	drained := byNode["replica-0"]
	if len(drained) == 0 || len(byNode["replica-1"]) == 0 {
		t.Fatalf("clients by replica: %d on replica-0, %d on replica-1; want both used", len(drained), len(byNode["replica-1"]))
	}

	// The prober: handshakes through nginx all along.
	var (
		mu       sync.Mutex
		failures []string
		served   = map[string]int{}
	)
	stop := make(chan struct{})
	var probing sync.WaitGroup
	probing.Add(1)
	go func() {
		defer probing.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := dialWS(front, "", 5*time.Second)
			mu.Lock()
			if err != nil {
				failures = append(failures, err.Error())
			} else {
				served[c.welcome.Node]++
				c.close()
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	}()

	replicas[0].signal(syscall.SIGTERM)
	for i, c := range drained {
		var last msg
		for {
			m, err := c.read(5 * time.Second)
			if code := closeCode(err); code != 0 {
				if code != 1012 || last.Type != "reconnect" {
					t.Errorf("client %d of the drained replica: close %d after %+v, want reconnect then 1012", i, code, last)
				}
				break
			}
			if err != nil {
				t.Errorf("client %d of the drained replica: %v", i, err)
				break
			}
			last = m
		}
		// It reconnects through nginx and lands on the other replica.
		c2, err := dialWS(front, "", 5*time.Second)
		if err != nil {
			t.Errorf("client %d: reconnect through nginx: %v", i, err)
			continue
		}
		if c2.welcome.Node != "replica-1" {
			t.Errorf("client %d reconnected to %s, want replica-1", i, c2.welcome.Node)
		}
		c2.close()
	}
	if code := replicas[0].exitCode(10 * time.Second); code != 0 {
		t.Errorf("drained replica: exit code %d, want 0", code)
	}
	close(stop)
	probing.Wait()
	if len(failures) != 0 {
		t.Errorf("%d handshakes through nginx failed during the drain, e.g. %s", len(failures), failures[0])
	}
	if served["replica-1"] == 0 {
		t.Errorf("no handshake served by the other replica during the drain: %v", served)
	}
	t.Logf("handshakes through nginx during the drain: %v, failed: %d", served, len(failures))
	replicas[1].signal(syscall.SIGTERM)
	if code := replicas[1].exitCode(10 * time.Second); code != 0 {
		t.Errorf("replica-1: exit code %d, want 0", code)
	}
}
