package dispatch

// CodeNodeLost is the terminal error of a request whose replica stopped
// without draining; a surviving replica writes it (sessions.CodeNodeLost,
// contract v1.1 section 4a). dispatch never produces it itself.
const CodeNodeLost = "node_lost"

// RouteBeginner is implemented by a Sessions whose store records requests
// in flight for node-loss recovery: it needs the route of each request that
// runs on its own goroutine. Optional: without it, Begin is used.
type RouteBeginner interface {
	BeginRoute(sessionID, requestID, route string) Output
}

// beginRun starts the output of a request that runs on its own goroutine
// (never on a poller worker: its End may wait one store round trip).
func beginRun(store Sessions, sessionID, requestID, route string) Output {
	if rb, ok := store.(RouteBeginner); ok {
		return rb.BeginRoute(sessionID, requestID, route)
	}
	return store.Begin(sessionID, requestID)
}
