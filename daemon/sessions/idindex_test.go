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

// TestRegistryOneHash: the registry's shards index their records by the
// hash that picked the shard (one hash per lookup): every record is found
// through lookup and getHashed, and the slots spread (a slot taken from
// the hash's shard bits, the same for every id of a shard, would put
// every id of a shard in one probe run).
func TestRegistryOneHash(t *testing.T) {
	r := newRegistry(nil)
	const n = 20000
	for range n {
		id := NewID()
		sh, _ := r.lookup(id)
		sh.m.put(&Record{id: id})
	}
	probes := 0
	for i := range r.shards {
		sh := &r.shards[i]
		for l := range sh.m.all() {
			got, h := r.lookup(l.id)
			if got != sh || sh.m.getHashed(l.id, h) != l || sh.m.get(l.id) != l {
				t.Fatalf("record %s not found through its hash", l.id)
			}
			mask := uint64(len(sh.m.slots) - 1)
			for j := sh.m.home(h); sh.m.slots[j] != l; j = (j + 1) & mask {
				probes++
			}
		}
	}
	if r.Len() != n {
		t.Fatalf("registry holds %d, want %d", r.Len(), n)
	}
	if mean := float64(probes) / n; mean > 2 {
		t.Fatalf("mean probe distance %.2f slots: the slots do not spread", mean)
	}
}
