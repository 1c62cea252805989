//go:build linux

package wsconn

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayproject/relay/internal/testcert"
)

// Attacks on the wss record layer from a client that holds the connection's keys:
// everything here is what a hostile client (not a network attacker) can do.

// TestTLSKeyUpdateFloodHoldsNoMemory: a client that asks for our KeyUpdate over and
// over (16 requests, then one message to stay within the rule on
// records without data, again and again) while it reads nothing must not make the
// server hold a KeyUpdate of its own per request: RFC 8446 4.6.3 lets a silent
// endpoint answer many requests with one update. The bytes held for the socket stay
// bounded, whatever the client sends.
func TestTLSKeyUpdateFloodHoldsNoMemory(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	ts.handshakeOver(t, c, "flood")
	h := ts.conn("flood")
	h.c.mu.Lock()
	fd := h.c.fd
	h.c.mu.Unlock()
	// A small send buffer, so that what the server cannot write shows soon in what it
	// holds (the client's receive buffer does not grow while it reads nothing).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}

	const rounds = 2000 // 32,000 requests, 27 bytes each way
	held := 0
	for i := range rounds {
		var batch []byte
		for range maxUselessRecords {
			var err error
			if batch, err = c.r.sealKeyUpdate(batch, true); err != nil {
				t.Fatal(err)
			}
		}
		batch, err := c.r.seal(batch, clientFrame(true, OpBinary, []byte("x"), true), recordTypeApplication)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Conn.Write(batch); err != nil {
			t.Fatalf("round %d: %v (the server closed the connection)", i, err)
		}
		if i%100 == 99 {
			// The server has read the flood so far: the message of this round arrived.
			waitFor(t, "the server to read the flood", func() bool { return len(h.messages()) == i+1 || h.c.Closed() })
			held = max(held, h.c.Held())
			if held > 64<<10 {
				t.Fatalf("after %d KeyUpdate requests the server holds %d bytes for a client that reads nothing", (i+1)*maxUselessRecords, held)
			}
		}
	}
	t.Logf("%d KeyUpdate requests: at most %d bytes held", rounds*maxUselessRecords, held)
}

// TestTLSKeyUpdatesAdmitted: every KeyUpdate a client sends is a control record, counted
// by the Handler's Admit as pings are, so a flood of them meets the same rate limit;
// one the Handler refuses is still followed (the client's key moves on) but not
// answered at once: our KeyUpdate goes out before our next application data, as RFC
// 8446 4.6.3 requires.
func TestTLSKeyUpdatesAdmitted(t *testing.T) {
	var control atomic.Int32
	refuse := atomic.Bool{}
	ts := startServer(t, testOptions{tls: true, admit: func(h *echoHandler, isControl bool) bool {
		if isControl {
			control.Add(1)
			return !refuse.Load()
		}
		return true
	}})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	rc := ts.handshakeOver(t, c, "ku")
	rc.expectEcho("before")
	for _, request := range []bool{false, true, false, true, true} {
		if err := c.writeKeyUpdate(request); err != nil {
			t.Fatal(err)
		}
	}
	rc.expectEcho("after five updates")
	if got := control.Load(); got != 5 {
		t.Errorf("%d control frames admitted for 5 KeyUpdates", got)
	}

	refuse.Store(true)
	before := c.r.in.secret
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	rc.expectEcho("after a refused update")
	if c.r.in.secret == before {
		t.Error("the server sent application data after a KeyUpdate request without its own KeyUpdate")
	}
}

// TestTLSKeyUpdateBeforeUpgrade: a client that asks for a KeyUpdate before its upgrade
// request (crypto/tls answers it and moves to the next keys) gets a working
// connection: the poller cannot take over keys it does not have, so tls.Conn keeps it.
func TestTLSKeyUpdateBeforeUpgrade(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	rc := ts.handshakeOver(t, c, "early")
	rc.expectEcho("after an update before the upgrade")
	if ts.conn("early").c.OnPoller() {
		t.Error("on a poller with keys crypto/tls had already updated")
	}
}

