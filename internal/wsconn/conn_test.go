package wsconn

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
)

// TestCloseConformance: over a real socket, on the poller path and on the goroutine
// path, the server answers what RFC 6455 asks: the client's close code echoed when it
// is valid, 1002 for an invalid code or malformed frame, 1007 for text that is not
// UTF-8; never 1005, 1006 or 1015 on the wire.
func TestCloseConformance(t *testing.T) {
	closeFrame := func(code int, reason string) []byte {
		return clientFrame(true, OpClose, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...), true)
	}
	cases := []struct {
		name   string
		frames [][]byte
		code   int // -1: a close frame without a code
	}{
		{"close 1000", [][]byte{closeFrame(1000, "bye")}, 1000},
		{"close 1001", [][]byte{closeFrame(1001, "")}, 1001},
		{"close 3000", [][]byte{closeFrame(3000, "app")}, 3000},
		{"close 4999", [][]byte{closeFrame(4999, "")}, 4999},
		{"close without a code", [][]byte{clientFrame(true, OpClose, nil, true)}, -1},
		{"close 0", [][]byte{closeFrame(0, "")}, CloseProtocolError},
		{"close 999", [][]byte{closeFrame(999, "")}, CloseProtocolError},
		{"close 1004", [][]byte{closeFrame(1004, "")}, CloseProtocolError},
		{"close 1005", [][]byte{closeFrame(1005, "")}, CloseProtocolError},
		{"close 1006", [][]byte{closeFrame(1006, "")}, CloseProtocolError},
		{"close 1015", [][]byte{closeFrame(1015, "")}, CloseProtocolError},
		{"close 1016", [][]byte{closeFrame(1016, "")}, CloseProtocolError},
		{"close 2999", [][]byte{closeFrame(2999, "")}, CloseProtocolError},
		{"close 5000", [][]byte{closeFrame(5000, "")}, CloseProtocolError},
		{"close payload of one byte", [][]byte{clientFrame(true, OpClose, []byte{3}, true)}, CloseProtocolError},
		{"close reason not UTF-8", [][]byte{closeFrame(1000, "\xff\xfe")}, CloseInvalidData},
		{"text not UTF-8", [][]byte{clientFrame(true, OpText, []byte("caf\xe9"), true)}, CloseInvalidData},
		{"text not UTF-8 in fragments", [][]byte{
			clientFrame(false, OpText, []byte("ok \xe2\x82"), true),
			clientFrame(true, OpContinuation, []byte("\x28"), true)}, CloseInvalidData},
		{"64-bit length with the top bit", [][]byte{{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}}, CloseProtocolError},
		{"non-minimal 16-bit length", [][]byte{nonMinimal(126, 3)}, CloseProtocolError},
		{"non-minimal 64-bit length", [][]byte{nonMinimal(127, 300)}, CloseProtocolError},
	}
	for _, path := range []struct {
		name string
		o    testOptions
	}{{"poller", testOptions{}}, {"goroutine", testOptions{pollers: -1}},
		{"tls poller", testOptions{tls: true}}, {"tls goroutine", testOptions{tls: true, pollers: -1}}} {
		t.Run(path.name, func(t *testing.T) {
			ts := startServer(t, path.o)
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					id := fmt.Sprintf("c%d", i)
					rc := ts.rawDial(t, id)
					h := ts.conn(id)
					if h.c.OnPoller() != (path.o.pollers >= 0) {
						t.Fatalf("OnPoller %v on the %s path", h.c.OnPoller(), path.name)
					}
					rc.Write(tc.frames...)
					if tc.code == -1 {
						op, p := rc.Read()
						if op != OpClose || len(p) != 0 {
							t.Fatalf("answer %d %x, want an empty close frame", op, p)
						}
					} else {
						rc.ExpectClose(tc.code)
					}
					<-h.closed
					h.mu.Lock()
					fails := slices.Clone(h.fails)
					h.mu.Unlock()
					if failed := tc.code == CloseProtocolError || tc.code == CloseInvalidData; failed != (len(fails) == 1 && fails[0] == tc.code) {
						t.Errorf("OnFail told %v", fails)
					}
					if len(h.messages()) != 0 {
						t.Errorf("messages passed on: %q", h.messages())
					}
				})
			}
		})
	}
}

