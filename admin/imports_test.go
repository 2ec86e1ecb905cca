package admin

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports checks that admin reads the daemon only through the
// interfaces it declares: of the module's packages it may import only
// daemon/config, daemon/telemetry, daemon/redact (a leaf both import)
// and web.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/orchestratord/orchestratord/"
	allowed := map[string]bool{mod + "admin": true, mod + "daemon/config": true, mod + "daemon/telemetry": true, mod + "daemon/redact": true, mod + "web": true}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, mod) && !allowed[p] {
			t.Errorf("admin depends on %s", p)
		}
	}
}
