package refusal

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestTable: every row has an error status, a unique code, the contract's
// body for it, and Of finds it.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range All() {
		if r.Status < 400 || r.Status > 599 || http.StatusText(r.Status) == "" {
			t.Errorf("%s: status %d", r.Code, r.Status)
		}
		if seen[r.Code] {
			t.Errorf("code %s twice", r.Code)
		}
		seen[r.Code] = true
		var body map[string]string
		if err := json.Unmarshal(r.Body(), &body); err != nil || len(body) != 1 || body["error"] != r.Code {
			t.Errorf("%s: body %q", r.Code, r.Body())
		}
		if b := r.Body(); b[len(b)-1] != '\n' || len(b) != len(`{"error":""}`)+len(r.Code)+1 {
			t.Errorf("%s: body %q is not one line", r.Code, b)
		}
		if Of(r.Code) != r {
			t.Errorf("Of(%s) is not the table's row", r.Code)
		}
	}
	if Of("nope") != nil {
		t.Error("Of(unknown) is not nil")
	}
}

// TestContractStatuses: the statuses of wire contract section 1.
func TestContractStatuses(t *testing.T) {
	want := map[string]int{
		BadRequest: 400, UnsupportedVersion: 426, HeadersTooLarge: 431, Unauthorized: 401,
		Forbidden: 403, OriginNotAllowed: 403, NotFound: 404, TooManyConnections: 429,
		RateLimited: 429, Draining: 503, AtCapacity: 503, StoreUnavailable: 503,
		BodyNotSupported: 413, Internal: 500,
	}
	for code, status := range want {
		if r := Of(code); r == nil || r.Status != status {
			t.Errorf("Of(%s) = %+v, want status %d", code, r, status)
		}
	}
	if len(All()) != len(want) {
		t.Errorf("table has %d rows, this test knows %d", len(All()), len(want))
	}
	if h := Of(UnsupportedVersion).Header; h != "Sec-WebSocket-Version: 13" {
		t.Errorf("426 header %q", h)
	}
}

func TestBodyNoAlloc(t *testing.T) {
	r := Of(Unauthorized)
	if n := testing.AllocsPerRun(100, func() { _ = r.Body() }); n != 0 {
		t.Fatalf("Body allocates %v times", n)
	}
}
