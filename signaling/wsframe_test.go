package signaling

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// clientFrame encodes a frame as a client sends it: masked unless told otherwise.
func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var b []byte
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, b0, mbit|byte(n))
	case n <= 0xffff:
		b = append(b, b0, mbit|126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := []byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
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
			stopped = op == opClose // the connection ends: nothing more is read
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
		{"text", clientFrame(true, opText, []byte("hello"), true), 1024,
			[]frameEvent{{opText, "hello"}}, 0},
		{"empty text and binary", cat(clientFrame(true, opText, nil, true), clientFrame(true, opBinary, []byte{0, 1, 2}, true)), 1024,
			[]frameEvent{{opText, ""}, {opBinary, "\x00\x01\x02"}}, 0},
		{"16-bit length", clientFrame(true, opText, mid, true), 1024,
			[]frameEvent{{opText, string(mid)}}, 0},
		{"64-bit length", clientFrame(true, opText, big, true), 1 << 20,
			[]frameEvent{{opText, string(big)}}, 0},
		{"fragmented", cat(
			clientFrame(false, opText, []byte("He"), true),
			clientFrame(false, opContinuation, []byte("ll"), true),
			clientFrame(true, opContinuation, []byte("o"), true),
			clientFrame(true, opText, []byte("next"), true)), 1024,
			[]frameEvent{{opText, "Hello"}, {opText, "next"}}, 0},
		{"control frames inside a fragmented message", cat(
			clientFrame(false, opBinary, []byte("a"), true),
			clientFrame(true, opPing, []byte("p"), true),
			clientFrame(false, opContinuation, nil, true),
			clientFrame(true, opPong, []byte("q"), true),
			clientFrame(true, opContinuation, []byte("b"), true)), 1024,
			[]frameEvent{{opPing, "p"}, {opPong, "q"}, {opBinary, "ab"}}, 0},
		{"close ends reading", cat(
			clientFrame(true, opClose, closePayload(closeNormal), true),
			clientFrame(true, opText, []byte("after"), true)), 1024,
			[]frameEvent{{opClose, "\x03\xe8"}}, 0},
		{"unmasked client frame", clientFrame(true, opText, []byte("hi"), false), 1024,
			nil, closeProtocolError},
		{"unmasked after a good frame", cat(clientFrame(true, opText, []byte("ok"), true), clientFrame(true, opPing, nil, false)), 1024,
			[]frameEvent{{opText, "ok"}}, closeProtocolError},
		{"RSV bit", func() []byte { b := clientFrame(true, opText, []byte("x"), true); b[0] |= 0x40; return b }(), 1024,
			nil, closeProtocolError},
		{"reserved data opcode", clientFrame(true, 0x3, []byte("x"), true), 1024, nil, closeProtocolError},
		{"reserved control opcode", clientFrame(true, 0xB, nil, true), 1024, nil, closeProtocolError},
		{"fragmented ping", clientFrame(false, opPing, nil, true), 1024, nil, closeProtocolError},
		{"ping over 125 bytes", clientFrame(true, opPing, mid[:126], true), 1024, nil, closeProtocolError},
		{"continuation without a start", clientFrame(true, opContinuation, []byte("x"), true), 1024, nil, closeProtocolError},
		{"new message inside a fragmented one", cat(
			clientFrame(false, opText, []byte("a"), true),
			clientFrame(true, opText, []byte("b"), true)), 1024, nil, closeProtocolError},
		{"oversized frame", clientFrame(true, opText, mid, true), 299, nil, closeTooBig},
		{"oversized by fragments", cat(
			clientFrame(false, opText, mid[:200], true),
			clientFrame(true, opContinuation, mid[:100], true)), 299, nil, closeTooBig},
		{"exactly the limit", clientFrame(true, opText, mid, true), 300, []frameEvent{{opText, string(mid)}}, 0},
		{"64-bit length with the top bit", append([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}, 1, 2, 3, 4), 1 << 20, nil, closeTooBig},
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
				if code == 0 && len(tc.want) > 0 && tc.want[len(tc.want)-1].op != opClose && (r.partial != nil || r.frag != nil || r.fragOp != 0) {
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
	hdr := clientFrame(true, opText, make([]byte, 70000), true)[:14]
	if code := r.feed(hdr, 65536, func(byte, []byte) bool { return true }); code != closeTooBig {
		t.Fatalf("code %d, want %d", code, closeTooBig)
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
		f := appendFrame(nil, opText, make([]byte, n))
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
