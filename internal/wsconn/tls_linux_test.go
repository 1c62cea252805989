//go:build linux

package wsconn

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/internal/wstest"
)

// TestTLSPollerExchange: a wss connection is read by a poller, with its TLS records
// opened and sealed there: messages of every size (within a record, across records,
// longer than the poller's read buffer) go both ways, including frames the client
// pipelined behind its upgrade request, which tls.Conn had decrypted before the
// poller took the socket.
func TestTLSPollerExchange(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	big := strings.Repeat("0123456789", 10_000) // 100 kB: 7 records, 2 poller reads
	pipelined := strings.Repeat("p", 40_000)    // past net/http's 4 kB buffer and one record
	rc := ts.rawDial(t, "a",
		clientFrame(true, OpText, []byte("pipelined small"), true),
		clientFrame(true, OpText, []byte(pipelined), true))
	h := ts.conn("a")
	if !h.c.OnPoller() {
		t.Fatal("the wss connection is not on a poller")
	}
	for _, want := range []string{"pipelined small", pipelined} {
		if op, p := rc.Read(); op != OpText || string(p) != want {
			t.Fatalf("pipelined frame echoed as %d, %d bytes", op, len(p))
		}
	}
	for _, msg := range []string{"hello", strings.Repeat("r", 16_000), strings.Repeat("s", 16_400), big} {
		rc.expectEcho(msg)
	}
	// Ping and pong, and a message to the client from outside its read events.
	rc.Write(clientFrame(true, OpPing, []byte("are you there"), true))
	if op, p := rc.Read(); op != OpPong || string(p) != "are you there" {
		t.Fatalf("ping answered with %d %q", op, p)
	}
	h.c.Send([]byte("from the server"))
	if op, p := rc.Read(); op != OpText || string(p) != "from the server" {
		t.Fatalf("sent %d %q", op, p)
	}
	if got := len(h.messages()); got != 6 {
		t.Errorf("%d messages handled, want 6", got)
	}
}

// TestTLSRecordsSplitAcrossReads: a client that writes its TLS records one byte per
// write (so the poller reads partial records, header and body cut anywhere) is read
// whole; so is one that writes them in 7-byte pieces across record boundaries.
func TestTLSRecordsSplitAcrossReads(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	for _, split := range []int{1, 7} {
		id := fmt.Sprintf("split%d", split)
		c := dialRecords(t, ts.ln.Addr().String(), ts.client)
		c.split = split
		rc := ts.handshakeOver(t, c, id)
		if !ts.conn(id).c.OnPoller() {
			t.Fatal("not on a poller")
		}
		rc.expectEcho("small")
		rc.Write(clientFrame(true, OpText, []byte("two frames"), true), clientFrame(true, OpText, []byte("in one record"), true))
		for _, want := range []string{"two frames", "in one record"} {
			if op, p := rc.Read(); op != OpText || string(p) != want {
				t.Fatalf("got %d %q, want %q", op, p, want)
			}
		}
		rc.expectEcho(strings.Repeat("L", 20_000))
	}
}

// TestTLSPollerKeyUpdate: a client that asks for a KeyUpdate gets ours before any
// record under the next key, and both sides go on under the new keys.
func TestTLSPollerKeyUpdate(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	c := dialRecords(t, ts.ln.Addr().String(), ts.client)
	rc := ts.handshakeOver(t, c, "ku")
	rc.expectEcho("before")
	for i := range 3 {
		if err := c.writeKeyUpdate(true); err != nil {
			t.Fatal(err)
		}
		rc.expectEcho(fmt.Sprintf("after update %d", i+1))
	}
	if c.r.in.seq != 1 || c.r.out.seq != 1 {
		// One record each way since the last update: the echo, and our message.
		t.Errorf("after the updates: %d records read, %d written under the last keys; want 1 and 1", c.r.in.seq, c.r.out.seq)
	}
	h := ts.conn("ku")
	h.c.Close()
	<-h.closed
}

