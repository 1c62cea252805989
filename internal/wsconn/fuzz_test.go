package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// fuzzMaxMessage is the message limit in the fuzz targets: small, so that 1009 is
// reached by mutated lengths.
const fuzzMaxMessage = 512

// fuzzSeeds are client streams: well-formed conversations and the cases the table
// tests name, for the engine to mutate. Their masking key is zero, so that payloads
// (close codes, UTF-8) are plain in the input and the engine's arithmetic on them
// means something.
func fuzzSeeds() [][]byte {
	f := zeroKeyFrame
	cl := func(code int, reason string) []byte {
		return f(true, OpClose, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...), true)
	}
	return [][]byte{
		f(true, OpText, []byte(`{"type":"HEARTBEAT"}`), true),
		cat(f(false, OpText, []byte("He"), true), f(true, OpPing, []byte("p"), true), f(true, OpContinuation, []byte("llo"), true)),
		cat(f(false, OpBinary, []byte{0xff}, true), f(false, OpContinuation, nil, true), f(true, OpContinuation, []byte{0}, true)),
		cat(f(true, OpPong, nil, true), f(true, OpText, []byte("\u20ac"), true), cl(1000, "bye")),
		cat(f(false, OpText, []byte("a\xe2"), true), f(true, OpContinuation, []byte("\x82\xac"), true)),
		cat(f(true, OpText, []byte("x"), true), cl(1014, "")),
		cat(f(true, OpText, []byte("x"), true), cl(1005, "")),
		cl(3000, "\xff"),
		f(true, OpClose, []byte{3}, true),
		f(true, OpClose, nil, true),
		f(true, OpText, []byte("caf\xe9"), true),
		f(true, OpText, make([]byte, 300), true),
		f(true, OpText, make([]byte, 600), true),
		nonMinimal(126, 100),
		nonMinimal(127, 300),
		{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
		f(true, OpText, []byte("unmasked"), false),
		f(true, 0x3, nil, true),
	}
}

// zeroKeyFrame is a client frame masked with a zero key: its payload as written.
func zeroKeyFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b := AppendClientFrame(nil, fin, op, payload, false)
	if !masked {
		return b
	}
	out := append([]byte(nil), b[:len(b)-len(payload)]...)
	out[1] |= 0x80
	out = append(out, 0, 0, 0, 0)
	return append(out, payload...)
}

// TestDifferentialCloseCodes runs the differential over every close code, with and
// without a reason: a value-level mistake in the code table is not a new branch for a
// coverage-guided engine to find.
func TestDifferentialCloseCodes(t *testing.T) {
	for code := range 1 << 16 {
		reasons := []string{"r"}
		if code < 5100 { // where codes are defined: also no reason, and one not UTF-8
			reasons = append(reasons, "", "\xff")
		}
		for _, reason := range reasons {
			p := append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
			stream := cat(clientFrame(true, OpText, []byte("x"), true), clientFrame(true, OpClose, p, true))
			if got, want := ours(stream, fuzzMaxMessage, len(stream)), gorillaReference(t, stream, fuzzMaxMessage); got != want {
				t.Fatalf("close code %d reason %q:\nours:    %s\ngorilla: %s", code, reason, got, want)
			}
		}
	}
}

// FuzzDifferentialGorilla feeds one client byte stream to our frame reader and to
// gorilla/websocket's server-side reader: they must agree on every message (type and
// payload), every ping and pong, and on how the stream ends (a close frame and its
// code, or the code the connection fails with, or the stream running out).
//
// Where RFC 6455 asks more than gorilla checks, the reference is gorilla plus that
// rule, applied by a walk over the frames that is independent of the code under test
// (gorillaReference): text must be UTF-8 (1007, checked as fragments arrive), length
// encodings must be minimal and a 64-bit length must not have its top bit set (1002;
// gorilla reads the latter as a read-limit error), a close payload of one byte is
// 1002 (gorilla takes it for "no code"), a close reason that is not UTF-8 is 1007
// (gorilla says 1002), and 1014 (Bad Gateway, in the IANA registry) is a valid code.
func FuzzDifferentialGorilla(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		want := gorillaReference(t, stream, fuzzMaxMessage)
		for _, chunk := range []int{len(stream), 1, 7} {
			got := ours(stream, fuzzMaxMessage, chunk)
			if got != want {
				t.Fatalf("chunks of %d bytes:\nours:    %s\ngorilla: %s\nstream %x", chunk, got, want, stream)
			}
		}
	})
}

