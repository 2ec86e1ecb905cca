// Command gorilla-echo is the gorilla/websocket baseline: the usual
// goroutine-per-connection echo server, as the library's examples/echo shows.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gorilla/websocket"
	"github.com/orchestratord/orchestratord/bench/internal/admin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:28001", "listen address")
	adminAddr := flag.String("admin", "", "metrics/pprof address")
	flag.Parse()
	if err := admin.Start(*adminAddr); err != nil {
		log.Fatal(err)
	}
	upgrader := websocket.Upgrader{}
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, message, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, message); err != nil {
				return
			}
		}
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