// TestTLSSlowHandshakeTimesOut: a client that stops in the middle of its TLS handshake,
// or after it without sending its request, is cut off by net/http's deadline through
// the listener's connection, and holds nothing after.
func TestTLSSlowHandshakeTimesOut(t *testing.T) {
	ts := startServer(t, testOptions{tls: true, handshakeTimeout: 300 * time.Millisecond})
	half := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", ts.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// The start of a ClientHello record: 22, TLS 1.0, 512 bytes to come.
		if _, err := c.Write([]byte{22, 3, 1, 2, 0, 1}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	silent := func(t *testing.T) net.Conn {
		c, err := tls.Dial("tcp", ts.ln.Addr().String(), ts.client)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for name, dial := range map[string]func(*testing.T) net.Conn{"mid-handshake": half, "no request": silent} {
		t.Run(name, func(t *testing.T) {
			c := dial(t)
			defer c.Close()
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server kept the connection for 5 s")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("closed after %v, want about 300 ms", d)
			}
		})
	}
}

// readers counts the goroutines reading a socket of their own (readStream).
func readers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("wsconn.(*Conn).readStream("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestTLSIdlePeersHoldNoGoroutine: wss connections on the pollers hold no goroutine of
// their own; on the goroutine path (no pollers) each holds one, which is what the
// counts would show if they were not on the pollers.
func TestTLSIdlePeersHoldNoGoroutine(t *testing.T) {
	const n = 40
	for _, o := range []testOptions{{tls: true}, {tls: true, pollers: -1}} {
		ts := startServer(t, o)
		ts.rawDial(t, "warm-up").expectEcho("x") // the server's own goroutines are running
		before, readersBefore := runtime.NumGoroutine(), readers()
		for i := range n {
			id := fmt.Sprintf("idle%d", i)
			ts.rawDial(t, id).expectEcho("hi")
			ts.conn(id)
		}
		grew, reading := runtime.NumGoroutine()-before, readers()-readersBefore
		if o.pollers >= 0 {
			// net/http's connection goroutines end after the handler: wait for that.
			waitFor(t, "net/http's goroutines to end", func() bool {
				grew = runtime.NumGoroutine() - before
				return grew < n/4
			})
			if reading != 0 {
				t.Errorf("%d idle wss connections on pollers: %d reader goroutines", n, reading)
			}
		} else if reading != n {
			t.Errorf("%d idle wss connections on the goroutine path: %d reader goroutines (the count is wrong)", n, reading)
		}
		t.Logf("pollers=%v: %d idle wss connections, %d more goroutines, %d readers", o.pollers >= 0, n, grew, reading)
	}
}

// TestTLSCloseAndDrain: on the poller path, a close by the server sends a close frame
// and close_notify; the client's close_notify or its close frame ends the connection
// (OnClose); stopping the pollers (a drain) closes every wss connection they read.
func TestTLSCloseAndDrain(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})

	rc := ts.rawDial(t, "by-server")
	h := ts.conn("by-server")
	h.c.CloseWith(ClosePolicyViolated)
	rc.ExpectClose(ClosePolicyViolated) // then EOF: close_notify, not a reset
	<-h.closed

	rc = ts.rawDial(t, "by-notify")
	h = ts.conn("by-notify")
	if err := rc.Conn.(*tls.Conn).CloseWrite(); err != nil { // close_notify, the socket stays open
		t.Fatal(err)
	}
	<-h.closed
	if op, _ := rc.Read(); op != wstest.EOF {
		t.Fatalf("frame %d after close_notify", op)
	}

	rc = ts.rawDial(t, "by-frame")
	h = ts.conn("by-frame")
	rc.Write(clientFrame(true, OpClose, []byte{0x03, 0xe8}, true))
	rc.ExpectClose(1000)
	<-h.closed

	var clients []*rawClient
	var handlers []*echoHandler
	for i := range 10 {
		id := fmt.Sprintf("drain%d", i)
		clients = append(clients, ts.rawDial(t, id))
		handlers = append(handlers, ts.conn(id))
	}
	ts.ps.Stop()
	for i, h := range handlers {
		select {
		case <-h.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d not closed by the drain", i)
		}
		if op, _ := clients[i].Read(); op != wstest.EOF {
			t.Fatalf("connection %d: frame %d after the drain", i, op)
		}
	}
}

// TestTLS12StaysOnGoroutine: a TLS 1.2 client is served as before, by a goroutine
// reading through tls.Conn (the record layer is TLS 1.3's).
func TestTLS12StaysOnGoroutine(t *testing.T) {
	ts := startServer(t, testOptions{tls: true})
	ts.client = ts.client.Clone()
	ts.client.MaxVersion = tls.VersionTLS12
	rc := ts.rawDial(t, "old", clientFrame(true, OpText, []byte("pipelined"), true))
	if op, p := rc.Read(); op != OpText || string(p) != "pipelined" {
		t.Fatalf("pipelined frame: %d %q", op, p)
	}
	if ts.conn("old").c.OnPoller() {
		t.Fatal("a TLS 1.2 connection is on a poller")
	}
	rc.expectEcho(strings.Repeat("y", 30_000))
}

// TestTLSTemporaryErrorKeepsConn pins what taking a connection over from tls.Conn
// relies on: a read that fails with a temporary net.Error (errWouldBlock) leaves the
// tls.Conn usable, and it holds no part of a record it has not finished (reads end at
// record boundaries).
func TestTLSTemporaryErrorKeepsConn(t *testing.T) {
	serverConf, client := testcert.Configs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := NewTLSListener(ln, serverConf)
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), client)
		if err != nil {
			t.Error(err)
			c = nil
		}
		dialed <- c
	}()
	sc, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tc := sc.(*tls.Conn)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	cc := <-dialed
	if cc == nil {
		t.FailNow()
	}
	defer cc.Close()
	sock := tc.NetConn().(*tlsSock)

	sock.shut.Store(true)
	if n, err := tc.Read(make([]byte, 10)); n != 0 || !errors.Is(err, errWouldBlock) {
		t.Fatalf("shut read: %d, %v", n, err)
	}
	sock.shut.Store(false)
	if _, err := cc.Write([]byte("after a temporary error")); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 100)
	n, err := tc.Read(got)
	if err != nil || string(got[:n]) != "after a temporary error" {
		t.Fatalf("after the temporary error: %q, %v (crypto/tls kept the error)", got[:n], err)
	}
	if len(sock.rec) != 0 || sock.appIn != 2 { // the client's Finished and this record
		t.Errorf("after a whole record: %d bytes of a record held, %d records counted; want 0 and 2", len(sock.rec), sock.appIn)
	}
}
