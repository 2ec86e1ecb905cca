// Package telemetry owns the daemon's Prometheus metrics and its slog setup.
//
// Metrics live on a registry owned by a Metrics value (never the global
// default registry). The hot-path methods (MessageIn, MessageOut, BytesIn,
// BytesOut, Request, Handshake, StoreError, Closed, and the backend call
// recorders returned by Endpoint) do not allocate once a label combination
// has been seen: label children are cached in copy-on-write maps read
// through an atomic pointer, so readers take no lock.
//
// State that other packages own (connections, sessions, requests in flight,
// draining; backend bulkheads, breaker states and endpoint health) is read
// at scrape time through callbacks set with SetGauges and SetBackends.
//
// No label carries a secret or a value a client chooses: endpoint labels
// are redacted URLs, close codes are folded into the contract's codes plus
// "other", and every counter exists from the start.
//
// NewLogger writes JSON lines through a handler that masks URL secrets
// (daemon/redact) in every message and value.
//
// telemetry imports nothing of the daemon but daemon/redact; every other
// package may import it.
package telemetry
