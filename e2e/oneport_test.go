package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"

	"github.com/relayproject/relay/internal/testcert"
)

// One port for TURN and signaling (internal/portmux): `[turn] tls` equal to `[signal]
// listen` with a certificate, or `[turn] tcp` equal to a plain `[signal] listen`. These
// tests run the binary as deploy/README.md's one-port install does, on a free high port
// instead of 443, against real clients: curl, coturn's turnutils_uclient, gorilla's
// WebSocket client, and crypto/tls clients with and without ALPN.

// freeTCPPort returns a TCP port free on 127.0.0.1 (for a config that names it twice).
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// onePortConfig is baseConfig with `[turn] <kind>` (tls or tcp) and `[signal] listen`
// both at addr; signal holds the rest of the [signal] section.
func onePortConfig(kind, addr, signal string) string {
	cfg := baseConfig("[limits]\nuser_allocations = 20\n[signal]\nlisten = \"" + addr + "\"\n" + signal)
	if kind == "tls" {
		return strings.Replace(cfg, "[turn]\n", "[turn]\ntls = [\""+addr+"\"]\n", 1)
	}
	return strings.Replace(cfg, "tcp = [\"127.0.0.1:0\"]", "tcp = [\""+addr+"\"]", 1)
}

// curlICE fetches url (a {path}ice) with curl and returns the answer.
func curlICE(t *testing.T, args ...string) iceAnswer {
	t.Helper()
	curl := need(t, "curl", "curl")
	out, err := exec.Command(curl, append([]string{"-sS", "--fail", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var ice iceAnswer
	if err := json.Unmarshal(out, &ice); err != nil || len(ice.ICEServers) == 0 {
		t.Fatalf("curl %s: %q is not an ICE answer: %v", strings.Join(args, " "), out, err)
	}
	return ice
}

// turnURLs are the turn:/turns: URLs of an ICE answer.
func (a iceAnswer) turnURLs() []string {
	var urls []string
	for _, s := range a.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn") {
				urls = append(urls, u)
			}
		}
	}
	return urls
}

// dialPeerURL opens a PeerJS WebSocket at base+id and waits for OPEN.
func dialPeerURL(t *testing.T, base, id string, client *tls.Config) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: client, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(base+id, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", base+id, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if m := readPeer(t, ws); m.Type != "OPEN" {
		t.Fatalf("%s: first message %+v, want OPEN", id, m)
	}
	return ws
}

// offerBetween sends an OFFER from one peer to another and checks it arrives.
func offerBetween(t *testing.T, from, to *websocket.Conn, dst, text string) {
	t.Helper()
	msg := fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":{"sdp":%q}}`, dst, text)
	if err := from.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if m := readPeer(t, to); m.Type != "OFFER" || !strings.Contains(string(m.Payload), text) {
		t.Fatalf("relayed %+v; want an OFFER with %q", m, text)
	}
}

// startEchoPeer runs turnutils_peer on 127.0.0.1 on a free port pair and returns its port.
func startEchoPeer(t *testing.T) int { return startEchoPeerOn(t, "127.0.0.1") }

// startEchoPeerOn runs turnutils_peer on host (127.0.0.1 or ::1).
func startEchoPeerOn(t *testing.T, host string) int {
	t.Helper()
	peerBin := need(t, "turnutils_peer", "coturn")
	port := freeUDPPortPair(t)
	peer := exec.Command(peerBin, "-L", host, "-p", strconv.Itoa(port))
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Process.Kill(); _ = peer.Wait() })
	waitForEcho(t, net.JoinHostPort(host, strconv.Itoa(port)))
	return port
}

// stunOver sends a Binding request on c (a stream: one message per frame) and reads the
// answer's header.
func stunOver(t *testing.T, c net.Conn) {
	t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(m.Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("Binding over %s: %v", c.RemoteAddr(), err)
	}
	if hdr[0] != 0x01 || hdr[1] != 0x01 || string(hdr[8:20]) != string(m.TransactionID[:]) {
		t.Fatalf("Binding over %s: answer header %x", c.RemoteAddr(), hdr)
	}
	if _, err := io.ReadFull(c, make([]byte, int(hdr[2])<<8|int(hdr[3]))); err != nil {
		t.Fatal(err)
	}
}

