// Command orchestratord-load drives WebSocket servers for the benchmarks in
// docs/benchmarks.md: the orchestratord daemon (protocol mode) and bare echo
// servers (-raw). It is event-driven (epoll, no goroutine per connection) and
// can fan out to several processes (-procs) to pass one process's fd limit.
//
//	orchestratord-load -mode echo -url ws://127.0.0.1:8080/ws -jwt-secret s3cret \
//	    -conns 1000 -workers 200 -payload 1024 -duration 10s -server-pid $PID
//
// It prints a human summary on stderr and, with -json FILE, the full result.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/load"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(load.ChildEnv) != "" {
		if err := load.RunChild(ctx, os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, "orchestratord-load shard:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stderr, log); err != nil {
		fmt.Fprintln(os.Stderr, "orchestratord-load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("orchestratord-load", flag.ContinueOnError)
	var o load.Options
	var sources, secret, sub, issuer, audience, jsonOut, pids, metrics, gcURLs string
	var tokenTTL time.Duration
	fs.StringVar(&o.Mode, "mode", load.ModeEcho, "hold | echo | rate | slow | churn")
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/ws", "server WebSocket URL")
	fs.BoolVar(&o.Raw, "raw", false, "bare echo server: frames come back as sent, no welcome or envelope")
	fs.StringVar(&o.Route, "route", "echo", "protocol route for requests")
	fs.StringVar(&o.Token, "token", "", "JWT to send (Authorization: Bearer)")
	fs.StringVar(&secret, "jwt-secret", "", "HS256 key: mint a JWT per process (or $ORCH_JWT_SECRET)")
	fs.StringVar(&sub, "jwt-sub", "load", "sub claim of the minted JWT")
	fs.StringVar(&issuer, "jwt-issuer", "", "iss claim of the minted JWT")
	fs.StringVar(&audience, "jwt-audience", "", "aud claim of the minted JWT")
	fs.DurationVar(&tokenTTL, "jwt-ttl", time.Hour, "lifetime of the minted JWT")
	fs.IntVar(&o.Conns, "conns", 1000, "connections (slow peers not counted)")
	fs.IntVar(&o.Workers, "workers", 200, "echo: requests in flight in total")
	fs.IntVar(&o.Payload, "payload", 1024, "bytes per request frame")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured phase (slow mode: each of its two phases)")
	fs.Float64Var(&o.Rate, "rate", 0, "rate: requests per second in total")
	fs.IntVar(&o.SlowPeers, "slow-peers", 2000, "slow: half-frame peers")
	fs.StringVar(&sources, "sources", "", "source addresses: 127.0.0.2-127.0.0.9 or a comma list")
	fs.IntVar(&o.Dialers, "dialers", 32, "handshake goroutines per process")
	fs.Float64Var(&o.ConnectRate, "connect-rate", 0, "handshakes started per second, in total over -procs (0: as fast as -dialers allow)")
	fs.IntVar(&o.Loops, "loops", 0, "epoll loops per process (default GOMAXPROCS)")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", 10*time.Second, "per handshake")
	fs.IntVar(&o.ChurnWorkers, "churn-workers", 16, "churn: concurrent connect/close loops")
	fs.DurationVar(&o.Settle, "settle", time.Second, "wait after connecting before sampling the server")
	fs.StringVar(&pids, "server-pid", "", "server processes to sample from /proc (comma list; figures are summed)")
	fs.StringVar(&metrics, "metrics-url", "", "server Prometheus text endpoints, comma list (go_goroutines, go_memstats_*)")
	fs.StringVar(&gcURLs, "gc-url", "", "URLs fetched before each server sample to force a GC, comma list (e.g. http://127.0.0.1:9090/debug/pprof/heap?gc=1)")
	fs.IntVar(&o.Procs, "procs", 1, "client processes (each under its fd limit)")
	fs.StringVar(&o.Label, "label", "", "free text copied into the JSON result")
	fs.StringVar(&jsonOut, "json", "", "write the full JSON result to this file (- for stdout)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	src, err := load.ParseSources(sources)
	if err != nil {
		return err
	}
	o.Sources = src
	for p := range strings.SplitSeq(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-server-pid %q: %w", p, err)
		}
		o.ServerPIDs = append(o.ServerPIDs, pid)
	}
	o.MetricsURLs = list(metrics)
	o.GCURLs = list(gcURLs)
	if secret == "" {
		secret = os.Getenv("ORCH_JWT_SECRET")
	}
	if o.Token == "" && secret != "" && !o.Raw {
		o.Token, err = auth.Mint([]byte(secret), sub, tokenTTL, issuer, audience)
		if err != nil {
			return fmt.Errorf("mint token: %w", err)
		}
	}
	res, err := load.Run(ctx, o, log)
	if res != nil {
		fmt.Fprint(stderr, res.Summary())
		if jsonOut != "" {
			if werr := writeJSON(jsonOut, res); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	return err
}

// list splits a comma list, dropping empty items.
func list(s string) []string {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func writeJSON(path string, res *load.Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
