package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/internal/testcert"
)

// turnSession is a pion TURN client over UDP with one allocation.
type turnSession struct {
	client *turn.Client
	conn   net.PacketConn
	relay  net.PacketConn
}

// dialTURN allocates on server with the given credentials; err is the Allocate error.
func dialTURN(t *testing.T, server, user, pass string) (*turnSession, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server,
		Conn: conn, Username: user, Password: pass, Realm: "e2e.relay", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	s := &turnSession{client: client, conn: conn}
	t.Cleanup(s.close)
	s.relay, err = client.Allocate()
	return s, err
}

func (s *turnSession) close() {
	if s.relay != nil {
		_ = s.relay.Close()
	}
	s.client.Close()
	_ = s.conn.Close()
}

// pacedStream sends a datagram every 10 ms through s to an echo peer and counts the
// echoes, until stop; it returns sent and received counts.
func pacedStream(t *testing.T, s *turnSession, peer net.Addr, stop <-chan struct{}) (sent, got *atomic.Int64, done <-chan struct{}) {
	sent, got = new(atomic.Int64), new(atomic.Int64)
	finished := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 1500)
		for {
			_ = s.relay.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, _, err := s.relay.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				// Give the last echoes time to arrive, then stop the reader.
				waitFor(t, "the last echoes", func() bool { return got.Load() >= sent.Load() })
				_ = s.relay.SetReadDeadline(time.Now())
				<-readerDone
				return
			case <-tick.C:
				if _, err := s.relay.WriteTo([]byte(fmt.Sprintf("paced %d", i)), peer); err == nil {
					sent.Add(1)
				}
			}
		}
	}()
	return sent, got, finished
}

// streamThrough allocates for user with credentials from a and starts a paced stream
// to an echo peer, returning once it flows.
func streamThrough(t *testing.T, p *relayProc, a *auth.Authenticator, user string) (sess *turnSession, stop chan struct{}, sent, got *atomic.Int64, done <-chan struct{}) {
	t.Helper()
	c, err := a.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if sess, err = dialTURN(t, p.addr("udp"), c.Username, c.Password); err != nil {
		t.Fatal(err)
	}
	stop = make(chan struct{})
	sent, got, done = pacedStream(t, sess, testpeer.Echo(t), stop)
	waitFor(t, "the stream to flow", func() bool { return got.Load() > 10 })
	return sess, stop, sent, got, done
}

