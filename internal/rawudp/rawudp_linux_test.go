//go:build linux

package rawudp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func open(t testing.TB, o Options) *Conn {
	t.Helper()
	if !o.Local.IsValid() {
		o.Local = loopback
	}
	c, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func goUDP(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return u
}

// recvAll polls c until want datagrams have arrived in b's slots (a Conn never waits).
func recvAll(t testing.TB, c *Conn, b *Batch, want int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := c.Recv(b)
		if err != nil {
			t.Fatal(err)
		}
		if n >= want {
			return n
		}
		if n > 0 {
			t.Fatalf("got %d datagrams in one read, want %d", n, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no datagram within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// WriteTo and Recv move datagrams between two Conns, sources and lengths intact; an
// empty socket reads as 0 datagrams, not an error.
func TestConnWriteToRecv(t *testing.T) {
	a, b := open(t, Options{}), open(t, Options{Buffer: 1 << 20})
	if !a.LocalAddr().Addr().IsLoopback() || a.LocalAddr().Port() == 0 {
		t.Fatalf("LocalAddr %v", a.LocalAddr())
	}
	batch := NewBatch(4, 64)
	if n, err := b.Recv(batch); n != 0 || err != nil {
		t.Fatalf("empty socket: %d, %v", n, err)
	}
	for _, s := range []string{"one", "two", "three"} {
		if n, err := a.WriteTo([]byte(s), b.LocalAddr()); n != len(s) || err != nil {
			t.Fatalf("WriteTo: %d, %v", n, err)
		}
	}
	waitReadable(t, b)
	n, err := b.Recv(batch)
	if err != nil || n != 3 {
		t.Fatalf("Recv: %d, %v", n, err)
	}
	for i, want := range []string{"one", "two", "three"} {
		if got := string(batch.Data(i)); got != want || batch.Len(i) != len(want) || batch.From(i) != a.LocalAddr() || batch.Truncated(i) {
			t.Errorf("slot %d: %q (%d) from %v truncated=%v", i, got, batch.Len(i), batch.From(i), batch.Truncated(i))
		}
	}
	if _, err := a.WriteTo([]byte("x"), netip.MustParseAddrPort("[::1]:9")); err != ErrNotIPv4 {
		t.Errorf("WriteTo IPv6: %v, want ErrNotIPv4", err)
	}
}

// waitReadable waits until a datagram is queued on c (loopback delivery is synchronous
// with the send, but be safe).
func waitReadable(t testing.TB, c *Conn) {
	t.Helper()
	e, err := NewEpoll()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Add(c, 1); err != nil {
		t.Fatal(err)
	}
	tags := make([]int32, 1)
	if n, err := e.Wait(tags, 5*time.Second); n != 1 || err != nil {
		t.Fatalf("not readable: %d, %v", n, err)
	}
}

// A datagram longer than its slot is cut to the slot and reported truncated.
func TestBatchTruncated(t *testing.T) {
	a, b := open(t, Options{}), open(t, Options{})
	if _, err := a.WriteTo(bytes.Repeat([]byte("x"), 100), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	batch := NewBatch(1, 10)
	recvAll(t, b, batch, 1)
	if !batch.Truncated(0) || batch.Len(0) != 10 {
		t.Fatalf("truncated=%v len=%d, want true 10", batch.Truncated(0), batch.Len(0))
	}
}

// Send sends each slot to its own address; after Recv, sending the same slots back
// answers every sender (the echo peer of the benchmark).
func TestBatchSendAndEcho(t *testing.T) {
	echo := open(t, Options{})
	c1, c2 := open(t, Options{}), open(t, Options{})
	out := NewBatch(2, 16)
	for i := 0; i < 2; i++ {
		n := copy(out.Buf(i), fmt.Sprintf("from %d", i))
		out.SetLen(i, n)
		out.SetAddr(i, echo.LocalAddr(), IPv4)
	}
	if n, err := c1.Send(out, 0, 1); n != 1 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	if n, err := c2.Send(out, 1, 2); n != 1 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	in := NewBatch(8, 64)
	waitReadable(t, echo)
	got := recvAll(t, echo, in, 2)
	for i := 0; i < got; i++ {
		in.SetLen(i, in.Len(i))
	}
	if n, err := echo.Send(in, 0, got); n != got || err != nil {
		t.Fatalf("echo Send: %d, %v", n, err)
	}
	for i, c := range []*Conn{c1, c2} {
		b := make([]byte, 64)
		n, err := c.ReadTimeout(b, 5*time.Second)
		if err != nil || string(b[:n]) != fmt.Sprintf("from %d", i) {
			t.Fatalf("client %d got %q, %v", i, b[:n], err)
		}
	}
}

// A connected Conn: Write goes to the peer, ReadTimeout gives up after its timeout, and
// the ICMP port unreachable an earlier Write caused is passed over, not returned.
func TestConnConnected(t *testing.T) {
	peer := goUDP(t, "udp4", "127.0.0.1:0")
	c := open(t, Options{Remote: peer.LocalAddr().(*net.UDPAddr).AddrPort()})
	if n, err := c.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	buf := make([]byte, 16)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from != c.LocalAddr() {
		t.Fatalf("peer got %q from %v, %v", buf[:n], from, err)
	}
	// Slots without an address go to the connected peer.
	out := NewBatch(2, 8)
	for i := 0; i < 2; i++ {
		out.SetLen(i, copy(out.Buf(i), fmt.Sprint("b", i)))
	}
	if n, err := c.Send(out, 0, 2); n != 2 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	for i := 0; i < 2; i++ {
		n, _, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != fmt.Sprint("b", i) {
			t.Fatalf("peer got %q, %v", buf[:n], err)
		}
	}
	start := time.Now()
	if _, err := c.ReadTimeout(buf, 30*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadTimeout on a quiet socket: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("ReadTimeout returned after %v", d)
	}
	// Close the peer: the next Write draws an ICMP port unreachable (ECONNREFUSED).
	_ = peer.Close()
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, err := c.ReadTimeout(buf, 30*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadTimeout after ICMP unreachable: %v, want the timeout", err)
	}
}

// The kernel's refusal comes back as its errno: EACCES for a broadcast address (Conns
// never set SO_BROADCAST), EINVAL for port 0.
func TestConnSendErrors(t *testing.T) {
	c := open(t, Options{})
	for _, tc := range []struct {
		to   string
		want syscall.Errno
	}{
		{"127.255.255.255:9", syscall.EACCES},
		{"127.0.0.1:0", syscall.EINVAL},
	} {
		n, err := c.WriteTo([]byte("x"), netip.MustParseAddrPort(tc.to))
		if n != 0 || err != tc.want {
			t.Errorf("WriteTo %s: %d, %v; want %v", tc.to, n, err, tc.want)
		}
		b := NewBatch(1, 4)
		b.SetAddr(0, netip.MustParseAddrPort(tc.to), IPv4)
		if n, err := c.Send(b, 0, 1); n != 0 || err != tc.want {
			t.Errorf("Send %s: %d, %v; want %v", tc.to, n, err, tc.want)
		}
	}
}

// After Close every call says net.ErrClosed, and a second Close too.
func TestConnClosed(t *testing.T) {
	c, err := Open(Options{Local: loopback})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	to := netip.MustParseAddrPort("127.0.0.1:9")
	b := NewBatch(1, 8)
	if _, err := c.WriteTo([]byte("x"), to); err != net.ErrClosed {
		t.Errorf("WriteTo: %v", err)
	}
	if _, err := c.Write([]byte("x")); err != net.ErrClosed {
		t.Errorf("Write: %v", err)
	}
	if _, err := c.Recv(b); err != net.ErrClosed {
		t.Errorf("Recv: %v", err)
	}
	if _, err := c.Send(b, 0, 1); err != net.ErrClosed {
		t.Errorf("Send: %v", err)
	}
	if _, err := c.ReadTimeout(make([]byte, 8), time.Millisecond); err != net.ErrClosed {
		t.Errorf("ReadTimeout: %v", err)
	}
	if err := c.Close(); err != net.ErrClosed {
		t.Errorf("second Close: %v", err)
	}
}

// An IPv6 Conn is IPv6-only: it reaches and hears IPv6 peers, refuses IPv4 and
// IPv4-mapped destinations (ErrNotIPv6), and a dual-stack peer's IPv4 datagrams to its
// port never arrive; an IPv4 Conn refuses IPv6 ones (ErrNotIPv4).
func TestConnIPv6(t *testing.T) {
	c, err := Open(Options{Local: netip.MustParseAddrPort("[::1]:0")})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer c.Close()
	if c.Family() != IPv6 || !c.LocalAddr().Addr().Is6() || c.LocalAddr().Port() == 0 {
		t.Fatalf("family %v, local %v", c.Family(), c.LocalAddr())
	}
	peer := goUDP(t, "udp6", "[::1]:0")
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := c.WriteTo([]byte("v6"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "v6" || from.Port() != c.LocalAddr().Port() {
		t.Fatalf("peer read %q from %v: %v", buf[:n], from, err)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("back"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if n, err := c.ReadTimeout(buf, 2*time.Second); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("read %q: %v", buf[:n], err)
	}
	for _, bad := range []string{"127.0.0.1:9", "[::ffff:127.0.0.1]:9"} {
		if _, err := c.WriteTo([]byte("x"), netip.MustParseAddrPort(bad)); err != ErrNotIPv6 {
			t.Errorf("WriteTo %s: %v, want ErrNotIPv6", bad, err)
		}
	}
	c4, err := Open(Options{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	if _, err := c4.WriteTo([]byte("x"), to); err != ErrNotIPv4 {
		t.Errorf("IPv4 Conn to %v: %v, want ErrNotIPv4", to, err)
	}
	if _, err := Open(Options{Local: netip.MustParseAddrPort("[::1]:0"), Remote: netip.MustParseAddrPort("127.0.0.1:9")}); err == nil {
		t.Error("an IPv6 socket connected to an IPv4 peer")
	}
	// IPV6_V6ONLY: the same port on a wildcard IPv6 socket hears no IPv4.
	w, err := Open(Options{Local: netip.MustParseAddrPort("[::]:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v4 := goUDP(t, "udp4", "127.0.0.1:0")
	if _, err := v4.WriteToUDPAddrPort([]byte("v4"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), w.LocalAddr().Port())); err != nil {
		t.Fatal(err)
	}
	if n, err := w.ReadTimeout(buf, 200*time.Millisecond); err == nil {
		t.Fatalf("an IPv6-only socket read %q from IPv4", buf[:n])
	}
}

// Reader returns datagrams of a *net.UDPConn in order, with their sources, reading a
// batch per system call; SendVia sends through such a socket, with destinations written
// for its family (a dual-stack socket reaches an IPv4 client through a mapped address).
func TestReaderAndSendVia(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp", "[::]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			u := goUDP(t, tc.network, tc.addr)
			port := u.LocalAddr().(*net.UDPAddr).Port
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			r, err := NewReader(u, 4, 32)
			if err != nil {
				t.Fatal(err)
			}
			c := open(t, Options{})
			for i := 0; i < 6; i++ {
				if _, err := c.WriteTo([]byte{byte(i)}, to); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 6; i++ {
				if i == 4 && r.Buffered() {
					t.Fatal("Buffered after a whole batch was taken")
				}
				b, from, err := r.Next()
				if err != nil || len(b) != 1 || b[0] != byte(i) || from != c.LocalAddr() {
					t.Fatalf("datagram %d: % x from %v, %v", i, b, from, err)
				}
				if i == 0 && !r.Buffered() {
					t.Fatal("one recvmmsg should have brought the first 4")
				}
			}

			rc, err := u.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			fam := FamilyOf(u)
			if want := map[string]Family{"udp4": IPv4, "udp": IPv6}[tc.network]; fam != want {
				t.Fatalf("FamilyOf: %v, want %v", fam, want)
			}
			b := NewBatch(3, 8)
			for i := 0; i < 3; i++ {
				b.SetLen(i, copy(b.Buf(i), fmt.Sprint("r", i)))
				b.SetAddr(i, c.LocalAddr(), fam)
			}
			if n, err := b.SendVia(rc, 0, 3); n != 3 || err != nil {
				t.Fatalf("SendVia: %d, %v", n, err)
			}
			in := NewBatch(4, 8)
			waitReadable(t, c)
			got := recvAll(t, c, in, 3)
			for i := 0; i < got; i++ {
				if string(in.Data(i)) != fmt.Sprint("r", i) || in.From(i).Port() != uint16(port) {
					t.Errorf("reply %d: %q from %v", i, in.Data(i), in.From(i))
				}
			}
			// A refused first message: its errno, nothing sent.
			b.SetAddr(0, netip.MustParseAddrPort("127.0.0.1:0"), fam)
			if n, err := b.SendVia(rc, 0, 1); n != 0 || err != syscall.EINVAL {
				t.Fatalf("SendVia to port 0: %d, %v", n, err)
			}
			_ = u.Close()
			if _, err := b.SendVia(rc, 1, 2); err == nil {
				t.Fatal("SendVia on a closed socket succeeded")
			} else if _, isErrno := err.(syscall.Errno); isErrno {
				t.Fatalf("SendVia on a closed socket: errno %v, want the socket's error", err)
			}
			if _, _, err := r.Next(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Next on a closed socket: %v", err)
			}
		})
	}
}

// recorder is a Sink that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	got     map[string][]string // owner -> payloads
	headers bool                // every buffer had its headroom and tailroom
	flushes int
}

func (r *recorder) Datagram(owner string, buf []byte, n int, _ netip.AddrPort, truncated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(buf) != 32 || truncated {
		r.headers = false
	}
	buf[0], buf[1] = 0xAB, 0xCD // the headroom is the sink's to write
	r.got[owner] = append(r.got[owner], string(buf[2:2+n]))
}

func (r *recorder) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}

func (r *recorder) count(owner string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[owner])
}

// Pollers read every socket opened through them and hand each datagram to a Sink with
// its owner; a closed socket is read no more; Stop ends the pollers (goleak checks).
func TestPollers(t *testing.T) {
	rec := &recorder{got: map[string][]string{}, headers: true}
	ps := NewPollers(PollerConfig{Slots: 8, PerRead: 4, Size: 32, Headroom: 2, Tailroom: 3},
		func() Sink[string] { return rec })
	defer ps.Stop()
	a, err := ps.Open(loopback, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ps.Open(loopback, "b")
	if err != nil {
		t.Fatal(err)
	}
	src := open(t, Options{})
	const n = 20 // several reads, more than the slots: the poller flushes between
	for i := 0; i < n; i++ {
		for _, c := range []*Conn{a, b} {
			if _, err := src.WriteTo([]byte(fmt.Sprint(i)), c.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitUntil(t, func() bool { return rec.count("a") == n && rec.count("b") == n })
	rec.mu.Lock()
	for _, owner := range []string{"a", "b"} {
		for i, p := range rec.got[owner] {
			if p != fmt.Sprint(i) {
				t.Errorf("%s: datagram %d is %q", owner, i, p)
			}
		}
	}
	if !rec.headers || rec.flushes == 0 {
		t.Errorf("buffers whole: %v; flushes: %d", rec.headers, rec.flushes)
	}
	rec.mu.Unlock()

	// A datagram longer than Size-Headroom-Tailroom arrives truncated.
	if _, err := src.WriteTo(make([]byte, 40), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return rec.count("a") == n+1 })
	rec.mu.Lock()
	if rec.headers {
		t.Error("a 40-byte datagram in a 27-byte room was not reported truncated")
	}
	rec.mu.Unlock()

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteTo([]byte("late"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return rec.count("b") == n+1 })
	_ = b.Close()
	ps.Stop()
	if _, err := ps.Open(loopback, "c"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Open after Stop: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Epoll reports readable Conns by tag, and nothing once its timeout passes.
func TestEpoll(t *testing.T) {
	e, err := NewEpoll()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a, b := open(t, Options{}), open(t, Options{})
	if err := e.Add(a, 7); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(b, -1); err != nil {
		t.Fatal(err)
	}
	tags := make([]int32, 4)
	start := time.Now()
	if n, err := e.Wait(tags, 20*time.Millisecond); n != 0 || err != nil {
		t.Fatalf("Wait on quiet sockets: %d, %v", n, err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("Wait returned before its timeout")
	}
	if _, err := a.WriteTo([]byte("x"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	n, err := e.Wait(tags, 5*time.Second)
	if n != 1 || err != nil || tags[0] != -1 {
		t.Fatalf("Wait: %d %v, tags %v", n, err, tags[:n])
	}
}

// The per-datagram calls allocate nothing, a refused send included.
func TestAllocationFree(t *testing.T) {
	a, b := open(t, Options{}), open(t, Options{Buffer: 4 << 20})
	payload := make([]byte, 160)
	in := NewBatch(8, 2048)
	out := NewBatch(8, 0)
	for i := 0; i < 8; i++ {
		out.SetBuf(i, payload)
		out.SetAddr(i, b.LocalAddr(), IPv4)
	}
	bcast := netip.MustParseAddrPort("127.255.255.255:9")
	u := goUDP(t, "udp4", "127.0.0.1:0")
	rc, _ := u.SyscallConn()
	r, err := NewReader(u, 8, 2048)
	if err != nil {
		t.Fatal(err)
	}
	uAddr := u.LocalAddr().(*net.UDPAddr).AddrPort()
	for name, f := range map[string]func(){
		"WriteTo":         func() { _, _ = a.WriteTo(payload, b.LocalAddr()) },
		"WriteTo refused": func() { _, _ = a.WriteTo(payload, bcast) },
		"Send+Recv":       func() { _, _ = a.Send(out, 0, 8); _, _ = b.Recv(in) },
		"SendVia":         func() { _, _ = out.SendVia(rc, 0, 8); _, _ = b.Recv(in) },
		"Reader.Next": func() {
			_, _ = a.WriteTo(payload, uAddr)
			_, _, _ = r.Next()
		},
	} {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}

func BenchmarkWriteTo(b *testing.B) {
	a, sink := open(b, Options{}), open(b, Options{Buffer: 4 << 20})
	payload := make([]byte, 160)
	in := NewBatch(64, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for i := 0; i < b.N; i++ {
		_, _ = a.WriteTo(payload, sink.LocalAddr())
		if i%64 == 63 {
			_, _ = sink.Recv(in)
		}
	}
}
