package signaling

import (
	"crypto/tls"
	"encoding/pem"
	"os"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/testcert"
)

// onPollers reports whether every connected peer's socket is read by a poller.
func (s *testSignal) onPollers(t *testing.T, want int) bool {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != want {
		t.Fatalf("%d peers connected, want %d", len(s.conns), want)
	}
	for p := range s.conns {
		if !p.c.OnPoller() {
			return false
		}
	}
	return true
}

// servedCert is the certificate a wss socket was given.
func servedCert(ws *websocket.Conn) []byte {
	return ws.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].Raw
}

func certDER(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

// TestTLSReloadCertificate: Reload swaps the certificate new wss sockets get; a socket
// opened before keeps working (on its poller), with messages both ways between an old
// and a new socket; Close ends both.
func TestTLSReloadCertificate(t *testing.T) {
	cert1, key1, client1 := testcert.Write(t)
	cert2, key2, client2 := testcert.Write(t)
	s := startSignal(t, func(c *config.Signal) { c.TLSCert, c.TLSKey = cert1, key1 })
	u := "wss://" + s.Addr().String() + "/peerjs?key=peerjs&version=1.5.5&token=t&id="
	a := s.dialWith(t, u+"a", nil, nil, &websocket.Dialer{TLSClientConfig: client1})
	a.expect("OPEN")
	if string(servedCert(a.ws)) != string(certDER(t, cert1)) {
		t.Fatal("the first certificate is not served")
	}

	c := *s.conf()
	c.TLSCert, c.TLSKey = cert2, key2
	if restart, err := s.Reload(c); err != nil || len(restart) != 0 {
		t.Fatalf("reload: %v %v", restart, err)
	}
	b := s.dialWith(t, u+"b", nil, nil, &websocket.Dialer{TLSClientConfig: client2})
	b.expect("OPEN")
	if string(servedCert(b.ws)) != string(certDER(t, cert2)) {
		t.Fatal("the new certificate is not served after the reload")
	}
	if !s.onPollers(t, 2) {
		t.Fatal("a wss peer is not on a poller")
	}
	a.send(map[string]any{"type": "OFFER", "dst": "b", "payload": map[string]any{"msg": "old to new"}})
	if m := b.expect("OFFER"); payloadMsg(m) != "old to new" || m["src"] != "a" {
		t.Fatalf("relayed %v", m)
	}
	b.send(map[string]any{"type": "ANSWER", "dst": "a", "payload": map[string]any{"msg": "new to old"}})
	if m := a.expect("ANSWER"); payloadMsg(m) != "new to old" {
		t.Fatalf("relayed %v", m)
	}

	// A broken certificate changes nothing.
	c.TLSCert = cert1 + ".missing"
	if _, err := s.Reload(c); err == nil {
		t.Fatal("a missing certificate was accepted")
	}
	b2 := s.dialWith(t, u+"b2", nil, nil, &websocket.Dialer{TLSClientConfig: client2})
	b2.expect("OPEN")

	_ = s.Close(t.Context())
	a.closed()
	b.closed()
	b2.closed()
}
