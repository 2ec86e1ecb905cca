// Package telemetry owns the daemon's Prometheus metrics and its slog setup.
//
// Metrics live on a registry owned by a Metrics value (never the global
// default registry). The hot-path methods (MessageIn, MessageOut, Request,
// Handshake, StoreError, Closed) do not allocate once a label combination
// has been seen: label children are cached in copy-on-write maps read
// through an atomic pointer, so readers take no lock.
//
// State that other packages own (connections, sessions, requests in flight,
// draining, breaker states) is read at scrape time through callbacks set
// with SetGauges and SetBreakers.
//
// telemetry imports nothing of the daemon; every other package may import it.
package telemetry