// FuzzFrameReader: any stream, in any split, leaves the reader consistent and never
// makes it emit a message longer than the limit or hold more than a frame.
func FuzzFrameReader(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, stream []byte, split uint8) {
		var r frameReader
		data := bytes.Clone(stream)
		n := 1 + int(split)
		for len(data) > 0 {
			k := min(n, len(data))
			code := r.feed(data[:k], fuzzMaxMessage, func(op byte, p []byte) bool {
				if len(p) > fuzzMaxMessage {
					t.Fatalf("op %d: %d bytes past the limit", op, len(p))
				}
				if op == OpText && !utf8.Valid(p) {
					t.Fatalf("text that is not UTF-8: %q", p)
				}
				return op != OpClose
			})
			if code != 0 {
				if r.partial != nil || r.frag != nil || r.fragOp != 0 {
					t.Fatal("state kept after a failure")
				}
				return
			}
			if len(r.frag) > fuzzMaxMessage {
				t.Fatalf("%d fragment bytes held", len(r.frag))
			}
			data = data[k:]
		}
	})
}

// outcome is what a reader made of a stream, as text: the events in order, then the end.
type outcome string

func describe(events []string, end string) outcome {
	return outcome(strings.Join(append(events, end), " | "))
}

func event(op byte, p []byte) string {
	name := map[byte]string{OpText: "text", OpBinary: "binary", OpPing: "ping", OpPong: "pong"}[op]
	return fmt.Sprintf("%s %q", name, p)
}

// The ways a stream ends.
const (
	endEOF = "eof" // the stream ran out (at a frame boundary or not)
)

func endFail(code int) string { return "fail " + strconv.Itoa(code) }
func endClose(code int) string {
	if code == 0 {
		return "close (no code)"
	}
	return "close " + strconv.Itoa(code)
}

// ours runs our reader over stream in chunks of chunk bytes.
func ours(stream []byte, max, chunk int) outcome {
	var r frameReader
	var events []string
	end := ""
	data := bytes.Clone(stream)
	for len(data) > 0 && end == "" {
		k := min(chunk, len(data))
		code := r.feed(data[:k], max, func(op byte, p []byte) bool {
			if op == OpClose {
				code := 0
				if len(p) >= 2 {
					code = int(binary.BigEndian.Uint16(p))
				}
				end = endClose(code)
				return false
			}
			events = append(events, event(op, p))
			return true
		})
		if code != 0 {
			end = endFail(code)
		}
		data = data[k:]
	}
	if end == "" {
		end = endEOF
	}
	return describe(events, end)
}

// gorillaReference is what gorilla's server reads from stream, with the stricter rules
// above applied: the stream is cut before the first frame gorilla would accept but
// RFC 6455 refuses, and a stream gorilla then reads to its end fails with that frame's
// code.
func gorillaReference(t *testing.T, stream []byte, max int) outcome {
	cut, cutCode, closing := walk(stream, max)
	if cut >= 0 {
		stream = stream[:cut]
	}
	ws := gorillaServer(t, stream)
	ws.SetReadLimit(int64(max))
	var events []string
	ws.SetPingHandler(func(s string) error { events = append(events, event(OpPing, []byte(s))); return nil })
	ws.SetPongHandler(func(s string) error { events = append(events, event(OpPong, []byte(s))); return nil })
	ws.SetCloseHandler(func(int, string) error { return nil })
	for {
		typ, msg, err := ws.ReadMessage()
		if err == nil {
			events = append(events, event(byte(typ), msg))
			continue
		}
		var ce *websocket.CloseError
		var end string
		switch {
		case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			end = endEOF // gorilla's "unexpected EOF" is a CloseError with 1006
			if cut >= 0 {
				end = endFail(cutCode)
			}
		case errors.As(err, &ce):
			// A close frame gorilla accepted: it is closing, the first close frame.
			switch {
			case len(closing) == 1: // gorilla reads half a code as no code
				end = endFail(CloseProtocolError)
			case ce.Code == websocket.CloseNoStatusReceived:
				end = endClose(0)
			default:
				end = endClose(ce.Code)
			}
		case errors.Is(err, websocket.ErrReadLimit):
			end = endFail(CloseTooBig)
		case err.Error() == "websocket: invalid utf8 payload in close frame":
			end = endFail(CloseInvalidData)
		case err.Error() == "websocket: bad close code 1014":
			end = endClose(1014)
			if !utf8.Valid(closing[2:]) {
				end = endFail(CloseInvalidData)
			}
		case strings.HasPrefix(err.Error(), "websocket: "):
			end = endFail(CloseProtocolError)
		default:
			t.Fatalf("gorilla: unexpected error %v", err)
		}
		return describe(events, end)
	}
}

