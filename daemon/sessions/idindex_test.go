package sessions

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestIDIndex checks the index against a map through random puts and
// deletes, across growth, shrinking and wrap-around runs.
func TestIDIndex(t *testing.T) {
	var x idIndex[Record, *Record]
	ref := map[string]*Record{}
	var ids []string
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 20000 {
		if len(ids) == 0 || rng.IntN(100) < 55-len(ids)/200 {
			id := "s_" + strconv.Itoa(step)
			r := &Record{id: id}
			x.put(r)
			ref[id] = r
			ids = append(ids, id)
		} else {
			k := rng.IntN(len(ids))
			id := ids[k]
			ids[k] = ids[len(ids)-1]
			ids = ids[:len(ids)-1]
			if !x.del(ref[id]) {
				t.Fatalf("step %d: del(%s) found nothing", step, id)
			}
			if x.del(ref[id]) {
				t.Fatalf("step %d: second del(%s) found it", step, id)
			}
			if x.get(id) != nil {
				t.Fatalf("step %d: %s still there", step, id)
			}
			delete(ref, id)
		}
		if x.Len() != len(ref) {
			t.Fatalf("step %d: Len %d, want %d", step, x.Len(), len(ref))
		}
		if n := len(x.slots); n > 0 && (x.n*4 > n*3 || n > minIndexSlots && x.n*16 < n*3-16) {
			t.Fatalf("step %d: %d entries in %d slots", step, x.n, n)
		}
		if step%97 == 0 {
			seen := 0
			for r := range x.all() {
				if ref[r.id] != r {
					t.Fatalf("step %d: all yields %s, not in the reference", step, r.id)
				}
				seen++
			}
			if seen != len(ref) {
				t.Fatalf("step %d: all yields %d, want %d", step, seen, len(ref))
			}
			for id, r := range ref {
				if x.get(id) != r {
					t.Fatalf("step %d: get(%s) lost it", step, id)
				}
			}
		}
	}
	if x.get("s_none") != nil || x.del(&Record{id: "s_none"}) {
		t.Fatal("an unknown id was found")
	}
}
