// Command gws-echo is the lxzan/gws baseline, written as the library's
// README "Best Practice" shows (ReadLoop goroutine per connection, parallel
// message processing off, compression off as in its benchmarks).
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/lxzan/gws"
	"github.com/orchestratord/orchestratord/bench/internal/admin"
)

type handler struct{}

func (handler) OnOpen(*gws.Conn)                  {}
func (handler) OnClose(*gws.Conn, error)          {}
func (handler) OnPing(socket *gws.Conn, _ []byte) { _ = socket.WritePong(nil) }
func (handler) OnPong(*gws.Conn, []byte)          {}
func (handler) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	_ = socket.WriteMessage(message.Opcode, message.Bytes())
}

func main() {
	addr := flag.String("addr", "127.0.0.1:28002", "listen address")
	adminAddr := flag.String("admin", "", "metrics/pprof address")
	flag.Parse()
	if err := admin.Start(*adminAddr); err != nil {
		log.Fatal(err)
	}
	upgrader := gws.NewUpgrader(handler{}, &gws.ServerOption{Recovery: gws.Recovery})
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		socket, err := upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		go socket.ReadLoop()
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
