package web

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/orchestratord/orchestratord/internal/browsertest"
)

func TestDemoHandler(t *testing.T) {
	h := Demo(func() []string { return []string{"echo", "stream"} })
	for _, tc := range []struct {
		method, path string
		code         int
		contains     string
	}{
		{"GET", "/", 200, `id="msg"`},
		{"GET", "/chat.js", 200, "./client/orchestrator.js"},
		{"GET", "/client/orchestrator.js", 200, "export function connect"},
		{"GET", "/client/orchestrator.d.ts", 200, "export function connect"},
		{"GET", "/routes.json", 200, `{"routes":["echo","stream"]}`},
		{"GET", "/client/", 404, ""},
		{"GET", "/client/package.json", 404, ""},
		{"GET", "/chat.css", 200, "#log"},
		{"HEAD", "/", 200, ""},
		{"GET", "/admin/admin.js", 404, ""},
		{"GET", "/admin/", 404, ""},
		{"GET", "/nope.txt", 404, ""},
		{"POST", "/", 405, ""},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.contains) {
				t.Fatalf("%s %s = %d (%d bytes), want %d containing %q", tc.method, tc.path, w.Code, w.Body.Len(), tc.code, tc.contains)
			}
			if tc.code == 200 && !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'self'") {
				t.Errorf("no CSP on %s", tc.path)
			}
		})
	}
	for _, name := range []string{"admin.css", "admin.js"} {
		if _, err := Admin().Open(name); err != nil {
			t.Errorf("Admin() lacks %s: %v", name, err)
		}
	}
}

// fakeGateway speaks the client side of the wire contract well enough to
// drive chat.js: welcome, chunks, results (sent twice, to check de-dup),
// errors, and one dropped connection mid-stream that the page must resume.
type fakeGateway struct {
	t       *testing.T
	mu      sync.Mutex
	queries []string // RawQuery of each /ws handshake
	pending []string // frames to replay after the next resume's welcome
	later   string   // a frame sent before answering the next message
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sid := r.URL.Query().Get("session")
	g.mu.Lock()
	g.queries = append(g.queries, r.URL.RawQuery)
	replay := g.pending
	g.pending = nil
	g.mu.Unlock()
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	send := func(v string) bool { return wsutil.WriteServerText(conn, []byte(v)) == nil }
	resumed := sid == "s_test1"
	welcome, _ := json.Marshal(map[string]any{"type": "welcome", "session": "s_test1", "resumed": resumed, "node": "edge-t", "heartbeat_ms": 25000})
	send(string(welcome))
	if resumed {
		for _, f := range replay {
			send(f)
		}
	}
	for {
		b, err := wsutil.ReadClientText(conn)
		if err != nil {
			return
		}
		g.mu.Lock()
		later := g.later
		g.later = ""
		g.mu.Unlock()
		if later != "" {
			send(later)
		}
		var m struct {
			Type, ID string
			Data     struct{ Text string }
		}
		if json.Unmarshal(b, &m) != nil {
			send(`{"type":"error","id":"","code":"bad_request","message":"not JSON"}`)
			continue
		}
		result := func(text string) string {
			r, _ := json.Marshal(map[string]any{"type": "result", "id": m.ID, "data": map[string]string{"text": text}})
			return string(r)
		}
		chunk := func(seq int, text string) string {
			c, _ := json.Marshal(map[string]any{"type": "chunk", "id": m.ID, "seq": seq, "data": map[string]string{"text": text}})
			return string(c)
		}
		switch {
		case m.Type == "echo":
			send(result(m.Data.Text))
			send(result("DUPLICATE")) // a second delivery of the id: the page must drop it
		case m.Data.Text == "fail":
			send(`{"type":"error","id":"` + m.ID + `","code":"backend_error","message":"backend failed"}`)
		case m.Data.Text == "drop":
			// Stream two chunks, then drop the connection; the rest comes
			// after the resume, with the chunks replayed first.
			send(chunk(0, "one "))
			send(chunk(1, "two "))
			g.mu.Lock()
			g.pending = []string{chunk(0, "one "), chunk(1, "two "), chunk(2, "three")}
			g.later = result("one two three!")
			g.mu.Unlock()
			_ = ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(1012), "")))
			return
		default:
			for i, w := range strings.Fields(m.Data.Text) {
				send(chunk(i, w+" "))
			}
			send(result(strings.ToUpper(m.Data.Text)))
		}
	}
}

