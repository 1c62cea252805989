package wsconn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// clientFrame encodes a frame as a client sends it: masked unless told otherwise.
func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	return AppendClientFrame(nil, fin, op, payload, masked)
}

type frameEvent struct {
	op      byte
	payload string
}

// feedAll feeds chunks in order and records what the reader emits.
func feedAll(r *frameReader, chunks [][]byte, max int) (evs []frameEvent, code int) {
	stopped := false
	for _, c := range chunks {
		c = append([]byte(nil), c...) // feed may unmask in place
		code = r.feed(c, max, func(op byte, p []byte) bool {
			evs = append(evs, frameEvent{op, string(p)})
			stopped = op == OpClose // the connection ends: nothing more is read
			return !stopped
		})
		if code != 0 || stopped {
			return evs, code
		}
	}
	return evs, 0
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000) // 70,000 bytes: a 64-bit length
	mid := bytes.Repeat([]byte("x"), 300)           // a 16-bit length
	cases := []struct {
		name   string
		stream []byte
		max    int
		want   []frameEvent
		code   int
	}{
		{"text", clientFrame(true, OpText, []byte("hello"), true), 1024,
			[]frameEvent{{OpText, "hello"}}, 0},
		{"empty text and binary", cat(clientFrame(true, OpText, nil, true), clientFrame(true, OpBinary, []byte{0, 1, 2}, true)), 1024,
			[]frameEvent{{OpText, ""}, {OpBinary, "\x00\x01\x02"}}, 0},
		{"16-bit length", clientFrame(true, OpText, mid, true), 1024,
			[]frameEvent{{OpText, string(mid)}}, 0},
		{"64-bit length", clientFrame(true, OpText, big, true), 1 << 20,
			[]frameEvent{{OpText, string(big)}}, 0},
		{"fragmented", cat(
			clientFrame(false, OpText, []byte("He"), true),
			clientFrame(false, OpContinuation, []byte("ll"), true),
			clientFrame(true, OpContinuation, []byte("o"), true),
			clientFrame(true, OpText, []byte("next"), true)), 1024,
			[]frameEvent{{OpText, "Hello"}, {OpText, "next"}}, 0},
		{"control frames inside a fragmented message", cat(
			clientFrame(false, OpBinary, []byte("a"), true),
			clientFrame(true, OpPing, []byte("p"), true),
			clientFrame(false, OpContinuation, nil, true),
			clientFrame(true, OpPong, []byte("q"), true),
			clientFrame(true, OpContinuation, []byte("b"), true)), 1024,
			[]frameEvent{{OpPing, "p"}, {OpPong, "q"}, {OpBinary, "ab"}}, 0},
		{"close ends reading", cat(
			clientFrame(true, OpClose, closePayload(CloseNormal), true),
			clientFrame(true, OpText, []byte("after"), true)), 1024,
			[]frameEvent{{OpClose, "\x03\xe8"}}, 0},
		{"unmasked client frame", clientFrame(true, OpText, []byte("hi"), false), 1024,
			nil, CloseProtocolError},
		{"unmasked after a good frame", cat(clientFrame(true, OpText, []byte("ok"), true), clientFrame(true, OpPing, nil, false)), 1024,
			[]frameEvent{{OpText, "ok"}}, CloseProtocolError},
		{"RSV bit", func() []byte { b := clientFrame(true, OpText, []byte("x"), true); b[0] |= 0x40; return b }(), 1024,
			nil, CloseProtocolError},
		{"reserved data opcode", clientFrame(true, 0x3, []byte("x"), true), 1024, nil, CloseProtocolError},
		{"reserved control opcode", clientFrame(true, 0xB, nil, true), 1024, nil, CloseProtocolError},
		{"fragmented ping", clientFrame(false, OpPing, nil, true), 1024, nil, CloseProtocolError},
		{"ping over 125 bytes", clientFrame(true, OpPing, mid[:126], true), 1024, nil, CloseProtocolError},
		{"continuation without a start", clientFrame(true, OpContinuation, []byte("x"), true), 1024, nil, CloseProtocolError},
		{"new message inside a fragmented one", cat(
			clientFrame(false, OpText, []byte("a"), true),
			clientFrame(true, OpText, []byte("b"), true)), 1024, nil, CloseProtocolError},
		{"oversized frame", clientFrame(true, OpText, mid, true), 299, nil, CloseTooBig},
		{"oversized by fragments", cat(
			clientFrame(false, OpText, mid[:200], true),
			clientFrame(true, OpContinuation, mid[:100], true)), 299, nil, CloseTooBig},
		{"exactly the limit", clientFrame(true, OpText, mid, true), 300, []frameEvent{{OpText, string(mid)}}, 0},
		{"64-bit length with the top bit", append([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}, 1, 2, 3, 4), 1 << 20, nil, CloseTooBig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, chunks [][]byte) {
				t.Helper()
				var r frameReader
				evs, code := feedAll(&r, chunks, tc.max)
				if code != tc.code || fmt.Sprint(evs) != fmt.Sprint(tc.want) {
					t.Fatalf("%s: events %q code %d; want %q code %d", how, evs, code, tc.want, tc.code)
				}
				if code == 0 && len(tc.want) > 0 && tc.want[len(tc.want)-1].op != OpClose && (r.partial != nil || r.frag != nil || r.fragOp != 0) {
					t.Errorf("%s: reader holds %d partial and %d fragment bytes after complete messages", how, len(r.partial), len(r.frag))
				}
			}
			check("whole", [][]byte{tc.stream})
			// Every split into two reads, and one byte per read.
			for i := 1; i < len(tc.stream) && len(tc.stream) < 2000; i++ {
				check(fmt.Sprintf("split at %d", i), [][]byte{tc.stream[:i], tc.stream[i:]})
			}
			if len(tc.stream) < 2000 {
				var bytewise [][]byte
				for i := range tc.stream {
					bytewise = append(bytewise, tc.stream[i:i+1])
				}
				check("byte by byte", bytewise)
			} else {
				check("4 KiB reads", chunk(tc.stream, 4096))
			}
		})
	}
}

// TestFrameReaderOversizedBeforePayload: a frame announcing too much is refused from its
// header, before any payload is buffered.
func TestFrameReaderOversizedBeforePayload(t *testing.T) {
	var r frameReader
	hdr := clientFrame(true, OpText, make([]byte, 70000), true)[:14]
	if code := r.feed(hdr, 65536, func(byte, []byte) bool { return true }); code != CloseTooBig {
		t.Fatalf("code %d, want %d", code, CloseTooBig)
	}
}

func chunk(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

func TestUnmask(t *testing.T) {
	key := []byte{1, 2, 3, 4}
	for n := 0; n < 40; n++ {
		want := make([]byte, n)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
			want[i] = b[i] ^ key[i%4]
		}
		unmask(b, binary.LittleEndian.Uint32(key))
		if !bytes.Equal(b, want) {
			t.Fatalf("n=%d: %x, want %x", n, b, want)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := appendFrame(nil, OpText, make([]byte, n))
		var r frameReader
		// Read it back as a client frame: set the mask bit with a zero key.
		c := append([]byte(nil), f[:len(f)-n]...)
		c[1] |= 0x80
		c = append(c, 0, 0, 0, 0)
		c = append(c, make([]byte, n)...)
		var got int = -1
		if code := r.feed(c, 1<<20, func(op byte, p []byte) bool { got = len(p); return true }); code != 0 || got != n {
			t.Fatalf("n=%d: read back %d bytes, code %d", n, got, code)
		}
	}
}
