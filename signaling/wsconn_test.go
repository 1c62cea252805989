package signaling

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/wsconn"
	"github.com/relayproject/relay/internal/wstest"
)

// The frame vocabulary of the tests, from the WebSocket package.
const (
	opContinuation     = wsconn.OpContinuation
	opText             = wsconn.OpText
	opClose            = wsconn.OpClose
	opPing             = wsconn.OpPing
	opPong             = wsconn.OpPong
	closeNormal        = wsconn.CloseNormal
	closeProtocolError = wsconn.CloseProtocolError
	closeTooBig        = wsconn.CloseTooBig
)

func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	return wsconn.AppendClientFrame(nil, fin, op, payload, masked)
}

func closePayload(code int) []byte { return []byte{byte(code >> 8), byte(code)} }

// rawDial connects as id with a client that speaks WebSocket frame by frame (wstest)
// and reads OPEN; extra is sent in the same write as the upgrade request (a pipelining
// client's first frames).
func (s *testSignal) rawDial(t *testing.T, id string, extra ...[]byte) *wstest.Client {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := wstest.Handshake(t, c, "/peerjs?key=peerjs&token=t&id="+id, extra...)
	rc.ExpectText(`{"type":"OPEN"}`)
	return rc
}

func TestWebSocketProtocolErrors(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.MaxMessageBytes = 1024 })
	cases := []struct {
		name   string
		frames [][]byte
		code   int
	}{
		{"unmasked frame", [][]byte{clientFrame(true, opText, []byte(`{"type":"HEARTBEAT"}`), false)}, closeProtocolError},
		{"RSV bit", [][]byte{func() []byte { b := clientFrame(true, opText, []byte("{}"), true); b[0] |= 0x20; return b }()}, closeProtocolError},
		{"continuation first", [][]byte{clientFrame(true, opContinuation, []byte("{}"), true)}, closeProtocolError},
		{"oversized frame", [][]byte{clientFrame(true, opText, make([]byte, 1025), true)}, closeTooBig},
		{"oversized by fragments", [][]byte{
			clientFrame(false, opText, make([]byte, 600), true),
			clientFrame(true, opContinuation, make([]byte, 600), true)}, closeTooBig},
		{"close handshake", [][]byte{clientFrame(true, opClose, closePayload(closeNormal), true)}, closeNormal},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("p%d", i)
			rc := s.rawDial(t, id)
			rc.Write(tc.frames...)
			rc.ExpectClose(tc.code)
			waitFor(t, "the id to be freed", func() bool { return !s.reg.Taken(id) })
		})
	}
	if got := testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("message_too_large")); got != 2 {
		t.Errorf("relay_signal_rejected_total{reason=message_too_large} = %v, want 2", got)
	}
}

// TestFragmentedMessageRelayed: a message in fragments with a ping between them is
// relayed whole, and the ping answered with its payload.
func TestFragmentedMessageRelayed(t *testing.T) {
	s := startSignal(t, nil)
	b := s.dial(t, "b", "t")
	b.expect("OPEN")
	rc := s.rawDial(t, "a")
	msg := []byte(`{"type":"OFFER","dst":"b","payload":{"sdp":"v=0"}}`)
	rc.Write(
		clientFrame(false, opText, msg[:10], true),
		clientFrame(true, opPing, []byte("are you there"), true),
		clientFrame(false, opContinuation, msg[10:30], true),
		clientFrame(true, opContinuation, msg[30:], true),
	)
	if op, p := rc.Read(); op != opPong || string(p) != "are you there" {
		t.Fatalf("answer to the ping: %d %q", op, p)
	}
	m := b.expect("OFFER")
	if m["src"] != "a" || fmt.Sprint(m["payload"]) != "map[sdp:v=0]" {
		t.Fatalf("relayed %v", m)
	}
	// One byte per write: the reader keeps partial frames across reads.
	whole := clientFrame(true, opText, []byte(`{"type":"CANDIDATE","dst":"b","payload":2}`), true)
	for i := range whole {
		rc.Write(whole[i : i+1])
	}
	if m := b.expect("CANDIDATE"); m["payload"] != float64(2) {
		t.Fatalf("relayed %v", m)
	}
}

