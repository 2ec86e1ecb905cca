//go:build !benchnolog

package sessions

// benchNoLog is false in every build of the product: every terminal is
// numbered, logged and delivered (delivery.go). Only the benchmark build
// of `make bench-positions` (-tags benchnolog) sets it, to measure what
// positions and the replay log cost on the echo path against the same
// daemon without them.
const benchNoLog = false