// TestDemoPageBrowser drives the demo chat page in headless Chromium against
// a fake gateway. CI=true makes a missing Chromium a failure.
func TestDemoPageBrowser(t *testing.T) {
	browsertest.Require(t)
	gw := &fakeGateway{t: t}
	mux := http.NewServeMux()
	mux.Handle("/ws", gw)
	mux.Handle("/", Demo(func() []string { return []string{"chat", "echo"} }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ErrorLog: nil}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	b := browsertest.Start(t, browsertest.Options{Width: 900, Height: 700, Timeout: 45 * time.Second})
	defer b.Stop()
	ctx, run, eval := b.Ctx, b.Run, b.Eval
	// The library numbers requests itself: the k-th request's entry is the
	// k-th <li data-id> of the log.
	sel := func(k int) string {
		return `#log li[data-id="` + eval(`[...document.querySelectorAll("#log li[data-id]")].map(li => li.dataset.id)[`+strconv.Itoa(k-1)+`] || "none"`) + `"]`
	}
	body := func(k int) string {
		return eval(`(function(){var l=document.querySelectorAll('` + sel(k) + `'); return l.length + ":" + l[0].className + ":" + l[0].querySelector(".body").textContent})()`)
	}
	waitDone := func(k int) {
		t.Helper()
		run("answer "+strconv.Itoa(k), chromedp.Poll[chromedp.Void](`(function(){var l=[...document.querySelectorAll("#log li[data-id]")]; return l.length >= `+strconv.Itoa(k)+` && !l[`+strconv.Itoa(k-1)+`].classList.contains("pending")})()`))
	}
	sendMsg := func(route, text string) {
		t.Helper()
		run("send "+text, chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)),
			chromedp.Poll[chromedp.Void](`document.querySelectorAll("#route option").length > 0`),
			chromedp.SetValue(chromedp.CSS("#route"), route), chromedp.SendKeys(chromedp.CSS("#msg"), text),
			chromedp.Click(chromedp.CSS("#send")))
	}

	run("open", chromedp.Navigate("http://"+ln.Addr().String()+"/"), chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	if got := eval(`document.getElementById("session").textContent`); got != "s_test1" {
		t.Errorf("#session = %q, want s_test1", got)
	}
	if got := eval(`[...document.querySelectorAll("#route option")].map(o => o.value).join(",")`); got != "chat,echo" {
		t.Errorf("route picker offers %q, want the served routes chat,echo", got)
	}

	sendMsg("echo", "hello")
	waitDone(1)
	if got := body(1); got != "1:bot:hello" {
		t.Errorf("echo entry = %q, want one bot entry with hello", got)
	}

	sendMsg("chat", "stream me")
	waitDone(2)
	if got := body(2); got != "1:bot:STREAM ME" {
		t.Errorf("chat entry = %q, want the final result text", got)
	}

	sendMsg("chat", "fail")
	waitDone(3)
	if got := body(3); got != "1:error:backend_error: backend failed" {
		t.Errorf("error entry = %q", got)
	}

	sendMsg("chat", "drop")
	// After the resume the replayed chunks 0 and 1 are skipped by seq.
	deadline := time.Now().Add(10 * time.Second)
	for got := ""; got != "1:bot pending:one two three"; got = body(4) {
		if time.Now().After(deadline) {
			t.Fatalf("resumed stream entry = %q, want the streamed text once", got)
		}
		run("wait", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	}
	sendMsg("echo", "after")
	waitDone(4)
	waitDone(5)
	if got := body(4); got != "1:bot:one two three!" {
		t.Errorf("resumed entry = %q, want the final result", got)
	}
	gw.mu.Lock()
	queries := strings.Join(gw.queries, " | ")
	gw.mu.Unlock()
	if !strings.HasSuffix(queries, "| session=s_test1") || strings.HasPrefix(queries, "session=") {
		t.Errorf("handshake queries %q: want a fresh connect, then a resume with session=s_test1", queries)
	}
	run("status after resume", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	if got := eval(`document.getElementById("status").textContent`); !strings.Contains(got, "resumed") {
		t.Errorf("#status = %q, want it to say resumed", got)
	}
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "demo.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
