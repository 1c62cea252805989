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
		// RFC 6455 5.2: the most significant bit of a 64-bit length must be 0, and
		// "the minimal number of bytes MUST be used to encode the length".
		{"64-bit length with the top bit", append([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}, 1, 2, 3, 4), 1 << 20, nil, CloseProtocolError},
		{"64-bit length all ones", append([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1, 2, 3, 4), 1 << 20, nil, CloseProtocolError},
		{"16-bit length of 125", nonMinimal(126, 125), 1024, nil, CloseProtocolError},
		{"16-bit length of 0", nonMinimal(126, 0), 1024, nil, CloseProtocolError},
		{"16-bit length of 126", nonMinimal(126, 126), 1024, []frameEvent{{OpBinary, string(make([]byte, 126))}}, 0},
		{"64-bit length of 65535", nonMinimal(127, 65535), 1 << 20, nil, CloseProtocolError},
		{"64-bit length of 5", nonMinimal(127, 5), 1 << 20, nil, CloseProtocolError},
		{"64-bit length of 65536", nonMinimal(127, 65536), 1 << 20, []frameEvent{{OpBinary, string(make([]byte, 65536))}}, 0},
		{"non-minimal length on a ping", func() []byte { b := nonMinimal(126, 5); b[0] = 0x80 | OpPing; return b }(), 1024, nil, CloseProtocolError},
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

// nonMinimal is a masked binary frame of n zero bytes whose length is encoded with
// marker 126 (16 bits) or 127 (64 bits) whatever n is.
func nonMinimal(marker byte, n int) []byte {
	b := []byte{0x80 | OpBinary, 0x80 | marker}
	if marker == 126 {
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	} else {
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0) // a zero masking key
	return append(b, make([]byte, n)...)
}

// TestFrameReaderCloseCodes: a close frame with a code no peer may send fails the
// connection with 1002 and is not passed on (so never echoed); a reason that is not
// UTF-8 fails it with 1007; a one-byte payload (half a code) is 1002.
func TestFrameReaderCloseCodes(t *testing.T) {
	closeFrame := func(code int, reason string) []byte {
		p := binary.BigEndian.AppendUint16(nil, uint16(code))
		return clientFrame(true, OpClose, append(p, reason...), true)
	}
	cases := []struct {
		name  string
		frame []byte
		code  int // 0: the close frame is passed on
	}{
		{"no payload", clientFrame(true, OpClose, nil, true), 0},
		{"one byte", clientFrame(true, OpClose, []byte{0x03}, true), CloseProtocolError},
		{"invalid UTF-8 reason", closeFrame(1000, "bye\xff"), CloseInvalidData},
		{"reason cut inside a code point", closeFrame(1000, "\xe2\x82"), CloseInvalidData},
		{"surrogate in the reason", closeFrame(1000, "\xed\xa0\x80"), CloseInvalidData},
		{"UTF-8 reason", closeFrame(1001, "au revoir \u00e0 bient\u00f4t \U0001F44B"), 0},
	}
	valid := map[int]bool{}
	for _, c := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		valid[c] = true
	}
	for _, c := range []int{0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,
		1013, 1014, 1015, 1016, 1100, 2000, 2999, 3000, 3999, 4000, 4999, 5000, 65535} {
		want := CloseProtocolError
		if valid[c] {
			want = 0
		}
		cases = append(cases, struct {
			name  string
			frame []byte
			code  int
		}{fmt.Sprintf("code %d", c), closeFrame(c, "r"), want})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r frameReader
			evs, code := feedAll(&r, [][]byte{tc.frame}, 1024)
			if code != tc.code {
				t.Fatalf("code %d, want %d", code, tc.code)
			}
			if tc.code != 0 && len(evs) > 0 {
				t.Fatalf("an invalid close frame was passed on: %q", evs)
			}
			if tc.code == 0 && (len(evs) != 1 || evs[0].op != OpClose) {
				t.Fatalf("events %q, want the close frame", evs)
			}
		})
	}
	// What the server sends: never 1005, 1006 or 1015 (nor any invalid code).
	for _, c := range []int{1005, 1006, 1015, 0, 5000} {
		if p := closePayload(c); len(p) != 0 {
			t.Errorf("closePayload(%d) = %x, want no code", c, p)
		}
	}
	if p := closePayload(CloseInvalidData); !bytes.Equal(p, []byte{0x03, 0xef}) {
		t.Errorf("closePayload(1007) = %x", p)
	}
}

