package lifecycle

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks sd_notify to systemd: one datagram per state change on
// the unix socket named by NOTIFY_SOCKET (a leading '@' names an abstract
// socket). With no socket every method does nothing. Safe for concurrent
// use; messages from concurrent callers are sent one at a time, in the
// order the calls take the lock.
type Notifier struct {
	socket string // NOTIFY_SOCKET, "" when not under systemd
	log    *slog.Logger
	// sink delivers one message; sendDatagram outside tests.
	sink   func(socket, state string) error
	mu     sync.Mutex // serialises sends so their order is the call order
	warned bool       // guarded by mu: a failing socket is logged once
}

// NewNotifier returns a Notifier for notifySocket (the value of
// NOTIFY_SOCKET; "" disables notifications). It does not read the
// environment itself, so tests may pass their own socket.
func NewNotifier(notifySocket string, log *slog.Logger) *Notifier {
	return &Notifier{socket: notifySocket, log: log, sink: sendDatagram}
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// send writes one datagram. It is what go-systemd's daemon.SdNotify does,
// without reading (or mutating) the process environment.
func (n *Notifier) send(state string) {
	if !n.Enabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.sink(n.socket, state)
	if err != nil && !n.warned {
		n.warned = true
		n.log.Warn("sd_notify failed; further failures are not logged", "state", state, "err", err)
	}
}

func sendDatagram(socket, state string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("dial %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("write %s: %w", socket, err)
	}
	return nil
}

// Ready says the listeners are up (READY=1), at start and after a reload.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping says the drain started (STOPPING=1).
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Reloading says a reload is under way (RELOADING=1 with MONOTONIC_USEC,
// as Type=notify-reload wants); call Ready when it is done.
func (n *Notifier) Reloading() {
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, monotonicUsec()))
}

// Status publishes a one-line status (STATUS=...), shown by systemctl
// status. Newlines are replaced: a datagram's lines are separate fields.
func (n *Notifier) Status(s string) {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	n.send("STATUS=" + string(b))
}

// Watchdog pings the watchdog (WATCHDOG=1).
func (n *Notifier) Watchdog() { n.send(daemon.SdNotifyWatchdog) }

// ExtendTimeout asks systemd for d more time in the current phase
// (EXTEND_TIMEOUT_USEC=); the drain sends it so that a TimeoutStopSec
// shorter than drain.timeout does not kill a drain that is on schedule.
func (n *Notifier) ExtendTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	n.send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// WatchdogInterval returns how often to ping (half of WATCHDOG_USEC, as
// sd_watchdog_enabled(3) advises), or 0 when the watchdog is off or meant
// for another process. watchdogUsec and watchdogPID are the values of
// WATCHDOG_USEC and WATCHDOG_PID.
func WatchdogInterval(watchdogUsec, watchdogPID string) time.Duration {
	if watchdogUsec == "" {
		return 0
	}
	if watchdogPID != "" && watchdogPID != strconv.Itoa(os.Getpid()) {
		return 0
	}
	us, err := strconv.ParseInt(watchdogUsec, 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond / 2
}
