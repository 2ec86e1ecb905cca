package netpoll

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// recorder is a frameSink that logs what it gets.
type recorder struct{ log []string }

func (r *recorder) onText(p []byte) {
	if !validUTF8(p) {
		panic(fmt.Sprintf("onText with invalid UTF-8 %q", p))
	}
	r.log = append(r.log, "text:"+string(p))
}
func (r *recorder) onPing(p []byte) { r.log = append(r.log, "ping:"+string(p)) }
func (r *recorder) onPong(p []byte) { r.log = append(r.log, "pong:"+string(p)) }
func (r *recorder) onClose(code CloseCode, reason []byte) {
	r.log = append(r.log, fmt.Sprintf("close:%d:%s", code, reason))
}

// decodeAll feeds the chunks to a fresh reader and returns the log with the
// terminating error, if any.
func decodeAll(maxMsg int, chunks ...[]byte) []string {
	bufs := &bufPool{}
	r := &frameReader{bufs: bufs, maxMsg: maxMsg}
	rec := &recorder{}
	for _, c := range chunks {
		if err := r.feed(append([]byte(nil), c...), rec); err != nil {
			rec.log = append(rec.log, "err:"+err.Error())
			break
		}
	}
	return rec.log
}

func TestFrameReaderSplits(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want []string
	}{
		{"text", text("hello"), []string{"text:hello"}},
		{"two-messages", append(text("a"), text("b")...), []string{"text:a", "text:b"}},
		{"fragments-with-ping", bytes.Join([][]byte{frame(false, 0, ws.OpText, []byte("ab")), frame(true, 0, ws.OpPing, []byte("p")), frame(true, 0, ws.OpContinuation, []byte("cd"))}, nil),
			[]string{"ping:p", "text:abcd"}},
		{"close", closeFrame(1000, "bye"), []string{"close:1000:bye", "err:" + errCloseFrame.Error()}},
		{"too-big", text(strings.Repeat("x", 11)), []string{"err:" + errTooBig.Error()}},
		{"medium", text(strings.Repeat("y", 10)), []string{"text:" + strings.Repeat("y", 10)}},
	}
	for _, tc := range tests {
		// Every split point must give the same result as the whole input.
		for i := 0; i <= len(tc.in); i++ {
			t.Run(fmt.Sprintf("%s/split-%d", tc.name, i), func(t *testing.T) {
				got := decodeAll(10, tc.in[:i], tc.in[i:])
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			})
		}
	}
}

func TestUTF8State(t *testing.T) {
	tests := []struct {
		in        string
		wantValid bool
	}{
		{"", true}, {"plain ascii text, long enough for the word loop", true},
		{"κόσμε", true}, {"\U0010ffff", true}, {"\xed\x9f\xbf", true},
		{"\xed\xa0\x80", false}, {"\xf4\x90\x80\x80", false}, {"\xc0\xaf", false},
		{"\xe0\x9f\xbf", false}, {"\xf0\x8f\xbf\xbf", false}, {"abc\xff", false}, {"\xe2\x82", false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%x", tc.in), func(t *testing.T) {
			if got := validUTF8([]byte(tc.in)); got != tc.wantValid {
				t.Fatalf("validUTF8 = %v, want %v", got, tc.wantValid)
			}
			// Byte by byte gives the same verdict.
			var s utf8State
			ok := true
			for i := 0; i < len(tc.in) && ok; i++ {
				ok = s.feed([]byte{tc.in[i]})
			}
			if got := ok && s.complete(); got != tc.wantValid {
				t.Fatalf("bytewise = %v, want %v", got, tc.wantValid)
			}
		})
	}
}