// TestReloadKeepsTraffic: SIGHUP rotates the secret and the TLS certificate while a paced
// stream runs through an open allocation: nothing is lost, new credentials work, old
// ones no longer allocate, the new certificate is served; a broken file changes nothing.
func TestReloadKeepsTraffic(t *testing.T) {
	cert1, key1, _ := testcert.Write(t)
	cert2, key2, _ := testcert.Write(t)
	const s1, s2 = "first-secret-0123456789abcdef012345", "second-secret-0123456789abcdef01234"
	conf := func(secret, cert, key string) string {
		c := strings.Replace(baseConfig(""), e2eSecret, secret, 1)
		return strings.Replace(c, "[auth]", fmt.Sprintf("tls = [\"127.0.0.1:0\"]\ntls_cert = %q\ntls_key = %q\n[auth]", cert, key), 1)
	}
	p := startRelay(t, conf(s1, cert1, key1))
	a1, _ := auth.New(auth.Options{Secrets: []string{s1}, MaxTTL: time.Hour})
	a2, _ := auth.New(auth.Options{Secrets: []string{s2}, MaxTTL: time.Hour})
	mint := func(a *auth.Authenticator, user string) auth.Credentials {
		c, err := a.Mint(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if !sameCert(t, p.addr("tls"), cert1) {
		t.Fatal("the first certificate is not served")
	}

	c := mint(a1, "streamer")
	sess, err := dialTURN(t, p.addr("udp"), c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := testpeer.Echo(t)
	stop := make(chan struct{})
	sent, got, done := pacedStream(t, sess, peer, stop)
	waitFor(t, "the stream to flow", func() bool { return got.Load() > 100 })

	p.rewrite(conf(s2, cert2, key2))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`"msg":"config reloaded"`)
	before := got.Load()
	waitFor(t, "the stream to flow after the reload", func() bool { return got.Load() > before+100 })
	close(stop)
	<-done
	if sent.Load() != got.Load() || sent.Load() < 40 {
		t.Errorf("paced stream across the reload: sent %d, echoed %d; want no loss", sent.Load(), got.Load())
	}
	t.Logf("paced stream across the reload: %d sent, %d echoed", sent.Load(), got.Load())

	if !sameCert(t, p.addr("tls"), cert2) {
		t.Error("the new certificate is not served after the reload")
	}
	n := mint(a2, "newcomer")
	if _, err := dialTURN(t, p.addr("udp"), n.Username, n.Password); err != nil {
		t.Errorf("allocate with the new secret: %v", err)
	}
	o := mint(a1, "latecomer")
	if _, err := dialTURN(t, p.addr("udp"), o.Username, o.Password); err == nil {
		t.Error("a new allocation with the rotated-out secret succeeded")
	}
	if m := p.metrics(); m[`relay_config_reload_total{result="success"}`] != 1 {
		t.Errorf("relay_config_reload_total{result=success} = %v", m[`relay_config_reload_total{result="success"}`])
	}

	// A broken file: logged, counted, and the running config stays.
	if err := os.WriteFile(p.cfgPath, []byte("[turn]\nrelay_ports = \"oops\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`keeping the running configuration`)
	if !strings.Contains(p.log(), "turn.relay_ports") {
		t.Errorf("the reload error does not name the key:\n%s", p.log())
	}
	waitFor(t, "the failed reload to be counted", func() bool {
		return p.metrics()[`relay_config_reload_total{result="failure"}`] == 1
	})
	n2 := mint(a2, "after-bad-reload")
	if _, err := dialTURN(t, p.addr("udp"), n2.Username, n2.Password); err != nil {
		t.Errorf("allocate after a rejected reload: %v", err)
	}
}

// sameCert reports whether the TLS listener at addr presents the certificate in file.
func sameCert(t *testing.T, addr, file string) bool {
	t.Helper()
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // comparing the certificate itself
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Equal(want)
}

// TestDrainOnSIGTERM: with an allocation open, SIGTERM refuses new allocations, keeps
// relaying for the open one, and exits 0 as soon as it ends.
func TestDrainOnSIGTERM(t *testing.T) {
	p := startRelay(t, strings.Replace(baseConfig(""), `drain_timeout = "1s"`, `drain_timeout = "60s"`, 1))
	a, _ := auth.New(auth.Options{Secrets: []string{e2eSecret}, MaxTTL: time.Hour})
	sess, stop, sent, got, done := streamThrough(t, p, a, "caller")

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`"msg":"draining: no new allocations; waiting for open ones to end"`)
	if m := p.metrics(); m["relay_draining"] != 1 {
		t.Errorf("relay_draining = %v while draining", m["relay_draining"])
	}
	n, _ := a.Mint("newcomer", time.Hour)
	if _, err := dialTURN(t, p.addr("udp"), n.Username, n.Password); err == nil || !strings.Contains(err.Error(), "508") {
		t.Errorf("new allocation while draining: %v, want a 508 refusal", err)
	}
	before := got.Load()
	waitFor(t, "the open allocation to keep relaying", func() bool { return got.Load() > before+20 })
	close(stop)
	<-done
	if sent.Load() != got.Load() {
		t.Errorf("stream during the drain: sent %d, echoed %d", sent.Load(), got.Load())
	}

	start := time.Now()
	sess.close() // pion's client releases the allocation (Refresh with lifetime 0)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("relay still running 10 s after the last allocation ended")
	}
	if p.waitErr != nil {
		t.Errorf("exit after drain: %v", p.waitErr)
	}
	t.Logf("exited %v after the last allocation ended", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(p.log(), `"msg":"drained: every allocation ended"`) {
		t.Errorf("no drained message:\n%s", p.log())
	}
}

// TestNotifySocket: under systemd's notify protocol, READY=1 comes only once the
// listeners accept, and STOPPING=1 on SIGTERM.
func TestNotifySocket(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := freeUDPTCPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := strings.NewReplacer(`udp = ["127.0.0.1:0"]`, fmt.Sprintf("udp = [%q]", addr),
		`tcp = ["127.0.0.1:0"]`, fmt.Sprintf("tcp = [%q]", addr)).Replace(baseConfig(""))

	type note struct {
		text     string
		tcpReady bool
	}
	notes := make(chan note, 10)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			text := string(buf[:n])
			ready := false
			if strings.Contains(text, "READY=1") {
				// Check at once, before relay says anything else.
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					ready = true
					_ = c.Close()
				}
			}
			notes <- note{text, ready}
		}
	}()
	p := startRelayEnv(t, cfg, []string{"NOTIFY_SOCKET=" + sockPath})
	select {
	case n := <-notes:
		if !strings.Contains(n.text, "READY=1") || !n.tcpReady {
			t.Fatalf("first notification %q (listener accepting: %v), want READY=1 with listeners up", n.text, n.tcpReady)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no READY=1")
	}
	p.stop(syscall.SIGTERM)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case n := <-notes:
			if strings.Contains(n.text, "STOPPING=1") {
				return
			}
		case <-deadline:
			t.Fatal("no STOPPING=1 after SIGTERM")
		}
	}
}