// TestPongPerRead: a client that sends many pings before the server writes gets one
// pong, answering the last, on either path.
func TestPongPerRead(t *testing.T) {
	for _, path := range []struct {
		name string
		o    testOptions
	}{{"poller", testOptions{}}, {"goroutine", testOptions{pollers: -1}}} {
		t.Run(path.name, func(t *testing.T) {
			ts := startServer(t, path.o)
			rc := ts.rawDial(t, "pinger")
			const n = 50
			var burst [][]byte
			for i := range n {
				burst = append(burst, clientFrame(true, OpPing, []byte(fmt.Sprintf("p%d", i)), true))
			}
			rc.Write(burst...)
			var pongs []string
			for len(pongs) == 0 {
				if op, p := rc.Read(); op == OpPong {
					pongs = append(pongs, string(p))
				} else {
					t.Fatalf("frame %d %q, want a pong", op, p)
				}
			}
			// A message echoed after the pong marks the end of what the burst caused.
			rc.Write(clientFrame(true, OpText, []byte("mark"), true))
			for {
				op, p := rc.Read()
				if op == OpPong {
					pongs = append(pongs, string(p))
					continue
				}
				if op != OpText || string(p) != "mark" {
					t.Fatalf("frame %d %q", op, p)
				}
				break
			}
			if len(pongs) != 1 || pongs[0] != fmt.Sprintf("p%d", n-1) {
				t.Fatalf("%d pongs %q for a burst of %d pings; want one, answering the last", len(pongs), pongs, n)
			}
		})
	}
}

// TestControlFramesAdmitted: pings, pongs and close frames are put to the Handler's
// Admit like messages; a ping not admitted is not answered, a close always ends the
// connection.
func TestControlFramesAdmitted(t *testing.T) {
	var control atomic.Int32
	ts := startServer(t, testOptions{admit: func(h *echoHandler, isControl bool) bool {
		if isControl {
			control.Add(1)
			return false
		}
		return true
	}})
	rc := ts.rawDial(t, "a")
	rc.Write(clientFrame(true, OpPing, []byte("x"), true), clientFrame(true, OpPong, nil, true), clientFrame(true, OpText, []byte("after"), true))
	if op, p := rc.Read(); op != OpText || string(p) != "after" {
		t.Fatalf("frame %d %q: want the echo, the ping unanswered", op, p)
	}
	rc.Write(clientFrame(true, OpClose, closePayload(CloseNormal), true))
	rc.ExpectClose(CloseNormal)
	if got := control.Load(); got != 3 {
		t.Errorf("Admit asked for %d control frames, want 3", got)
	}
}

// TestPipelinedClientOnPoller: a client that sends its first frames in the same write
// as the upgrade request (net/http has read them with the request) is read by a
// poller like any other, and those frames are handled: whole ones at once, a frame
// cut short completed by what the poller reads next.
func TestPipelinedClientOnPoller(t *testing.T) {
	ts := startServer(t, testOptions{})
	second := clientFrame(true, OpText, []byte("second"), true)
	rc := ts.rawDial(t, "pipe", clientFrame(true, OpText, []byte("first"), true), second[:5])
	h := ts.conn("pipe")
	if !h.c.OnPoller() {
		t.Fatal("a pipelining client is on the goroutine path")
	}
	if op, p := rc.Read(); op != OpText || string(p) != "first" {
		t.Fatalf("frame %d %q, want the echo of the pipelined message", op, p)
	}
	rc.Write(second[5:])
	if op, p := rc.Read(); op != OpText || string(p) != "second" {
		t.Fatalf("frame %d %q, want the echo of the message the pipelined bytes began", op, p)
	}
}
