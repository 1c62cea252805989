package portmux

import (
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/internal/wsconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Route
	}{
		{"", RouteNone},
		{"\x00\x01\x00\x00", RouteTURN}, // Binding request
		{"\x00", RouteTURN},             // one byte of STUN is enough
		{"\x01\x13", RouteTURN},         // a response, still STUN-shaped
		{"\x40\x00\x00\x04", RouteTURN}, // ChannelData
		{"GET / HTTP/1.1", RouteHTTP},
		{"GET ", RouteHTTP},
		{"GE", RouteNone},
		{"G", RouteNone},
		{"OPTIONS", RouteNone},
		{"OPTIONS ", RouteHTTP},
		{"PRI * HTTP/2.0", RouteHTTP},
		{"POST /x", RouteHTTP},
		{"GETX", RouteTURN}, // not a method: the gate counts it as malformed
		{"get /", RouteTURN},
		{"\x16\x03\x01", RouteTURN}, // a TLS ClientHello on a plain port
		{"\xff\xff", RouteTURN},
	} {
		if got := Classify([]byte(c.in)); got != c.want {
			t.Errorf("Classify(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// testMux serves a Mux on a loopback port; what each side accepts arrives on turn and web.
type testMux struct {
	m         *Mux
	turn, web chan net.Conn
}

func startMux(t *testing.T, cfg Config) *testMux {
	t.Helper()
	m, err := Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	tm := &testMux{m: m, turn: make(chan net.Conn, 16), web: make(chan net.Conn, 16)}
	done := make(chan struct{}, 2)
	for _, side := range []struct {
		l  net.Listener
		ch chan net.Conn
	}{{m.TURN(), tm.turn}, {m.HTTP(), tm.web}} {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				c, err := side.l.Accept()
				if err != nil {
					return
				}
				side.ch <- c
			}
		}()
	}
	m.Serve()
	t.Cleanup(func() {
		_ = m.Close()
		<-done
		<-done
		for _, ch := range []chan net.Conn{tm.turn, tm.web} {
			close(ch)
			for c := range ch {
				_ = c.Close()
			}
		}
	})
	return tm
}

// expect waits for a connection on want's side (none on the other) and checks that the
// first bytes read from it are first.
func (tm *testMux) expect(t *testing.T, want Route, first string) net.Conn {
	t.Helper()
	ch, other := tm.turn, tm.web
	if want == RouteHTTP {
		ch, other = tm.web, tm.turn
	}
	select {
	case c := <-ch:
		if first != "" {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, len(first))
			if _, err := io.ReadFull(c, b); err != nil || string(b) != first {
				t.Fatalf("read %q, %v; want %q", b, err, first)
			}
		}
		return c
	case c := <-other:
		t.Fatalf("routed to the other side (%T)", c)
	case <-time.After(5 * time.Second):
		t.Fatal("nothing routed in 5 s")
	}
	return nil
}

func TestRoutesTLS(t *testing.T) {
	server, client := testcert.Configs(t)
	tm := startMux(t, Config{TLS: server})
	addr := tm.m.Addr().String()
	binding := "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl"
	for _, c := range []struct {
		name   string
		protos []string
		send   string
		want   Route
		alpn   string
	}{
		{"browser https", []string{"h2", "http/1.1"}, "GET / HTTP/1.1\r\n", RouteHTTP, "http/1.1"},
		{"stun.turn", []string{"stun.turn"}, binding, RouteTURN, "stun.turn"},
		{"coturn offers both", []string{"http/1.1", "stun.turn"}, binding, RouteTURN, "stun.turn"},
		{"no ALPN, STUN", nil, binding, RouteTURN, ""},
		{"no ALPN, HTTP", nil, "GET / HTTP/1.1\r\n", RouteHTTP, ""},
		{"h2 only", []string{"h2"}, "PRI * HTTP/2.0\r\n", RouteHTTP, ""},
		{"unknown ALPN, STUN", []string{"webrtc"}, binding, RouteTURN, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := client.Clone()
			conf.NextProtos = c.protos
			cc, err := tls.Dial("tcp", addr, conf)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			if got := cc.ConnectionState().NegotiatedProtocol; got != c.alpn {
				t.Fatalf("negotiated %q, want %q", got, c.alpn)
			}
			if _, err := io.WriteString(cc, c.send); err != nil {
				t.Fatal(err)
			}
			sc := tm.expect(t, c.want, c.send)
			defer sc.Close()
			// The connection works both ways after routing.
			if _, err := io.WriteString(sc, "pong"); err != nil {
				t.Fatal(err)
			}
			_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 4)
			if _, err := io.ReadFull(cc, b); err != nil || string(b) != "pong" {
				t.Fatalf("client read %q, %v", b, err)
			}
			_, peeked := sc.(*wsconn.PeekedTLS)
			if peeked != (c.alpn == "") {
				t.Errorf("routed as %T: the bytes read to route go back in front only without ALPN", sc)
			}
		})
	}
}

