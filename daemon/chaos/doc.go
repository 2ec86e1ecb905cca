// Package chaos attacks a running orchestratord the way production and
// attackers will, and proves that nothing is lost and nobody gets in.
//
// The package holds tests only. TestMain builds the daemon once into a
// temporary directory and every scenario runs it as a subprocess on
// loopback ports, with test-owned backends (httptest servers, a NATS
// worker), test-owned redis-server and nats-server processes, and nginx in
// front of replicas. Each scenario keeps a ledger of the request ids the
// daemon accepted and asserts that every one of them got exactly one
// terminal message (result or error), either on its socket or in its
// session's outbox (collected by resuming the session); that the daemon's
// log holds no panic; and that the daemon's goroutines, file descriptors
// and resident memory return to their baseline afterwards.
//
// The short form (the default, run by `make test` in CI) scales every
// figure down so that the package stays within a couple of minutes under
// -race on two cores. CHAOS_LONG=1 selects the long form (`make chaos`):
// 500 requests in flight, 1,000 vanishing clients, 10,000 slow-loris
// peers, 1,000 resumes in a second. CHAOS_SOAK=10m runs the bounded soak
// (`make soak`). See docs/reliability.md for what each scenario proves and
// the latest figures.
package chaos