// upgradeRequest is a WebSocket upgrade request for id, as wstest.Handshake sends it,
// for a client that seals it itself.
func upgradeRequest(id string) []byte {
	return []byte("GET /?id=" + id + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
}

// serverRecords reads the server's records off c's socket and opens each with the
// first of tracks that can, remembering under which key and sequence number it was
// sealed: a second record under the same pair is a reused nonce.
type serverRecords struct {
	t      *testing.T
	c      net.Conn
	tracks []*tlsRecords
	seen   map[string]int // key secret and sequence number: index of the record
	n      int
	plain  []byte
}

// next reads and opens one record; false at EOF. It fails the test on a reused nonce.
func (s *serverRecords) next() bool {
	s.t.Helper()
	_ = s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(s.c, h); err != nil {
		if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset") {
			return false
		}
		s.t.Fatal(err)
	}
	rec := append(h, make([]byte, recordLen(h))...)
	if _, err := io.ReadFull(s.c, rec[recordHeaderLen:]); err != nil {
		s.t.Fatal(err)
	}
	s.n++
	for _, tr := range s.tracks {
		key := fmt.Sprintf("%x/%d", tr.in.secret[:tr.hashLen], tr.in.seq)
		_, err := tr.open(bytes.Clone(rec), func(p []byte) bool {
			s.plain = append(s.plain, p...)
			return true
		}, func(bool) error { return nil })
		if err != nil && !errors.Is(err, errCloseNotify) {
			var re *recordError
			if errors.As(err, &re) && re.alert == alertBadRecordMAC {
				continue // not this track's key
			}
		}
		if i, ok := s.seen[key]; ok {
			s.t.Fatalf("records %d and %d from the server are sealed under the same key and sequence number (%s): a reused nonce", i, s.n, key)
		}
		s.seen[key] = s.n
		return true
	}
	return true // under keys no track has (a client that updated its own view)
}

// TestTLSNoNonceReuseAfterKeyUpdateBeforeUpgrade: a hostile client asks for a
// KeyUpdate before its upgrade request, so crypto/tls seals the 101 response under the
// server's next key at sequence number 0. It then keeps speaking under the keys of
// before (it has them all) and asks again: a record layer that took the connection over
// from the key log's first secrets would update to that same next key and seal its
// next record at sequence number 0 again. Two records under one AES-GCM key and nonce
// give away the XOR of their plaintexts and the key that authenticates records.
func TestTLSNoNonceReuseAfterKeyUpdateBeforeUpgrade(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	s0, c0 := bytes.Clone(c.r.in.secret[:c.r.hashLen]), bytes.Clone(c.r.out.secret[:c.r.hashLen])
	if err := c.writeKeyUpdate(true); err != nil { // under c0, sequence number 0
		t.Fatal(err)
	}
	sr := upgradeOverRecords(t, c, "hostile")
	// The record layer's view, if it took over: the server's first key at the records
	// crypto/tls wrote (its KeyUpdate, the 101), the client's at the records it read
	// after its Finished (the KeyUpdate, the request).
	hostile, err := newTLSRecords(c.r.suite, s0, c0, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	sr.tracks = append(sr.tracks, hostile)
	b, err := hostile.sealKeyUpdate(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = hostile.seal(b, clientFrame(true, OpText, []byte("echo me"), true), recordTypeApplication); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Conn.Write(b); err != nil {
		t.Fatal(err)
	}
	for sr.next() {
		if bytes.Contains(sr.plain, []byte("echo me")) {
			break
		}
	}
	if ts.conn("hostile").c.OnPoller() {
		t.Error("taken over by the poller with keys crypto/tls had already updated")
	}
}

// acceptRecords is a server connection from NewTLSListener, after the handshake with
// a client that speaks through this package's record layer (dialRecords). configure,
// if given, changes the server's and the client's configurations.
func acceptRecords(t *testing.T, configure ...func(server, client *tls.Config)) (*tls.Conn, *tlsSock, *recordConn) {
	t.Helper()
	serverConf, client := testcert.Configs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server, client := serverConf, client.Clone()
	for _, f := range configure {
		f(server, client)
	}
	tl := NewTLSListener(ln, server)
	accepted := make(chan *tls.Conn, 1)
	go func() {
		sc, err := tl.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		tc := sc.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tc.Handshake()
		_ = tc.SetDeadline(time.Time{})
		accepted <- tc
	}()
	c := dialRecords(t, ln.Addr().String(), client)
	tc := <-accepted
	if tc == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = tc.NetConn().Close() })
	return tc, tc.NetConn().(*tlsSock), c
}