// TestCloseHandshakeGorilla: a client library's close is answered with the same code.
func TestCloseHandshakeGorilla(t *testing.T) {
	s := startSignal(t, nil)
	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=a&token=t"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye")); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after our close: %v, want the server's close 1001", err)
	}
	waitFor(t, "the id to be freed", func() bool { return !s.reg.Taken("a") })
}

// TestIdlePeersHoldNoGoroutine: on the poller path a connected, idle peer costs no
// goroutine.
func TestIdlePeersHoldNoGoroutine(t *testing.T) {
	s := startSignal(t, nil)
	if s.pollers.Len() == 0 {
		t.Skip("no epoll pollers on this system")
	}
	const n = 50
	base := runtime.NumGoroutine()
	var conns []*websocket.Conn
	for i := range n {
		// No reader goroutine on our side either: read OPEN and leave the socket idle.
		ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(fmt.Sprintf("key=peerjs&id=idle%d&token=t", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, ws)
		if _, m, err := ws.ReadMessage(); err != nil || !bytes.Contains(m, []byte("OPEN")) {
			t.Fatalf("OPEN: %q %v", m, err)
		}
	}
	defer func() {
		for _, ws := range conns {
			_ = ws.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= base {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines with %d idle peers connected, %d before", g, n, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// They are served: a message reaches the last one.
	if err := conns[0].WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"OFFER","dst":"idle%d","payload":1}`, n-1))); err != nil {
		t.Fatal(err)
	}
	_ = conns[n-1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, m, err := conns[n-1].ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"src":"idle0"`)) {
		t.Fatalf("relayed %q %v", m, err)
	}
}

// A client whose last message and FIN arrive together is released at once: the read
// that takes the message does not see the end of the stream, and the FIN wakes nobody
// again (TestSignalingChurn in e2e found this).
func TestLastMessageThenClose(t *testing.T) {
	s := startSignal(t, nil)
	const n = 40
	for i := range n {
		rc := s.rawDial(t, fmt.Sprintf("bye%d", i))
		rc.Write(clientFrame(true, opText, []byte(`{"type":"HEARTBEAT"}`), true))
		_ = rc.Conn.Close()
	}
	waitFor(t, "every peer released", func() bool {
		for i := range n {
			if s.reg.Taken(fmt.Sprintf("bye%d", i)) {
				return false
			}
		}
		return true
	})
}

// TestPipelinedClientOnPoller: a plain client that sends its first message in the same
// write as the upgrade request is read by a poller (no goroutine of its own), and that
// message is relayed.
func TestPipelinedClientOnPoller(t *testing.T) {
	s := startSignal(t, nil)
	if s.pollers.Len() == 0 {
		t.Skip("no epoll pollers on this system")
	}
	b := s.dial(t, "b", "t")
	b.expect("OPEN")
	rc := s.rawDial(t, "eager", clientFrame(true, opText, []byte(`{"type":"OFFER","dst":"b","payload":"first"}`), true))
	if m := b.expect("OFFER"); m["src"] != "eager" || m["payload"] != "first" {
		t.Fatalf("relayed %v", m)
	}
	p, _ := s.reg.Lookup("eager").(*peer)
	if p == nil || !p.c.OnPoller() {
		t.Fatal("a pipelining client is on the goroutine path")
	}
	// And it is served from there: a message to it arrives.
	b.send(map[string]any{"type": "ANSWER", "dst": "eager", "payload": 2})
	if op, msg := rc.Read(); op != opText || !bytes.Contains(msg, []byte(`"type":"ANSWER"`)) {
		t.Fatalf("frame %d %q", op, msg)
	}
}