// TestFrameReaderUTF8: a text message that is not UTF-8 fails the connection with
// 1007, whole or in fragments, and a code point may be split between fragments.
// Binary messages are not checked.
func TestFrameReaderUTF8(t *testing.T) {
	frags := func(parts ...string) []byte {
		var b []byte
		for i, p := range parts {
			op := byte(OpContinuation)
			if i == 0 {
				op = OpText
			}
			b = append(b, clientFrame(i == len(parts)-1, op, []byte(p), true)...)
		}
		return b
	}
	euro := "\u20ac"     // e2 82 ac
	face := "\U0001F600" // f0 9f 98 80
	cases := []struct {
		name   string
		stream []byte
		want   []frameEvent
		code   int
	}{
		{"valid", clientFrame(true, OpText, []byte("h\u00e9llo "+euro+face), true), []frameEvent{{OpText, "h\u00e9llo " + euro + face}}, 0},
		{"invalid byte", clientFrame(true, OpText, []byte("ab\xffcd"), true), nil, CloseInvalidData},
		{"lone continuation byte", clientFrame(true, OpText, []byte("\x80"), true), nil, CloseInvalidData},
		{"overlong encoding", clientFrame(true, OpText, []byte("\xc0\xaf"), true), nil, CloseInvalidData},
		{"surrogate", clientFrame(true, OpText, []byte("\xed\xa0\x80"), true), nil, CloseInvalidData},
		{"above U+10FFFF", clientFrame(true, OpText, []byte("\xf4\x90\x80\x80"), true), nil, CloseInvalidData},
		{"cut at the end", clientFrame(true, OpText, []byte("ok\xe2\x82"), true), nil, CloseInvalidData},
		{"binary is not text", clientFrame(true, OpBinary, []byte("\xff"), true), []frameEvent{{OpBinary, "\xff"}}, 0},
		{"code point split between fragments", frags("a\xe2", "\x82", "\xacb"), []frameEvent{{OpText, "a" + euro + "b"}}, 0},
		{"four bytes over four fragments", frags("\xf0", "\x9f", "\x98", "\x80"), []frameEvent{{OpText, face}}, 0},
		{"empty fragments around a split", frags("", "\xf0\x9f", "", "\x98\x80", ""), []frameEvent{{OpText, face}}, 0},
		{"invalid in a later fragment", frags("fine", "\xff", "more"), nil, CloseInvalidData},
		{"invalid across the split", frags("a\xe2", "\x28"), nil, CloseInvalidData},
		{"cut at the final fragment", frags("abc", "\xe2\x82"), nil, CloseInvalidData},
		{"binary fragments are not text", cat(clientFrame(false, OpBinary, []byte("\xe2"), true), clientFrame(true, OpContinuation, []byte("\xff"), true)),
			[]frameEvent{{OpBinary, "\xe2\xff"}}, 0},
		{"then the next message", cat(frags("\xe2", "\x82\xac"), clientFrame(true, OpText, []byte("x"), true)),
			[]frameEvent{{OpText, euro}, {OpText, "x"}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i <= len(tc.stream); i++ { // whole, and every split into two reads
				var r frameReader
				chunks := [][]byte{tc.stream}
				if i > 0 && i < len(tc.stream) {
					chunks = [][]byte{tc.stream[:i], tc.stream[i:]}
				}
				evs, code := feedAll(&r, chunks, 1024)
				if code != tc.code || fmt.Sprint(evs) != fmt.Sprint(tc.want) {
					t.Fatalf("split %d: events %q code %d; want %q code %d", i, evs, code, tc.want, tc.code)
				}
			}
		})
	}
	// Fail fast: the first fragment that cannot begin valid text ends the connection
	// before the message is complete.
	var r frameReader
	if _, code := feedAll(&r, [][]byte{clientFrame(false, OpText, []byte("\xff"), true)}, 1024); code != CloseInvalidData {
		t.Errorf("an invalid first fragment: code %d, want %d before the message ends", code, CloseInvalidData)
	}
}

func TestValidPrefix(t *testing.T) {
	for _, tc := range []struct {
		in string
		n  int
		ok bool
	}{
		{"", 0, true}, {"abc", 3, true}, {"a\xe2", 1, true}, {"a\xe2\x82", 1, true}, {"\xf0\x9f\x98", 0, true},
		{"a\xe2\x28", 1, false}, {"\xff", 0, false}, {"\xe0\x80", 0, false}, {"\xed\xa0", 0, false}, {"\xf4\x90", 0, false},
		{"\xc0", 0, false}, {"\u20ac\xe2", 3, true},
	} {
		if n, ok := validPrefix([]byte(tc.in)); n != tc.n || ok != tc.ok {
			t.Errorf("validPrefix(%q) = %d, %v; want %d, %v", tc.in, n, ok, tc.n, tc.ok)
		}
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

// TestFrameReaderFailsEarly: what the first two bytes of a header say is checked before
// the rest of the header arrives, as gorilla and RFC 6455 ("fail the connection" on
// receipt) do.
func TestFrameReaderFailsEarly(t *testing.T) {
	for _, b := range [][]byte{
		{0x81, 0x05}, // unmasked
		{0xc1, 0x85}, // RSV1
		{0x83, 0x85}, // reserved opcode
		{0x09, 0x80}, // fragmented ping
		{0x89, 0xfe}, // ping with a 16-bit length
		{0x80, 0x85}, // continuation with no message
	} {
		var r frameReader
		if code := r.feed(bytes.Clone(b), 1024, func(byte, []byte) bool { return true }); code != CloseProtocolError {
			t.Errorf("%x: code %d, want %d from two bytes", b, code, CloseProtocolError)
		}
	}
}