// TestTLSTakeOverChecksPartialHeader: the start of a record tls.Conn was reading when
// the poller took the connection over is checked as every record header is: a client
// that sends a record with the outer type change_cipher_spec (sealed with that header,
// so that it authenticates) has it refused with unexpected_message, as RFC 8446 5 says
// for change_cipher_spec after the handshake, wherever the takeover cut it.
func TestTLSTakeOverChecksPartialHeader(t *testing.T) {
	tc, sock, c := acceptRecords(t)
	hello, err := c.r.seal(nil, []byte("hello"), recordTypeApplication)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.r.newAEAD(&c.r.out)
	if err != nil {
		t.Fatal(err)
	}
	inner := []byte("sneaky\x17") // content, then the inner type application_data
	n := len(inner) + a.Overhead()
	ccs := []byte{20, 3, 3, byte(n >> 8), byte(n)}
	ccs = a.Seal(ccs, c.r.out.nextNonce(), inner, ccs)
	if _, err := c.Conn.Write(append(hello, ccs[:8]...)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if k, err := tc.Read(got); err != nil || string(got[:k]) != "hello" {
		t.Fatalf("first record: %q, %v", got[:k], err)
	}
	// tls.Conn reads the header and what follows of the second record, then waits for
	// the rest: cut short by a deadline, as net/http's hijack cuts its background read.
	for len(sock.rec) < 8 {
		_ = tc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if k, err := tc.Read(got); k > 0 || err == nil {
			t.Fatalf("read %q, %v from half a record", got[:k], err)
		}
	}
	_ = tc.SetReadDeadline(time.Time{})
	if _, err := tc.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil {
		t.Fatal(err)
	}

	r, plain, err := sock.takeOver(tc, nil)
	var re *recordError
	if err == nil {
		_, err = r.open(ccs[8:], func(p []byte) bool {
			plain = append(plain, p...)
			return true
		}, func(bool) error { return nil })
	}
	if !errors.As(err, &re) || re.alert != alertUnexpectedMessage || len(plain) > 0 {
		t.Fatalf("a protected record with outer type change_cipher_spec: delivered %q, error %v; want unexpected_message", plain, err)
	}
}

// TestTLSSecretsEndWithConnection: the traffic secrets a connection's key log kept
// are wiped when the connection closes without being taken over (plain HTTPS, a
// refused upgrade), and those of the record layer when a wss connection on a poller
// ends: no copy of them outlives its connection in relay's memory.
func TestTLSSecretsEndWithConnection(t *testing.T) {
	tc, sock, _ := acceptRecords(t)
	sock.mu.Lock()
	cs, ss := sock.clientSecret, sock.serverSecret
	sock.mu.Unlock()
	if len(cs) == 0 || len(ss) == 0 {
		t.Fatal("the key log kept no secret")
	}
	_ = tc.Close()
	if !allZero(cs) || !allZero(ss) {
		t.Error("the key log's secrets survive the connection's close")
	}

	ts := startServer(t, testOptions{tls: true})
	rc := ts.rawDial(t, "wiped")
	rc.expectEcho("x")
	h := ts.conn("wiped")
	h.c.mu.Lock()
	r := h.c.tls
	h.c.mu.Unlock()
	if r == nil {
		t.Fatal("not taken over")
	}
	_ = rc.Conn.Close()
	<-h.closed
	if !allZero(r.in.secret[:]) || !allZero(r.out.secret[:]) || !allZero(r.in.key[:]) || !allZero(r.out.key[:]) {
		t.Error("the record layer's secrets and keys survive the connection's end")
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// quietHandler accepts everything and does nothing.
type quietHandler struct {
	once   sync.Once
	closed chan struct{}
}

func (*quietHandler) MaxMessage() int        { return 1 << 20 }
func (*quietHandler) Admit(bool) bool        { return true }
func (*quietHandler) OnMessage(byte, []byte) {}
func (*quietHandler) OnFail(int)             {}
func (h *quietHandler) OnClose()             { h.once.Do(func() { close(h.closed) }) }

// TestTLSStaleConnWritesNothing: the net.Conn Upgrade returned is a tls.Conn; once
// Serve has given the socket to a poller, a write or Close through it (a caller's
// deferred Close, a write that lost a race with Serve) must not reach the socket:
// crypto/tls would seal it under the key and sequence number the record layer goes on
// from, a nonce used twice.
func TestTLSStaleConnWritesNothing(t *testing.T) {
	serverConf, client := testcert.Configs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := StartPollers(1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &quietHandler{closed: make(chan struct{})}
	stale := make(chan error, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, buffered, ok := Upgrade(w, r)
		if !ok {
			return
		}
		c := New(nc, h)
		c.Serve(ps, buffered)
		_, err := nc.Write([]byte("written through tls.Conn after Serve"))
		stale <- err
		c.Start([]byte("open"), nil)
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(NewTLSListener(ln, serverConf))
	}()
	defer func() {
		_ = srv.Close()
		<-done
		ps.Stop()
		<-h.closed
	}()

	c := dialRecords(t, ln.Addr().String(), client)
	s0, c0 := bytes.Clone(c.r.in.secret[:c.r.hashLen]), bytes.Clone(c.r.out.secret[:c.r.hashLen])
	sr := upgradeOverRecords(t, c, "stale")
	// A second view of the server's key at the record after the 101: it opens a record
	// sealed there by anyone else.
	again, err := newTLSRecords(c.r.suite, s0, c0, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	sr.tracks = append(sr.tracks, again)
	for !bytes.Contains(sr.plain, []byte("open")) {
		if !sr.next() {
			t.Fatal("closed before the greeting")
		}
	}
	if err := <-stale; err == nil {
		t.Error("a write through tls.Conn after Serve succeeded")
	}
}

// TestTLSTakeOverAfterHelloRetryRequest: when the server asks the client for another
// key share (a HelloRetryRequest: two server writes before the encrypted flight, a
// second ClientHello), the records are still counted from the flight on: after the
// takeover both directions go on at the sequence numbers crypto/tls left.
func TestTLSTakeOverAfterHelloRetryRequest(t *testing.T) {
	tc, sock, c := acceptRecords(t, func(server, client *tls.Config) {
		// The client sends a share for the group it prefers, P-256; the server takes
		// only P-384.
		server.CurvePreferences = []tls.CurveID{tls.CurveP384}
		client.CurvePreferences = []tls.CurveID{tls.CurveP256, tls.CurveP384}
	})
	if !tc.ConnectionState().HelloRetryRequest {
		t.Fatal("no HelloRetryRequest: the test does not test it")
	}
	// Through crypto/tls: a request and its response, as the upgrade goes.
	if _, err := c.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(got); err != nil || string(got[:n]) != "GET" {
		t.Fatalf("request: %q, %v", got[:n], err)
	}
	if _, err := tc.Write([]byte("101")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(got); err != nil || string(got[:n]) != "101" {
		t.Fatalf("response: %q, %v", got[:n], err)
	}
	r, plain, err := sock.takeOver(tc, nil)
	if err != nil || len(plain) > 0 {
		t.Fatalf("takeover: %v, %q", err, plain)
	}
	// Then through the record layer, both ways.
	if _, err := c.Write([]byte("to the poller")); err != nil {
		t.Fatal(err)
	}
	_ = sock.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := sock.Conn.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	var in []byte
	if _, err := r.open(got[:n], func(p []byte) bool { in = append(in, p...); return true }, func(bool) error { return nil }); err != nil || string(in) != "to the poller" {
		t.Fatalf("the record layer read %q, %v", in, err)
	}
	out, err := r.sealApplication(nil, []byte("from the poller"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sock.Conn.Write(out); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(got); err != nil || string(got[:n]) != "from the poller" {
		t.Fatalf("the client read %q, %v", got[:n], err)
	}
}

// upgradeOverRecords sends the WebSocket upgrade for id through c's record layer and
// reads the server's records until the 101 response has come.
func upgradeOverRecords(t *testing.T, c *recordConn, id string) *serverRecords {
	t.Helper()
	req, err := c.r.seal(nil, upgradeRequest(id), recordTypeApplication)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Conn.Write(req); err != nil {
		t.Fatal(err)
	}
	sr := &serverRecords{t: t, c: c.Conn, tracks: []*tlsRecords{c.r}, seen: map[string]int{}}
	for !bytes.Contains(sr.plain, []byte("\r\n\r\n")) {
		if !sr.next() {
			t.Fatal("closed before the 101 response")
		}
	}
	return sr
}
