//go:build benchnolog

package sessions

// benchNoLog: this binary was built with -tags benchnolog, for `make
// bench-positions` only. Terminals are sent as they are, without a
// position, and never logged: NOT the product (a cut loses them, a resume
// replays nothing). The comparison point for what delivery positions cost.
const benchNoLog = true