// TestOnePortTLS: https, wss and TURN over TLS on one listener. curl gets {path}ice with
// ALPN (http/1.1) and without; the answer carries turns:127.0.0.1:PORT?transport=tcp for
// the same port; two PeerJS peers exchange an OFFER over wss there; turnutils_uclient
// (which offers ALPN "http/1.1" and "stun.turn") relays 10 x 200 messages to an echo peer
// with no loss; crypto/tls clients offering no ALPN, or only "h2", get STUN and HTTP by
// their first bytes.
func TestOnePortTLS(t *testing.T) {
	uclient := need(t, "turnutils_uclient", "coturn")
	certFile, keyFile, client := testcert.Write(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	p := startRelay(t, onePortConfig("tls", addr, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile)))
	if p.addr("tls") != addr || p.addr("signal") != addr {
		t.Fatalf("TURN TLS on %s and signaling on %s, want both on %s", p.addr("tls"), p.addr("signal"), addr)
	}
	_, port, _ := net.SplitHostPort(addr)

	for _, alpn := range [][]string{nil, {"--no-alpn"}} {
		ice := curlICE(t, append(alpn, "--cacert", certFile, "https://"+addr+"/ice")...)
		want := "turns:127.0.0.1:" + port + "?transport=tcp"
		if urls := ice.turnURLs(); !strings.Contains(strings.Join(urls, " "), want) {
			t.Fatalf("curl %v: TURN URLs %q, want %s among them", alpn, urls, want)
		}
	}

	base := "wss://" + addr + "/peerjs?key=peerjs&version=1.5.5&token=t&id="
	a := dialPeerURL(t, base, "one-a", client)
	b := dialPeerURL(t, base, "one-b", client)
	offerBetween(t, a, b, "one-b", "over the shared port")

	for _, c := range []struct {
		protos []string
		talk   func(*testing.T, net.Conn)
	}{{nil, stunOver}, {[]string{"h2"}, stunOver}, {[]string{"stun.turn"}, stunOver}, {nil, httpGetOver}, {[]string{"h2"}, httpGetOver}} {
		conf := client.Clone()
		conf.NextProtos = c.protos
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("TLS with ALPN %q: %v", c.protos, err)
		}
		c.talk(t, conn)
		_ = conn.Close()
	}

	peerPort := startEchoPeer(t)
	before := p.metrics()[`relay_turn_allocations_total{result="success"}`]
	uclientNoLoss(t, uclient, []string{"-S", "-t", "-W", e2eSecret, "-u", "oneport-tls", "-e", "127.0.0.1",
		"-r", strconv.Itoa(peerPort), "-m", "10", "-n", "200", "-l", "120", "-c", "-p", port, "127.0.0.1"}, p)
	if n := p.metrics()[`relay_turn_allocations_total{result="success"}`] - before; n < 10 {
		t.Errorf("relay counted %v allocations during turnutils_uclient's 10 sessions over TLS", n)
	}
	offerBetween(t, b, a, "one-a", "still there after the TURN sessions")

	// relay check, by the turns: URL and by the ICE endpoint, both on the shared port.
	turns := "turns:127.0.0.1:" + port + "?transport=tcp"
	out, code := runCheck(t, turns, "-secret", e2eSecret, "-ca", certFile)
	wantPass(t, out, code, turns)
	out, code = runCheck(t, "https://"+addr+"/ice", "-ca", certFile)
	wantPass(t, out, code, turns)
}

// httpGetOver sends GET / on c and checks the PeerJS server's answer.
func httpGetOver(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !strings.Contains(string(b), "PeerJS Server") {
		t.Fatalf("GET / over %s: %q", c.RemoteAddr(), b)
	}
}

// TestOnePortTCP: plain http, ws and STUN/TURN over TCP on one listener: curl gets
// {path}ice with turn:127.0.0.1:PORT?transport=tcp for the same port, two peers talk over
// ws there, turnutils_uclient relays over TCP with no loss, and a raw Binding request and
// a raw GET are each answered by the right side.
func TestOnePortTCP(t *testing.T) {
	uclient := need(t, "turnutils_uclient", "coturn")
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	p := startRelay(t, onePortConfig("tcp", addr, ""))
	if p.addr("tcp") != addr || p.addr("signal") != addr {
		t.Fatalf("TURN TCP on %s and signaling on %s, want both on %s", p.addr("tcp"), p.addr("signal"), addr)
	}
	_, port, _ := net.SplitHostPort(addr)
	ice := curlICE(t, "http://"+addr+"/ice")
	if urls := ice.turnURLs(); !strings.Contains(strings.Join(urls, " "), "turn:127.0.0.1:"+port+"?transport=tcp") {
		t.Fatalf("TURN URLs %q, want turn:127.0.0.1:%s?transport=tcp", urls, port)
	}
	base := "ws://" + addr + "/peerjs?key=peerjs&version=1.5.5&token=t&id="
	a := dialPeerURL(t, base, "tcp-a", nil)
	b := dialPeerURL(t, base, "tcp-b", nil)
	offerBetween(t, a, b, "tcp-b", "over the shared plain port")

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stunOver(t, c)
	_ = c.Close()
	if c, err = net.Dial("tcp", addr); err != nil {
		t.Fatal(err)
	}
	httpGetOver(t, c)
	_ = c.Close()

	peerPort := startEchoPeer(t)
	uclientNoLoss(t, uclient, []string{"-t", "-W", e2eSecret, "-u", "oneport-tcp", "-e", "127.0.0.1",
		"-r", strconv.Itoa(peerPort), "-m", "10", "-n", "200", "-l", "120", "-c", "-p", port, "127.0.0.1"}, p)
	offerBetween(t, b, a, "tcp-a", "still there")
	// Closings before routing are counted by reason; none of these clients was closed.
	m := p.metrics()
	for _, reason := range []string{"per_source", "full", "evicted", "timeout"} {
		if v, ok := m[`relay_shared_port_dropped_total{reason="`+reason+`"}`]; !ok || v != 0 {
			t.Errorf("relay_shared_port_dropped_total{reason=%q} = %v (exported %v), want 0", reason, v, ok)
		}
	}
}