// A method that arrives a byte at a time is routed once it is whole, and nothing of it
// is lost on the way.
func TestRoutesSlowBytes(t *testing.T) {
	for _, plain := range []bool{true, false} {
		server, client := testcert.Configs(t)
		cfg := Config{TLS: server}
		if plain {
			cfg.TLS = nil
		}
		tm := startMux(t, cfg)
		var cc net.Conn
		var err error
		if plain {
			cc, err = net.Dial("tcp", tm.m.Addr().String())
		} else {
			cc, err = tls.Dial("tcp", tm.m.Addr().String(), client)
		}
		if err != nil {
			t.Fatal(err)
		}
		req := "POST /x HTTP/1.1\r\n"
		for i := 0; i < len("POST"); i++ {
			if _, err := cc.Write([]byte{req[i]}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-tm.web:
				t.Fatalf("plain %v: routed after %q", plain, req[:i+1])
			case <-tm.turn:
				t.Fatalf("plain %v: routed to TURN after %q", plain, req[:i+1])
			case <-time.After(50 * time.Millisecond):
			}
		}
		if _, err := io.WriteString(cc, req[len("POST"):]); err != nil {
			t.Fatal(err)
		}
		sc := tm.expect(t, RouteHTTP, req)
		_ = sc.Close()
		_ = cc.Close()
	}
}

// On a plain port the bytes are only peeked: the socket handed over is the accepted
// *net.TCPConn itself, its data all unread.
func TestRoutesPlainTCPUntouched(t *testing.T) {
	tm := startMux(t, Config{})
	for _, c := range []struct {
		send string
		want Route
	}{{"\x00\x01\x00\x00", RouteTURN}, {"GET /ice HTTP/1.1\r\n", RouteHTTP}} {
		cc, err := net.Dial("tcp", tm.m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(cc, c.send); err != nil {
			t.Fatal(err)
		}
		sc := tm.expect(t, c.want, c.send)
		if _, ok := sc.(*net.TCPConn); !ok {
			t.Errorf("%q routed as %T, want the *net.TCPConn", c.send, sc)
		}
		_ = sc.Close()
		_ = cc.Close()
	}
}

// A client that connects and sends nothing, or fails its handshake, is closed after
// HandshakeTimeout, routed nowhere and counted; an ACME validation (ALPN acme-tls/1)
// ends after its handshake.
func TestSilentAndACMEClosed(t *testing.T) {
	server, client := testcert.Configs(t)
	server.NextProtos = []string{ProtoACME}
	drops := &dropCounter{n: map[string]int{}}
	tm := startMux(t, Config{TLS: server, HandshakeTimeout: 300 * time.Millisecond, Dropped: drops.add})
	addr := tm.m.Addr().String()
	silentTCP, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silentTCP.Close()
	silentTLS, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer silentTLS.Close()
	acme := client.Clone()
	acme.NextProtos = []string{ProtoACME}
	v, err := tls.Dial("tcp", addr, acme)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if p := v.ConnectionState().NegotiatedProtocol; p != ProtoACME {
		t.Fatalf("negotiated %q, want %s", p, ProtoACME)
	}
	for _, c := range []net.Conn{silentTCP, silentTLS, v} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("%T: read %v, want the server to close", c, err)
		}
	}
	select {
	case c := <-tm.turn:
		t.Fatalf("routed to TURN: %v", c.RemoteAddr())
	case c := <-tm.web:
		t.Fatalf("routed to HTTP: %v", c.RemoteAddr())
	default:
	}
	waitPending(t, tm.m, 0)
	if got := drops.get(DropTimeout); got != 2 {
		t.Fatalf("%d timeouts counted, want 2 (the silent TCP and TLS clients)", got)
	}
}

type dropCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *dropCounter) add(reason string) { d.mu.Lock(); d.n[reason]++; d.mu.Unlock() }

func (d *dropCounter) get(reason string) int { d.mu.Lock(); defer d.mu.Unlock(); return d.n[reason] }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Connections in their handshake are capped per source address: over the cap a new
// one is closed at once, and once the pending ones are routed new ones are taken again.
func TestPendingCapPerSource(t *testing.T) {
	tm := startMux(t, Config{MaxPendingPerIP: 3, HandshakeTimeout: 5 * time.Second})
	addr := tm.m.Addr().String()
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitPending(t, tm.m, 3)
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a fourth connection from one address: read %v, want it closed", err)
	}
	for _, c := range held {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = tm.expect(t, RouteHTTP, "").Close()
	}
	waitPending(t, tm.m, 0)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "\x00\x01"); err != nil {
		t.Fatal(err)
	}
	_ = tm.expect(t, RouteTURN, "\x00\x01").Close()
}

