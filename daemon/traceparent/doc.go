// Package traceparent is the daemon's one reading and writing of W3C
// trace context (contract section 7): it checks trace ids, takes the trace
// id out of a traceparent header, checks the version-00 form the gateway
// keeps from trusted proxies' handshakes, and makes the traceparents sent
// to backends.
//
// It imports nothing of the daemon, so that gateway, dispatch and
// backends can all use it.
package traceparent
