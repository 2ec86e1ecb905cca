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