func waitPending(t *testing.T, m *Mux, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		got := m.total
		m.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections pending, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Closing the port ends routers still waiting for a client and refuses delivery to a
// side that was closed: nothing is left running (goleak, TestMain).
func TestCloseEndsPending(t *testing.T) {
	m, err := Listen("tcp4", "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	m.Serve()
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitPending(t, m, 1)
	_ = m.TURN().Close()
	d, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := io.WriteString(d, "\x00\x01"); err != nil {
		t.Fatal(err)
	}
	_ = d.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("TURN side closed: read %v, want the connection closed", err)
	}
	done := make(chan struct{})
	go func() { _ = m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for the silent client's handshake timeout")
	}
	if _, err := m.HTTP().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("HTTP side after Close: %v", err)
	}
	if !strings.Contains(m.Addr().String(), "127.0.0.1") {
		t.Fatal(m.Addr())
	}
}

// FuzzClassify: any first bytes are routed or wait for more, and wait only while they
// are a proper prefix of a method; routing never changes as bytes are added after a
// decision.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1", "\x00\x01", "@\x00", "PRI * HTTP/2.0", "OPTION", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Classify(b)
		if got == RouteNone {
			if len(b) == 0 {
				return
			}
			prefix := false
			for _, m := range httpMethods {
				prefix = prefix || (len(b) < len(m) && m[:len(b)] == string(b))
			}
			if !prefix {
				t.Fatalf("Classify(%q) waits, but it is no method's prefix", b)
			}
			return
		}
		for i := 1; i <= len(b); i++ {
			if r := Classify(b[:i]); r != RouteNone && r != got {
				t.Fatalf("Classify(%q) = %v but Classify(%q) = %v", b, got, b[:i], r)
			}
		}
	})
}

// dialFrom connects to addr from the loopback address src (every 127/8 address is
// local on Linux), standing for a client of its own.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByServer reports whether the server closed c (EOF or reset) within 5 s.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

// TestPendingFullEvictsBusiestSource: a few sources holding every routing slot with
// silent connections do not lock the port: a client from another address gets in, the
// oldest connection of the source holding the most closed for it; a source already
// holding as many as any other is refused. Each closing is counted by reason.
func TestPendingFullEvictsBusiestSource(t *testing.T) {
	drops := &dropCounter{n: map[string]int{}}
	tm := startMux(t, Config{MaxPending: 6, MaxPendingPerIP: 4, HandshakeTimeout: time.Minute, Dropped: drops.add})
	addr := tm.m.Addr().String()
	var a []net.Conn
	for range 4 {
		a = append(a, dialFrom(t, "127.0.0.2", addr))
		waitPending(t, tm.m, len(a))
	}
	if !closedByServer(dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("a fifth connection from one source was not refused")
	}
	for i := range 2 {
		dialFrom(t, "127.0.0.3", addr)
		waitPending(t, tm.m, 5+i)
	}
	// Full: b's third connection takes a's oldest (a holds 4, b 2).
	dialFrom(t, "127.0.0.3", addr)
	if !closedByServer(a[0]) {
		t.Fatal("the busiest source's oldest connection was not closed for another source's")
	}
	waitPending(t, tm.m, 6)
	// a and b hold 3 each: neither gets more.
	for _, src := range []string{"127.0.0.3", "127.0.0.2"} {
		if !closedByServer(dialFrom(t, src, addr)) {
			t.Fatalf("%s, holding as many as any source of a full port, was not refused", src)
		}
	}
	// A new source gets in, in place of the oldest of the busiest (a's second).
	legit := dialFrom(t, "127.0.0.4", addr)
	if !closedByServer(a[1]) {
		t.Fatal("no room made for a new source")
	}
	if _, err := io.WriteString(legit, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = tm.expect(t, RouteHTTP, "GET / HTTP/1.1\r\n").Close()
	waitPending(t, tm.m, 5)
	drops.mu.Lock()
	defer drops.mu.Unlock()
	if want := map[string]int{DropPerSource: 1, DropFull: 2, DropEvicted: 2}; !maps.Equal(drops.n, want) {
		t.Fatalf("closings counted %v, want %v", drops.n, want)
	}
}

// An IPv4 source counts by its address (also as an IPv4-mapped one, from a dual-stack
// listener), an IPv6 source by its /64: one host usually holds a whole /64.
func TestSourceKey(t *testing.T) {
	for _, c := range []struct{ addr, key string }{
		{"192.0.2.1:5", "192.0.2.1/32"},
		{"[::ffff:192.0.2.1]:5", "192.0.2.1/32"},
		{"[2001:db8:1:2:3:4:5:6]:5", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2::ffff]:5", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:5", "2001:db8:1:3::/64"},
	} {
		if got := sourceKey(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.addr))); got.String() != c.key {
			t.Errorf("sourceKey(%s) = %s, want %s", c.addr, got, c.key)
		}
	}
}
