package load

import (
	"errors"
	"testing"
)

func TestCheckerProtocol(t *testing.T) {
	data := []byte(`"abc"`)
	type step struct {
		msg      string
		welcomed bool
		wantErr  error
		wantDone bool
		wantCode string
		wantID   uint64
	}
	tests := []struct {
		name   string
		starts []uint64
		steps  []step
		left   int
	}{
		{name: "welcome first", steps: []step{{msg: `{"type":"welcome","session":"s"}`}}},
		{name: "result before welcome", starts: []uint64{1}, steps: []step{{msg: `{"type":"result","id":"1","data":"abc"}`, wantErr: ErrNoWelcome}}, left: 1},
		{name: "result", starts: []uint64{1}, steps: []step{{msg: `{"type":"result","id":"1","data":"abc"}`, welcomed: true, wantDone: true, wantID: 1}}},
		{name: "out of order results", starts: []uint64{1, 2}, steps: []step{
			{msg: `{"type":"result","id":"2","data":"abc"}`, welcomed: true, wantDone: true, wantID: 2},
			{msg: `{"type":"result","id":"1","data":"abc"}`, welcomed: true, wantDone: true, wantID: 1},
		}},
		{name: "second terminal", starts: []uint64{1}, steps: []step{
			{msg: `{"type":"result","id":"1","data":"abc"}`, welcomed: true, wantDone: true, wantID: 1},
			{msg: `{"type":"error","id":"1","code":"timeout"}`, welcomed: true, wantErr: ErrUnknownID},
		}},
		{name: "unknown id", starts: []uint64{1}, steps: []step{{msg: `{"type":"result","id":"7","data":"abc"}`, welcomed: true, wantErr: ErrUnknownID}}, left: 1},
		{name: "non-numeric id", starts: []uint64{1}, steps: []step{{msg: `{"type":"result","id":"x","data":"abc"}`, welcomed: true, wantErr: ErrUnknownID}}, left: 1},
		{name: "error terminal", starts: []uint64{3}, steps: []step{{msg: `{"type":"error","id":"3","code":"overloaded"}`, welcomed: true, wantDone: true, wantCode: "overloaded", wantID: 3}}},
		{name: "chunks in order", starts: []uint64{1}, steps: []step{
			{msg: `{"type":"chunk","id":"1","seq":0,"data":1}`, welcomed: true},
			{msg: `{"type":"chunk","id":"1","seq":1,"data":2}`, welcomed: true},
			{msg: `{"type":"result","id":"1","data":null}`, welcomed: true, wantDone: true, wantID: 1},
		}},
		{name: "chunk gap", starts: []uint64{1}, steps: []step{
			{msg: `{"type":"chunk","id":"1","seq":0,"data":1}`, welcomed: true},
			{msg: `{"type":"chunk","id":"1","seq":2,"data":2}`, welcomed: true, wantErr: ErrSeqOrder},
		}, left: 1},
		{name: "chunk not from zero", starts: []uint64{1}, steps: []step{{msg: `{"type":"chunk","id":"1","seq":1}`, welcomed: true, wantErr: ErrSeqOrder}}, left: 1},
		{name: "chunk without seq", starts: []uint64{1}, steps: []step{{msg: `{"type":"chunk","id":"1"}`, welcomed: true, wantErr: ErrBadMessage}}, left: 1},
		{name: "chunk after terminal", starts: []uint64{1}, steps: []step{
			{msg: `{"type":"result","id":"1","data":"abc"}`, welcomed: true, wantDone: true, wantID: 1},
			{msg: `{"type":"chunk","id":"1","seq":0}`, welcomed: true, wantErr: ErrUnknownID},
		}},
		{name: "data differs", starts: []uint64{1}, steps: []step{{msg: `{"type":"result","id":"1","data":"abd"}`, welcomed: true, wantDone: true, wantID: 1, wantErr: ErrDataMismatch}}},
		{name: "not json", steps: []step{{msg: `{"type":`, welcomed: true, wantErr: ErrBadMessage}}},
		{name: "unexpected type", steps: []step{{msg: `{"type":"welcome"}`, welcomed: true, wantErr: ErrUnexpected}}},
		{name: "pong ignored", starts: []uint64{1}, steps: []step{{msg: `{"type":"pong","id":"1"}`, welcomed: true}}, left: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Checker
			for _, id := range tc.starts {
				c.Start(Pending{ID: id})
			}
			for i, s := range tc.steps {
				a, err := c.Protocol([]byte(s.msg), s.welcomed, data)
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d: err = %v, want %v", i, err, s.wantErr)
				}
				if a.Done != s.wantDone || a.Code != s.wantCode || (a.Done && a.Req.ID != s.wantID) {
					t.Fatalf("step %d: got done %v code %q id %d, want done %v code %q id %d",
						i, a.Done, a.Code, a.Req.ID, s.wantDone, s.wantCode, s.wantID)
				}
			}
			if c.Len() != tc.left {
				t.Fatalf("in flight after: got %d, want %d", c.Len(), tc.left)
			}
		})
	}
}

func TestCheckerRaw(t *testing.T) {
	const size = 32
	payload := func(id uint64) []byte {
		b := make([]byte, size)
		rawPayload(b, id)
		return b
	}
	var c Checker
	c.Start(Pending{ID: 1})
	c.Start(Pending{ID: 2})
	if a, err := c.Raw(payload(1), size); err != nil || a.Req.ID != 1 {
		t.Fatalf("first echo: got id %d err %v, want 1 nil", a.Req.ID, err)
	}
	// The echo of 3 arrives where 2 is due: the order is wrong.
	if _, err := c.Raw(payload(3), size); !errors.Is(err, ErrDataMismatch) {
		t.Fatalf("wrong echo: err = %v, want %v", err, ErrDataMismatch)
	}
	if _, err := c.Raw(payload(4), size); !errors.Is(err, ErrNothingFlying) {
		t.Fatalf("extra echo: err = %v, want %v", err, ErrNothingFlying)
	}
	c.Start(Pending{ID: 5})
	if _, err := c.Raw(payload(5)[:size-1], size); !errors.Is(err, ErrDataMismatch) {
		t.Fatalf("short echo: err = %v, want %v", err, ErrDataMismatch)
	}
}

func TestRequestEncoding(t *testing.T) {
	data := echoData(1024)
	req := protoRequest(nil, "echo", 12345678, data)
	if len(req) != 1024 {
		t.Fatalf("request length %d, want 1024", len(req))
	}
	var c Checker
	c.Start(Pending{ID: 12345678})
	// The daemon's result carries data untouched.
	res := append([]byte(`{"type":"result","id":"12345678","data":`), data...)
	res = append(res, '}')
	if a, err := c.Protocol(res, true, data); err != nil || !a.Done {
		t.Fatalf("result of own request: done %v err %v", a.Done, err)
	}
	if got := string(idPrefix(42)); got != "00000000000000000042" {
		t.Fatalf("idPrefix(42) = %q", got)
	}
}
