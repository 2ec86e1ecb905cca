package events

import (
	"encoding/json"
	"testing"
)

func TestAppendPos(t *testing.T) {
	for _, msg := range [][]byte{
		AppendResult(nil, "42", []byte(`{"a":1}`)),
		AppendResult(nil, `we"ird\id`, nil),
		AppendError(nil, "7", "timeout", "too slow"),
		[]byte(`{"type":"other"}`),
		[]byte(`{}`),
	} {
		at := PosIndex(msg)
		got := AppendPos(nil, msg, at, 1234)
		var v map[string]any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Fatalf("%s -> %s: %v", msg, got, err)
		}
		if v["pos"] != float64(1234) {
			t.Errorf("%s -> %s: pos %v", msg, got, v["pos"])
		}
		if p := TerminalPos(got); p != 1234 {
			t.Errorf("TerminalPos(%s) = %d", got, p)
		}
		h, tl := SplitPos(msg, at)
		if joined := string(h) + "1234" + string(tl); joined != string(got) {
			t.Errorf("SplitPos: %s, AppendPos: %s", joined, got)
		}
	}
	if got := string(AppendPos(nil, AppendResult(nil, "9", []byte("1")), PosIndex(AppendResult(nil, "9", []byte("1"))), 7)); got != `{"type":"result","id":"9","pos":7,"data":1}` {
		t.Errorf("got %s", got)
	}
}

func TestAckPos(t *testing.T) {
	for in, want := range map[string]bool{"0": true, "17": true, "9007199254740991": true, "9007199254740992": false,
		"-1": false, "1.5": false, "01": false, `"3"`: false, "": false, "null": false, "1e3": false} {
		if _, ok := AckPos([]byte(in)); ok != want {
			t.Errorf("AckPos(%q) ok = %v, want %v", in, ok, want)
		}
	}
	var e Envelope
	if err := Decode([]byte(`{"type":"ack","pos":5}`), &e); err != nil || string(e.Pos) != "5" {
		t.Fatalf("decode ack: %v %q", err, e.Pos)
	}
	if err := Decode([]byte(`{"type":"nope","pos":5}`), &e); err == nil {
		t.Fatal("a message without id other than ack decoded")
	}
}

// TestPosLen: PosLen is the length AppendPos writes, for every shape of
// message AppendPos handles and positions of every digit count.
func TestPosLen(t *testing.T) {
	msgs := [][]byte{
		AppendResult(nil, "42", []byte(`{"a":1}`)),
		AppendError(nil, "7", "timeout", "too slow"),
		[]byte(`{"type":"other"}`),
		[]byte(`{}`),
		[]byte(`{`),
		nil,
	}
	for _, msg := range msgs {
		for _, at := range []int{PosIndex(msg), 0, 1, len(msg), len(msg) + 1} {
			for _, pos := range []uint64{0, 9, 10, 99, 100, 1 << 53, 1<<64 - 1} {
				if got, want := PosLen(msg, at, pos), len(AppendPos(nil, msg, at, pos)); got != want {
					t.Errorf("PosLen(%q, %d, %d) = %d, want %d", msg, at, pos, got, want)
				}
			}
		}
	}
}

// FuzzPosLen: PosLen agrees with AppendPos for any message, index and
// position.
func FuzzPosLen(f *testing.F) {
	f.Add([]byte(`{"type":"result","id":"1","data":{}}`), 25, uint64(7))
	f.Add([]byte(`{}`), 1, uint64(100))
	f.Add([]byte{}, 0, uint64(0))
	f.Fuzz(func(t *testing.T, msg []byte, at int, pos uint64) {
		if got, want := PosLen(msg, at, pos), len(AppendPos(nil, msg, at, pos)); got != want {
			t.Fatalf("PosLen(%q, %d, %d) = %d, want %d", msg, at, pos, got, want)
		}
	})
}
