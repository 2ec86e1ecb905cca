package sessions

import (
	"hash/maphash"
	"iter"
)

// idIndex is one shard's registry of objects keyed by their session id
// (the Manager's records, the memory store's entries): an open-addressing
// hash table of pointers with linear probing and backward-shift deletion.
// A slot is one pointer (8 bytes) and the table is kept between 3/16 and
// 3/4 full, so an entry costs about 14 bytes where a Go map costs about
// 46 (key string, value pointer and control byte per slot, at its load
// factor). The id is not stored twice: it is read from the object.
//
// Not safe for concurrent use: the shard's mutex guards it.
type idIndex[E any, P interface {
	*E
	indexID() string
}] struct {
	seed  maphash.Seed
	slots []P // len is 0 or a power of two
	n     int
}

const minIndexSlots = 8

// hash is only called once put has made the seed (or the registry set
// its own: then the registry's hash of an id, which picked the shard, is
// the index's too, and a lookup hashes the id once: getHashed).
func (x *idIndex[E, P]) hash(id string) uint64 { return maphash.String(x.seed, id) }

// homeShift drops the hash's low bits, which pick the registry's shard
// (the same in every id of a shard), from the slot.
const homeShift = 6

// home returns the slot where a probe for hash h starts.
func (x *idIndex[E, P]) home(h uint64) uint64 { return h >> homeShift & uint64(len(x.slots)-1) }

// Len returns the number of entries.
func (x *idIndex[E, P]) Len() int { return x.n }

// get returns the entry of id, nil if none.
func (x *idIndex[E, P]) get(id string) P {
	if x.n == 0 {
		return nil
	}
	return x.getHashed(id, x.hash(id))
}

// getHashed is get of id whose hash is h (x.hash(id)).
func (x *idIndex[E, P]) getHashed(id string, h uint64) P {
	if x.n == 0 {
		return nil
	}
	mask := uint64(len(x.slots) - 1)
	for i := x.home(h); ; i = (i + 1) & mask {
		p := x.slots[i]
		if p == nil || p.indexID() == id {
			return p
		}
	}
}

// put adds p, which must not be in the index and whose id must not be.
func (x *idIndex[E, P]) put(p P) {
	if x.seed == (maphash.Seed{}) {
		x.seed = maphash.MakeSeed()
	}
	if (x.n+1)*4 > len(x.slots)*3 {
		x.resize(max(2*len(x.slots), minIndexSlots))
	}
	x.insert(p)
	x.n++
}

func (x *idIndex[E, P]) insert(p P) {
	mask := uint64(len(x.slots) - 1)
	i := x.home(x.hash(p.indexID()))
	for x.slots[i] != nil {
		i = (i + 1) & mask
	}
	x.slots[i] = p
}

// del removes p; false if p is not in the index (another entry may have
// its id).
func (x *idIndex[E, P]) del(p P) bool {
	if x.n == 0 {
		return false
	}
	mask := uint64(len(x.slots) - 1)
	i := x.home(x.hash(p.indexID()))
	for x.slots[i] != p {
		if x.slots[i] == nil {
			return false
		}
		i = (i + 1) & mask
	}
	// Backward shift: move up every following entry of the run whose
	// home slot is not between the hole and itself, so that no probe
	// ever meets a hole before its entry.
	for j := i; ; {
		j = (j + 1) & mask
		q := x.slots[j]
		if q == nil {
			break
		}
		k := x.home(x.hash(q.indexID()))
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue // q's home is in (i, j]: it stays
		}
		x.slots[i] = q
		i = j
	}
	x.slots[i] = nil
	x.n--
	switch {
	case x.n == 0:
		x.slots = nil
	case len(x.slots) > minIndexSlots && x.n*16 < len(x.slots)*3:
		x.resize(len(x.slots) / 2)
	}
	return true
}

func (x *idIndex[E, P]) resize(n int) {
	old := x.slots
	x.slots = make([]P, n)
	for _, p := range old {
		if p != nil {
			x.insert(p)
		}
	}
}

// all yields every entry; the index must not change meanwhile.
func (x *idIndex[E, P]) all() iter.Seq[P] {
	return func(yield func(P) bool) {
		for _, p := range x.slots {
			if p != nil && !yield(p) {
				return
			}
		}
	}
}
