// Command nbio-echo is the lesismal/nbio baseline in its non-blocking mode:
// an nbhttp.Engine (epoll pollers, no goroutine per connection) with a
// websocket.Upgrader echoing in OnMessage, as the nbio examples show.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
	"github.com/orchestratord/orchestratord/bench/internal/admin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:28003", "listen address")
	adminAddr := flag.String("admin", "", "metrics/pprof address")
	flag.Parse()
	if err := admin.Start(*adminAddr); err != nil {
		log.Fatal(err)
	}
	upgrader := websocket.NewUpgrader()
	upgrader.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		_ = c.WriteMessage(mt, data)
	})
	mux := &http.ServeMux{}
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if _, err := upgrader.Upgrade(w, r, nil); err != nil {
			return
		}
	})
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{*addr},
		MaxLoad:                 1_000_000,
		ReleaseWebsocketPayload: true,
		Handler:                 mux,
	})
	if err := engine.Start(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	engine.Stop()
}
