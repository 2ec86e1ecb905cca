package netpoll

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps the per-connection struct small: it is most of what an
// idle connection costs.
func TestConnSize(t *testing.T) {
	if got, want := unsafe.Sizeof(Conn{}), uintptr(192); got > want {
		t.Errorf("sizeof(Conn) = %d, want <= %d", got, want)
	}
	t.Logf("sizeof(Conn)=%d sizeof(frameReader)=%d", unsafe.Sizeof(Conn{}), unsafe.Sizeof(frameReader{}))
}
