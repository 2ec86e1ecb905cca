package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/admin"
	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/gateway"
	"github.com/orchestratord/orchestratord/daemon/lifecycle"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
	"github.com/orchestratord/orchestratord/netpoll"
	"github.com/orchestratord/orchestratord/web"
)

// serve runs the daemon until a drain ends. reload reads the config again
// (SIGHUP). lns may hold pre-bound listeners by name (lifecycle.SocketClient,
// lifecycle.SocketAdmin); otherwise they come from socket activation or are
// bound here. Cancelling ctx starts a drain.
func serve(ctx context.Context, cfg config.Config, reload func() (config.Config, error), path string, stdout io.Writer, lns map[string]net.Listener) error {
	// Signals are taken from the start: a SIGTERM during start-up waits in
	// the channel and drains once serving, instead of killing the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	started := time.Now()
	log, level := telemetry.NewLogger(stdout, cfg.Log.Level)
	log = log.With("node", cfg.Node)
	gc := newGCTuner()
	gc.warnEnv(cfg.Runtime, log)
	gc.apply(cfg.Runtime, log)
	metrics := telemetry.New(version)

	// The components' own background work (JWKS refresh, store) stops with
	// bg once serve returns; ctx only asks for the drain.
	bg, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The bus addresses replicas by instance: unique per process even when
	// several daemons share a host name (SO_REUSEPORT, restarts).
	instance := fmt.Sprintf("%s-%d-%s", cfg.Node, os.Getpid(), sessions.NewID()[2:10])
	mgr, err := sessions.OpenOptions(bg, cfg.Sessions, instance, log, sessions.Options{
		// A resume's replay keeps at most half the outbound bound queued
		// and streams the rest as the socket drains: never a 4008 for it.
		PaceBytes: cfg.WS.OutboundQueueBytes / 2,
	})
	if err != nil {
		return fmt.Errorf("open session store: %w", err)
	}
	defer mgr.Close()

	set, err := backends.New(cfg.Backends, os.LookupEnv, log, backends.WithMeter(metrics))
	if err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	table, err := dispatch.NewTable(cfg, set)
	if err != nil {
		return err
	}
	router := dispatch.New(table, gateway.DispatchSessions(mgr, metrics), metrics, log)
	mgr.SetRerun(router.Rerun) // retry_on_node_loss: a lost replica's requests run again here

	gate, err := newGate(bg, cfg, log)
	if err != nil {
		return err
	}

	var state *node // set below, before any listener serves
	var plain http.Handler
	if cfg.WS.DemoPage {
		plain = web.Demo(func() []string { return router.Table().Routes() })
	}
	gw := gateway.New(gateway.Options{
		Node:                    cfg.Node,
		Heartbeat:               cfg.WS.Heartbeat.D(),
		AllowExpiredConnections: cfg.Auth.AllowExpiredConnections,
		ReconnectAfter:          cfg.Drain.ReconnectAfter.D(),
		Path:                    cfg.WS.Path,
		Plain:                   plain,
		Ready:                   func() error { return state.backendsReady() },
	}, gate, gateway.ManagerSessions(mgr), router, metrics, log)
	router.SetAccessLog(cfg.Log.Requests)
	defer gw.Close()

	eng, err := netpoll.New(netpoll.Config{
		MaxMessageBytes:    cfg.WS.MaxMessageBytes,
		HandshakeTimeout:   cfg.WS.HandshakeTimeout.D(),
		Heartbeat:          cfg.WS.Heartbeat.D(),
		OutboundQueueBytes: cfg.WS.OutboundQueueBytes,
		Workers:            cfg.WS.Workers,
		TrustedProxies:     cfg.Listen.TrustedPrefixes(),
		ProxyProtocol:      cfg.Listen.ProxyProtocol,
	}, gw, gw, gw.PlainHandler(), log)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	gw.SetAlive(eng.Alive)

	// Listeners: from socket activation when systemd passes them, else bound
	// here.
	activated := lns
	if activated == nil {
		if activated, err = lifecycle.Activated(); err != nil {
			return err
		}
	}
	clientLn, err := listen(activated[lifecycle.SocketClient], cfg.Listen.Client, cfg.Listen.ReusePort)
	if err != nil {
		return fmt.Errorf("listen.client: %w", err)
	}
	adminLn, err := listen(activated[lifecycle.SocketAdmin], cfg.Listen.Admin, false)
	if err != nil {
		clientLn.Close()
		return fmt.Errorf("listen.admin: %w", err)
	}

	state = &node{cfg: cfg, eng: eng, gw: gw, router: router, mgr: mgr, set: set, meter: metrics, gc: gc, stop: make(chan struct{})}
	state.current.Store(&cfg)
	state.settleHeap(newHeapSettler())
	metrics.SetGauges(state.gauges)
	metrics.SetBackends(state.backendGauges)

	drainReq := make(chan string, 1)
	adm, err := admin.New(cfg.Admin, adminLn.Addr().String(), admin.Deps{
		Node:      state,
		Sessions:  sessionLister{gw},
		Detached:  detachedLister{mgr},
		Backends:  backendLister{state},
		Drainer:   drainer(drainReq),
		Readiness: readiness{gw},
		Version:   version,
		Started:   started,
	}, metrics.Registry(), log)
	if err != nil {
		clientLn.Close()
		adminLn.Close()
		return fmt.Errorf("admin: %w", err)
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := eng.Serve(clientLn); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("client listener stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := adm.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("admin listener stopped", "err", err)
		}
	}()
	log.Info("serving", "config", path, "client", clientLn.Addr().String(), "admin", adminLn.Addr().String(),
		"store", cfg.Sessions.Store, "version", version, "routes", len(cfg.Routes))

	notifier := lifecycle.NewNotifier(os.Getenv("NOTIFY_SOCKET"), log)
	lifecycle.Run(ctx, lifecycle.Options{
		Notifier: notifier,
		Timing:   lifecycle.Timing{LBGrace: cfg.Drain.LBGrace.D(), Timeout: cfg.Drain.Timeout.D()},
		CurrentTiming: func() lifecycle.Timing {
			c := state.current.Load()
			return lifecycle.Timing{LBGrace: c.Drain.LBGrace.D(), Timeout: c.Drain.Timeout.D()}
		},
		Steps: lifecycle.Steps{
			Start: func() {
				state.startDrain(time.Now())
				gw.StartDrain()
			},
			StopListening: func() {
				clientLn.Close()
			},
			Wait: router.Wait,
			Abort: func() {
				gw.DetachAll()
				router.CancelAll(dispatch.ErrDraining)
				wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer wcancel()
				if err := router.Wait(wctx); err != nil {
					log.Error("requests did not end after cancel", "in_flight", router.InFlight())
				}
			},
			Close: func() {
				eng.Close()
				sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer scancel()
				_ = adm.Shutdown(sctx)
			},
		},
		Reload: func() error {
			next, err := reload()
			if err == nil {
				err = state.apply(next, gate, level, log)
			}
			metrics.Reloaded(err)
			return err
		},
		Alive:            gw.Alive,
		Status:           state.status,
		StatusInterval:   10 * time.Second,
		WatchdogInterval: lifecycle.WatchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")),
		Signals:          sigs,
		DrainRequests:    drainReq,
	}, log)
	wg.Wait()
	state.closeSets()
	log.Info("exiting")
	return nil
}

// listen returns the activated listener when there is one, else binds addr.
func listen(activated net.Listener, addr string, reusePort bool) (net.Listener, error) {
	if activated != nil {
		return activated, nil
	}
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = reusePortControl
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
