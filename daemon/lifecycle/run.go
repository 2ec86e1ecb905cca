package lifecycle

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Options configure Run.
type Options struct {
	// Notifier receives the sd_notify messages; nil sends none.
	Notifier *Notifier
	// Timing is the drain's timing, unless CurrentTiming is set.
	Timing Timing
	// CurrentTiming, when set, is called when the drain starts, so that a
	// reloaded drain.* is in force; Timing is ignored then.
	CurrentTiming func() Timing
	// Steps are the drain's steps, run by Drain.
	Steps Steps
	// Reload applies a new configuration (SIGHUP); an error leaves the old
	// one in force.
	Reload func() error
	// Alive reports the liveness of the daemon's loops; the watchdog is
	// pinged only while it returns nil, so a wedged loop stops the pings.
	Alive func() error
	// Status returns the STATUS= line, published every StatusInterval.
	Status         func() string
	StatusInterval time.Duration
	// WatchdogInterval is how often to ping (0: no watchdog).
	WatchdogInterval time.Duration
	// Signals delivers SIGTERM, SIGINT and SIGHUP.
	Signals <-chan os.Signal
	// DrainRequests starts a drain from elsewhere (the admin API).
	DrainRequests <-chan string
}

// Run announces readiness, then serves signals until a drain is asked for
// (SIGTERM, SIGINT, an admin request, or ctx done), runs the drain and
// returns once it is over and every goroutine Run started has exited.
// SIGHUP calls Reload; a failed reload is logged ("reload refused") and
// the old configuration stays. A second SIGTERM or SIGINT during the drain
// is logged and ignored: the drain already bounds the exit. The watchdog
// and STATUS loops run until the drain ends.
func Run(ctx context.Context, o Options, log *slog.Logger) {
	o.Notifier.Ready()
	if o.Status != nil {
		o.Notifier.Status(o.Status())
	}
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if o.WatchdogInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			watchdog(bg, o, log)
		}()
	}
	if o.Status != nil && o.StatusInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(o.StatusInterval)
			defer t.Stop()
			for {
				select {
				case <-bg.Done():
					return
				case <-t.C:
					o.Notifier.Status(o.Status())
				}
			}
		}()
	}
	reason := waitForDrain(ctx, o, log)
	log.Info("drain requested", "reason", reason)
	// Ignore further signals while draining, but keep consuming them.
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-o.Signals:
				log.Info("signal ignored during drain", "signal", s.String())
			case <-done:
				return
			}
		}
	}()
	timing := o.Timing
	if o.CurrentTiming != nil {
		timing = o.CurrentTiming()
	}
	Drain(timing, o.Steps, o.Notifier, log)
	close(done)
	stopBG()
	wg.Wait()
}

func waitForDrain(ctx context.Context, o Options, log *slog.Logger) string {
	for {
		select {
		case <-ctx.Done():
			return "context done"
		case r := <-o.DrainRequests:
			return r
		case s := <-o.Signals:
			switch s {
			case syscall.SIGHUP:
				reload(o, log)
			case syscall.SIGTERM, syscall.SIGINT:
				return s.String()
			}
		}
	}
}

// reload applies a new configuration between RELOADING=1 and READY=1
// (systemd wants READY=1 after a failed reload too).
func reload(o Options, log *slog.Logger) {
	if o.Reload == nil {
		log.Warn("SIGHUP ignored: no reload function")
		return
	}
	o.Notifier.Reloading()
	if err := o.Reload(); err != nil {
		log.Error("reload refused: the previous configuration stays in force", "err", err)
	} else {
		log.Info("configuration reloaded")
	}
	o.Notifier.Ready()
	if o.Status != nil {
		o.Notifier.Status(o.Status())
	}
}

func watchdog(ctx context.Context, o Options, log *slog.Logger) {
	t := time.NewTicker(o.WatchdogInterval)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if o.Alive != nil {
				if err := o.Alive(); err != nil {
					if !warned {
						log.Error("loops not alive: withholding watchdog pings", "err", err)
						warned = true
					}
					continue
				}
			}
			warned = false
			o.Notifier.Watchdog()
		}
	}
}
