// Package redact masks the secrets URLs carry, wherever a URL is shown:
// check-config output, metric labels, the admin API and logs all go
// through String, the one redaction function of the daemon.
//
// It imports nothing of the daemon, so that config, telemetry, backends
// and cmd can all use it.
package redact
