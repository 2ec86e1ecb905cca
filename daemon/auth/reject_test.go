package auth

import (
	"errors"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// TestGateReject: a handshake the gateway refuses after Check admitted it
// gets the table's row and holds no slot any more (node-wide or per IP).
func TestGateReject(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.Limits.PerIPConnections = 1 })
	for _, code := range []string{CodeForbidden, CodeStoreUnavailable} {
		h := handshake("127.0.0.9:1", tok)
		if _, r := g.Check(h); r != nil {
			t.Fatalf("Check refused: %v", r)
		}
		r := g.Reject(h, code, errors.New("found after Check"))
		if r != refusal.Of(code) {
			t.Fatalf("Reject(%s) = %+v, want the table's row", code, r)
		}
		if n := g.Connections(); n != 0 {
			t.Fatalf("after Reject(%s): %d connections held, want 0", code, n)
		}
	}
	if _, r := g.Check(handshake("127.0.0.9:2", tok)); r != nil {
		t.Fatalf("the per-IP slot was not given back: %v", r)
	}
}
