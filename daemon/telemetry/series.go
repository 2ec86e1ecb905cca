package telemetry

// StoreOps are the session store operations counted by
// orchestratord_store_errors_total, each exported at 0 from the start so
// that rate() and alerts see a series before the first failure. A call of
// StoreError with another op adds its series when it happens.
var StoreOps = []string{"lookup", "attach", "restore", "get", "patch_context", "append_history"}

// CloseCodes are the close codes of the contract (section 2), each a
// series of orchestratord_closes_total from the start; any other code a
// peer sends is counted as "other", so a client cannot create series.
var CloseCodes = []int{1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 4001, 4008, 4009}

// HandshakeOutcomes are the handshake outcomes exported at 0 from the
// start: "accepted" and the refusal codes of the contract's table.
var HandshakeOutcomes = []string{"accepted", "bad_request", "unauthorized", "forbidden", "origin_not_allowed", "not_found",
	"too_many_connections", "rate_limited", "draining", "at_capacity", "store_unavailable"}
