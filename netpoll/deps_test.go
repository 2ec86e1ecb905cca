package netpoll

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDaemonImports keeps netpoll free of the daemon: it must not import
// anything under daemon/, directly or not.
func TestNoDaemonImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const module = "github.com/orchestratord/orchestratord/"
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages, want the real list", len(deps))
	}
	for _, p := range deps {
		if strings.HasPrefix(p, module+"daemon/") || p == module+"daemon" {
			t.Errorf("netpoll depends on %s", p)
		}
	}
}
