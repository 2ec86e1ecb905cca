// Package admin serves the operators' view of a node on the admin
// listener: a server-rendered page (templ) that updates itself every second
// over server-sent events, JSON APIs for the same data, the actions drain,
// close a session and reset a backend's breakers (POSTs guarded by a CSRF
// token and an Origin / Sec-Fetch-Site check), /healthz, /readyz and
// /metrics. Off loopback every route but /healthz, /readyz (and /metrics
// when config.Admin.MetricsPublic) requires basic-auth credentials.
//
// admin reads the daemon through the small interfaces it declares in
// deps.go; the command wires adapters to them. It must not import daemon
// packages other than config and telemetry (it imports web for its
// embedded assets); TestImports checks this.
package admin
