// Package gateway is where a connection becomes a session. It implements
// netpoll's Gatekeeper (auth, admission, the resume ownership check, all
// before 101) and Handler (attach to a session, hand frames to dispatch,
// detach), owns the Sink that writes a request's messages to the live
// connection or the session's outbox, serves /healthz, /readyz and the demo
// page on the client listener, and carries out the connection side of a
// drain.
//
// It knows netpoll, auth, sessions, dispatch and traceparent; nothing
// depends on it but the command.
package gateway