// walk goes over the frames as any reader must split them (by their headers alone)
// and finds the first frame that gorilla accepts but RFC 6455 refuses: a non-minimal
// length (or a 64-bit length with the top bit set), a close payload of one byte, or
// text that can no longer become UTF-8. cut is where that frame starts (-1: none) and
// code what it fails with. It stops where gorilla stops: at a frame whose header
// gorilla refuses, at a message past max, at the end of the stream, or at the first
// close frame, whose payload is closing.
func walk(b []byte, max int) (cut, code int, closing []byte) {
	off, msgOp, msgLen := 0, byte(0), 0
	var text []byte
	for len(b)-off >= 2 {
		start := off
		b0, b1 := b[off], b[off+1]
		op, fin, n := b0&0x0f, b0&0x80 != 0, uint64(b1&0x7f)
		control := op == OpClose || op == OpPing || op == OpPong
		ok := b0&0x70 == 0 && b1&0x80 != 0
		switch {
		case control:
			ok = ok && fin && n <= 125
		case op == OpText || op == OpBinary:
			ok = ok && msgOp == 0
		case op == OpContinuation:
			ok = ok && msgOp != 0
		default:
			ok = false
		}
		if !ok {
			break // gorilla fails this frame from its first two bytes, as RFC 6455 asks
		}
		hdr := 2
		switch n {
		case 126:
			if len(b)-off < 4 {
				return -1, 0, nil
			}
			if n = uint64(b[off+2])<<8 | uint64(b[off+3]); n < 126 {
				return start, CloseProtocolError, nil
			}
			hdr = 4
		case 127:
			if len(b)-off < 10 {
				return -1, 0, nil
			}
			if n = binary.BigEndian.Uint64(b[off+2:]); n >= 1<<63 || n < 1<<16 {
				return start, CloseProtocolError, nil
			}
			hdr = 10
		}
		hdr += 4
		if len(b)-off < hdr {
			break
		}
		if !control && (n > uint64(max) || (op == OpContinuation && uint64(msgLen)+n > uint64(max))) {
			break // gorilla's read limit: 1009, as ours
		}
		if uint64(len(b)-off-hdr) < n {
			break
		}
		key := b[off+hdr-4 : off+hdr]
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = b[off+hdr+i] ^ key[i%4]
		}
		off += hdr + int(n)
		switch op {
		case OpClose:
			if len(payload) == 1 {
				return start, CloseProtocolError, nil
			}
			return -1, 0, payload
		case OpPing, OpPong:
			continue
		case OpText, OpBinary:
			msgOp, msgLen, text = op, 0, text[:0]
		}
		msgLen += int(n)
		if msgOp == OpText {
			text = append(text, payload...)
			if !canBeUTF8(text) || fin && !utf8.Valid(text) {
				return start, CloseInvalidData, nil
			}
		}
		if fin {
			msgOp = 0
		}
	}
	return -1, 0, nil
}

// utf8Prefixes holds every proper prefix (1 to 3 bytes) of the UTF-8 encodings of all
// code points: built by encoding them, independently of the reader's check.
var utf8Prefixes = sync.OnceValue(func() map[string]bool {
	m := make(map[string]bool)
	var buf [4]byte
	for r := rune(0x80); r <= utf8.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		n := utf8.EncodeRune(buf[:], r)
		for k := 1; k < n; k++ {
			m[string(buf[:k])] = true
		}
	}
	return m
})

// canBeUTF8 reports whether b is valid UTF-8 or the start of it: whole code points,
// then possibly the beginning of one.
func canBeUTF8(b []byte) bool {
	if utf8.Valid(b) {
		return true
	}
	for k := 1; k <= 3 && k <= len(b); k++ {
		if utf8.Valid(b[:len(b)-k]) && utf8Prefixes()[string(b[len(b)-k:])] {
			return true
		}
	}
	return false
}

// gorillaServer is gorilla's server side of a connection whose client sent stream
// after its handshake: gorilla's own Upgrade over a connection that reads stream and
// discards what gorilla writes.
func gorillaServer(t *testing.T, stream []byte) *websocket.Conn {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.Header = http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := u.Upgrade(&hijackable{conn: &streamConn{r: bytes.NewReader(stream)}}, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

type hijackable struct {
	conn net.Conn
	h    http.Header
}

func (h *hijackable) Header() http.Header {
	if h.h == nil {
		h.h = http.Header{}
	}
	return h.h
}
func (h *hijackable) Write(b []byte) (int, error) { return len(b), nil }
func (h *hijackable) WriteHeader(int)             {}
func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// streamConn reads a fixed stream and swallows writes.
type streamConn struct{ r *bytes.Reader }

func (c *streamConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *streamConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
