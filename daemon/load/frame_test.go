package load

import (
	"bytes"
	"testing"
)

func TestParseFrame(t *testing.T) {
	long := bytes.Repeat([]byte{'a'}, 300)
	huge := bytes.Repeat([]byte{'b'}, 70000)
	tests := []struct {
		name    string
		in      []byte
		wantN   int
		wantOp  byte
		wantFin bool
		want    []byte
		wantErr bool
	}{
		{name: "empty", in: nil},
		{name: "one byte", in: []byte{0x81}},
		{name: "short text", in: []byte{0x81, 2, 'h', 'i'}, wantN: 4, wantOp: opText, wantFin: true, want: []byte("hi")},
		{name: "incomplete payload", in: []byte{0x81, 3, 'h', 'i'}},
		{name: "16-bit length", in: append([]byte{0x81, 126, 1, 44}, long...), wantN: 304, wantOp: opText, wantFin: true, want: long},
		{name: "16-bit length header cut", in: []byte{0x81, 126, 1}},
		{name: "64-bit length", in: append([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70}, huge...), wantN: 70010, wantOp: opBin, wantFin: true, want: huge},
		{name: "fragment", in: []byte{0x01, 1, 'x'}, wantN: 3, wantOp: opText, want: []byte("x")},
		{name: "ping", in: []byte{0x89, 0}, wantN: 2, wantOp: opPing, wantFin: true, want: []byte{}},
		{name: "reserved bits", in: []byte{0xC1, 0}, wantErr: true},
		{name: "long control", in: append([]byte{0x89, 126, 0, 200}, long[:200]...), wantErr: true},
		{name: "fragmented control", in: []byte{0x09, 0}, wantErr: true},
		{name: "masked", in: []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, wantN: 8, wantOp: opText, wantFin: true, want: []byte("hi")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := parseFrame(append([]byte(nil), tc.in...))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if n != tc.wantN {
				t.Fatalf("n = %d, want %d", n, tc.wantN)
			}
			if n == 0 {
				return
			}
			if f.op != tc.wantOp || f.fin != tc.wantFin || !bytes.Equal(f.payload, tc.want) {
				t.Fatalf("got op %x fin %v payload %q, want op %x fin %v payload %q", f.op, f.fin, f.payload, tc.wantOp, tc.wantFin, tc.want)
			}
		})
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 7, 125, 126, 1024, 65535, 65536, 100000} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		key := [4]byte{0xde, 0xad, 0xbe, 0xef}
		b := appendFrame([]byte("prefix"), opText, payload, key)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("size %d: prefix lost", size)
		}
		f, n, err := parseFrame(b[len("prefix"):])
		if err != nil || n != len(b)-len("prefix") {
			t.Fatalf("size %d: parse n=%d err=%v, want n=%d", size, n, err, len(b)-len("prefix"))
		}
		if !bytes.Equal(f.payload, payload) {
			t.Fatalf("size %d: payload differs after mask and unmask", size)
		}
	}
}

func TestMaskBytesOffset(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	b := bytes.Repeat([]byte{0}, 21)
	maskBytes(b, key, 3)
	for i, v := range b {
		if want := key[(3+i)&3]; v != want {
			t.Fatalf("byte %d = %d, want %d", i, v, want)
		}
	}
}
