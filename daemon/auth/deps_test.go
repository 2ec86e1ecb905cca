package auth

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: auth imports daemon/config and nothing else of the daemon (not
// netpoll, gateway, sessions or dispatch); of netpoll, only its leaf
// netpoll/refusal, the one refusal table.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/orchestratord/orchestratord/"
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, mod) {
			continue
		}
		switch strings.TrimPrefix(p, mod) {
		case "daemon/auth", "daemon/config", "netpoll/refusal", "daemon/redact": // redact: config's leaf
		default:
			t.Errorf("auth depends on %s", p)
		}
	}
}
