// Command netpoll-echo is the project's raw engine (package netpoll) with a
// bare echo Handler and no Gatekeeper: the like-for-like peer of the bare
// echo baselines, without the daemon's envelope, dispatch and sessions.
package main

import (
	"flag"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/orchestratord/orchestratord/bench/internal/admin"
	"github.com/orchestratord/orchestratord/netpoll"
)

type echo struct{}

func (echo) OnOpen(*netpoll.Conn)                            {}
func (echo) OnMessage(c *netpoll.Conn, payload []byte)       { _ = c.Send(payload) }
func (echo) OnClose(*netpoll.Conn, netpoll.CloseCode, error) {}

func main() {
	addr := flag.String("addr", "127.0.0.1:28004", "listen address")
	adminAddr := flag.String("admin", "", "metrics/pprof address")
	workers := flag.Int("workers", 0, "netpoll workers (0: engine default)")
	flag.Parse()
	if err := admin.Start(*adminAddr); err != nil {
		log.Fatal(err)
	}
	lg := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := netpoll.New(netpoll.Config{Workers: *workers}, echo{}, nil, nil, lg)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = eng.Close()
		_ = ln.Close()
	}()
	if err := eng.Serve(ln); err != nil {
		log.Print(err)
	}
}