// FuzzFrameReader decodes arbitrary input whole and split in two at a fuzzed
// point: both must give the same events and error, and text must be UTF-8.
func FuzzFrameReader(f *testing.F) {
	seeds := [][]byte{
		text("hello"),
		append(text(""), closeFrame(1000, "bye")...),
		bytes.Join([][]byte{frame(false, 0, ws.OpText, []byte("κό")), frame(true, 0, ws.OpPing, []byte("p")), frame(true, 0, ws.OpContinuation, []byte("σμε"))}, nil),
		frame(true, 0, ws.OpText, bytes.Repeat([]byte("a"), 300)),
		frame(true, 4, ws.OpText, []byte("rsv")),
		{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'},
		frame(true, 0, ws.OpBinary, []byte{1}),
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0},
	}
	for i, s := range seeds {
		f.Add(s, uint16(i*3))
	}
	f.Fuzz(func(t *testing.T, in []byte, at uint16) {
		whole := decodeAll(256, in)
		k := int(at) % (len(in) + 1)
		split := decodeAll(256, in[:k], in[k:])
		if fmt.Sprint(whole) != fmt.Sprint(split) {
			t.Fatalf("whole %q != split at %d %q", whole, k, split)
		}
		for _, ev := range whole {
			if strings.HasPrefix(ev, "text:") && len(ev)-5 > 256 {
				t.Fatalf("message of %d bytes over the limit", len(ev)-5)
			}
		}
	})
}

// BenchmarkFrameRead decodes a small masked text frame.
func BenchmarkFrameRead(b *testing.B) {
	in := text(`{"type":"echo","id":"1","data":{"hello":"world"}}`)
	buf := make([]byte, len(in))
	r := &frameReader{bufs: &bufPool{}, maxMsg: 65536}
	rec := discardSink{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		copy(buf, in)
		if err := r.feed(buf, rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrameReadSplit decodes the same frame arriving in two reads (the
// partial path with a pooled buffer).
func BenchmarkFrameReadSplit(b *testing.B) {
	in := text(`{"type":"echo","id":"1","data":{"hello":"world"}}`)
	buf := make([]byte, len(in))
	r := &frameReader{bufs: &bufPool{}, maxMsg: 65536}
	rec := discardSink{}
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, in)
		if err := r.feed(buf[:20], rec); err != nil {
			b.Fatal(err)
		}
		if err := r.feed(buf[20:], rec); err != nil {
			b.Fatal(err)
		}
	}
}

type discardSink struct{}

func (discardSink) onText([]byte)             {}
func (discardSink) onPing([]byte)             {}
func (discardSink) onPong([]byte)             {}
func (discardSink) onClose(CloseCode, []byte) {}

// TestFrameReadNoAlloc backs the zero-allocation claim of the read path.
func TestFrameReadNoAlloc(t *testing.T) {
	in := text(`{"type":"echo","id":"1","data":{}}`)
	buf := make([]byte, len(in))
	r := &frameReader{bufs: &bufPool{}, maxMsg: 65536}
	allocs := testing.AllocsPerRun(1000, func() {
		copy(buf, in)
		if err := r.feed(buf, discardSink{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("frame read allocates %v times, want 0", allocs)
	}
}

// FuzzUTF8State checks the chunked validator against utf8.Valid: input cut
// into three chunks at fuzzed points gives the whole buffer's verdict, and
// once a chunk fails, the whole buffer is invalid.
func FuzzUTF8State(f *testing.F) {
	for _, s := range []string{"", "κόσμε", "a\xf0\x9f\x98\x80b", "\xed\xa0\x80", "abc\xff", "\xe2\x82", "\xf4\x90\x80\x80xyz", "plain ascii text"} {
		f.Add([]byte(s), uint8(1), uint8(2))
	}
	f.Fuzz(func(t *testing.T, p []byte, a, b uint8) {
		i := min(int(a), len(p))
		j := min(i+int(b), len(p))
		var s utf8State
		ok := s.feed(p[:i]) && s.feed(p[i:j]) && s.feed(p[j:])
		if got, want := ok && s.complete(), utf8.Valid(p); got != want {
			t.Fatalf("chunked at %d,%d = %v, utf8.Valid = %v for %q", i, j, got, want, p)
		}
	})
}

// TestUTF8StateEverySplit feeds each test string cut at every pair of
// points.
func TestUTF8StateEverySplit(t *testing.T) {
	for _, in := range []string{"κόσμε-\U0010ffff-\xed\x9f\xbf", "ok\xed\xa0\x80", "\xf0\x9f\x98\x80\xf0\x9f\x98", "a\xc3"} {
		p := []byte(in)
		for i := 0; i <= len(p); i++ {
			for j := i; j <= len(p); j++ {
				var s utf8State
				ok := s.feed(p[:i]) && s.feed(p[i:j]) && s.feed(p[j:])
				if got, want := ok && s.complete(), utf8.Valid(p); got != want {
					t.Fatalf("%q cut at %d,%d: %v, want %v", in, i, j, got, want)
				}
			}
		}
	}
}
