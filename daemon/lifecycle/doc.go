// Package lifecycle starts, reloads and stops the daemon: the drain
// sequence of the contract (section 5) in its step order, signals (SIGTERM
// and SIGINT drain, SIGHUP reloads), and the systemd integration: sd_notify
// (READY, RELOADING, STOPPING with EXTEND_TIMEOUT_USEC, STATUS, WATCHDOG
// gated on the loops' liveness) and listeners from socket activation.
//
// It declares what it drives as small interfaces and function fields; it
// knows nothing of sockets' contents, sessions or backends.
package lifecycle
