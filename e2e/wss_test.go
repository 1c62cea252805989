package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayproject/relay/internal/testcert"
)

// TestWSSIdlePeersOnPollers: relay set up as deploy/README.md says for pages on https
// ([signal] tls_cert) serves wss; 300 idle wss peers add no goroutine each (their
// sockets are on the pollers); messages go between them; after SIGHUP with a new
// certificate, new sockets get it and the old ones keep working.
func TestWSSIdlePeersOnPollers(t *testing.T) {
	cert1, key1, client1 := testcert.Write(t)
	cert2, key2, client2 := testcert.Write(t)
	conf := func(cert, key string) string {
		return baseConfig(fmt.Sprintf("[signal]\nlisten = \"127.0.0.1:0\"\nmax_peers_per_ip = 1000\ntls_cert = %q\ntls_key = %q\n", cert, key))
	}
	p := startRelay(t, conf(cert1, key1))
	base := "wss://" + p.addr("signal") + "/peerjs?key=peerjs&version=1.5.5&token=t&id="
	dial := func(id string, client *tls.Config) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{TLSClientConfig: client, HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.Dial(base+id, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", id, err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, m, err := ws.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"OPEN"`)) {
			t.Fatalf("%s: first message %s, %v", id, m, err)
		}
		return ws
	}
	relayMsg := func(from, to *websocket.Conn, dst, text string) {
		t.Helper()
		msg := fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":{"sdp":%q}}`, dst, text)
		if err := from.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, m, err := to.ReadMessage(); err != nil || !strings.Contains(string(m), text) {
			t.Fatalf("relayed %s, %v; want %q", m, err, text)
		}
	}

	a := dial("a", client1)
	b := dial("b", client1)
	relayMsg(a, b, "b", "first over wss")
	before := p.metrics()["go_goroutines"]
	const idle = 300
	for i := range idle {
		dial(fmt.Sprintf("idle%d", i), client1)
	}
	var grew float64
	waitFor(t, "net/http's goroutines to end", func() bool {
		grew = p.metrics()["go_goroutines"] - before
		return grew < idle/10
	})
	t.Logf("%d idle wss peers: %.0f more goroutines", idle, grew)

	p.rewrite(conf(cert2, key2))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`"msg":"config reloaded"`)
	c := dial("c", client2) // verifies the new certificate: client2 trusts only it
	relayMsg(a, c, "c", "old socket to new")
	relayMsg(c, b, "b", "new socket to old")
}
