package signaling

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// FuzzMessages sends arbitrary frames over a real WebSocket: the server must neither
// crash nor stop serving others, and relayed messages always carry the sender's id. The
// same bytes must parse as encoding/json reads them (checkParse). (The frame reader
// has fuzz targets of its own in internal/wsconn.)
func FuzzMessages(f *testing.F) {
	for _, seed := range []string{
		`{"type":"OFFER","dst":"b","payload":{"sdp":"x"}}`,
		`{"type":"LEAVE"}`,
		`{"type":"CANDIDATE","dst":"b","src":"spoof","payload":[1,2,3]}`,
		`{"type":"EXPIRE","dst":""}`,
		`{"type":"HEARTBEAT"}`,
		`{not json`,
		`{"type":7,"dst":{"a":1}}`,
		`[]`,
	} {
		f.Add([]byte(seed))
	}
	s := startSignal(f, nil)
	b := s.dial(f, "b", "t")
	b.expect("OPEN")
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data)

		a, _, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=a&token=t"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, msg, err := a.ReadMessage(); err != nil || string(msg) != `{"type":"OPEN"}` {
			t.Fatalf("OPEN: %s %v", msg, err)
		}
		_ = a.WriteMessage(websocket.TextMessage, data)
		// The server still routes: a well-formed message from a reaches b, from a.
		_ = a.WriteMessage(websocket.TextMessage, []byte(`{"type":"CANDIDATE","dst":"b","payload":"probe"}`))
		deadline := time.After(300 * time.Millisecond)
		for {
			select {
			case m := <-b.msgs:
				if m["src"] != "a" {
					t.Fatalf("relayed with src %v", m["src"])
				}
				if m["payload"] == "probe" {
					return
				}
			case <-deadline:
				// a may have been closed by what it sent (LEAVE, oversized): that is fine
				// as long as the server answers a new connection.
				if _, _, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=c&token=t"), nil); err != nil {
					t.Fatalf("server stopped answering: %v", err)
				}
				return
			}
		}
	})
}

// FuzzParseMessage holds the one-pass message reader to encoding/json, without sockets:
// many more inputs per second than FuzzMessages.
func FuzzParseMessage(f *testing.F) {
	for _, seed := range []string{
		`{"type":"OFFER","dst":"b","payload":{"sdp":"v=0\r\n","n":[1,-2.5e3,true,null]}}`,
		`{"TYPE":"OFFER","dst":null,"payload":null,"payload":"x"}`,
		`{"type":"CANDIDATE","dst":"\u0062"}`,
		`{"type":"OFFER","payload":01}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}
