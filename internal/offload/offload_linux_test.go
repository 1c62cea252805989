//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayproject/relay/internal/skipnote"
)

func TestMain(m *testing.M) { skipnote.Main(m, "internal/offload") }

// bench is a relay's sockets without a relay: a listener and a relay socket that
// receive whatever the program leaves to userspace, a client and a peer.
type bench struct {
	listener, relay, client, peer *net.UDPConn
	d                             *Datapath
	ch                            Channel
}

func udp(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ap(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// openOrSkip opens the data path, or skips (fails in CI) where the kernel or the
// privileges do not allow it.
func openOrSkip(t *testing.T, cfg Config) *Datapath {
	t.Helper()
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the kernel data path needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)", "sudo go test ./internal/offload")
	}
	d, err := Open(cfg)
	if err != nil {
		skipnote.Skip(t, "the kernel data path cannot run here: "+err.Error(), "Linux 6.6 or later with BTF, as root")
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func newBench(t *testing.T) *bench {
	b := &bench{listener: udp(t), relay: udp(t), client: udp(t), peer: udp(t)}
	rp := ap(b.relay).Port()
	b.d = openOrSkip(t, Config{
		Listeners: []netip.AddrPort{ap(b.listener)}, RelayIP: netip.MustParseAddr("127.0.0.1"),
		RelayPorts: [2]uint16{rp, rp}, Channels: 16, Permissions: 16, Buckets: 16,
	})
	b.ch = Channel{Alloc: 7, Client: ap(b.client), Local: ap(b.listener), Relay: ap(b.relay), Peer: ap(b.peer), Number: 0x4001}
	return b
}

func channelData(num uint16, p []byte) []byte {
	b := make([]byte, 4, 4+len(p))
	binary.BigEndian.PutUint16(b[0:2], num)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(p)))
	return append(b, p...)
}

// read returns the next datagram on c within d, or nil.
func read(t *testing.T, c *net.UDPConn, d time.Duration) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, netip.AddrPort{}
		}
		t.Fatal(err)
	}
	return buf[:n], from
}

// TestBothWays: ChannelData from the client reaches the peer without its header, from
// the relay address; the peer's answer reaches the client as ChannelData from the
// listener; the relay's own sockets see neither; counters agree.
func TestBothWays(t *testing.T) {
	b := newBench(t)
	if err := b.d.SetPermission(b.ch.Alloc, b.ch.Peer.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.d.AddChannel(b.ch); err != nil {
		t.Fatal(err)
	}
	var sent int
	for i := 0; i < 10; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, 100+i) // odd lengths too: the checksum pads
		sent += len(msg)
		if _, err := b.client.WriteToUDPAddrPort(channelData(b.ch.Number, msg), b.ch.Local); err != nil {
			t.Fatal(err)
		}
		got, from := read(t, b.peer, time.Second)
		if !bytes.Equal(got, msg) || from != b.ch.Relay {
			t.Fatalf("peer got %d bytes from %v, want %d from %v", len(got), from, len(msg), b.ch.Relay)
		}
		if _, err := b.peer.WriteToUDPAddrPort(msg, b.ch.Relay); err != nil {
			t.Fatal(err)
		}
		got, from = read(t, b.client, time.Second)
		if !bytes.Equal(got, channelData(b.ch.Number, msg)) || from != b.ch.Local {
			t.Fatalf("client got %x from %v", got, from)
		}
	}
	if got, _ := read(t, b.listener, 50*time.Millisecond); got != nil {
		t.Errorf("the listener socket got %x", got)
	}
	if got, _ := read(t, b.relay, 50*time.Millisecond); got != nil {
		t.Errorf("the relay socket got %x", got)
	}
	want := Counts{ToPeerBytes: uint64(sent), ToPeerPackets: 10, ToClientBytes: uint64(sent), ToClientPackets: 10}
	if got := b.d.ChannelCounts(b.ch); got != want {
		t.Errorf("channel counts %+v, want %+v", got, want)
	}
	st, err := b.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counts != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	got, err := b.d.RemoveChannel(b.ch)
	if err != nil || got != want {
		t.Errorf("RemoveChannel = %+v, %v; want %+v", got, err, want)
	}
	// Gone: the next datagram goes to the listener socket, untouched.
	cd := channelData(b.ch.Number, []byte("after"))
	if _, err := b.client.WriteToUDPAddrPort(cd, b.ch.Local); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, b.listener, time.Second); !bytes.Equal(got, cd) {
		t.Errorf("after RemoveChannel the listener got %x, want %x", got, cd)
	}
}

// TestPermissionExpired: a channel whose permission is gone drops in the kernel, both
// ways, and says so in the counters.
func TestPermissionExpired(t *testing.T) {
	b := newBench(t)
	if err := b.d.AddChannel(b.ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.WriteToUDPAddrPort(channelData(b.ch.Number, []byte("x")), b.ch.Local); err != nil {
		t.Fatal(err)
	}
	if _, err := b.peer.WriteToUDPAddrPort([]byte("y"), b.ch.Relay); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.UDPConn{b.peer, b.client, b.listener, b.relay} {
		if got, _ := read(t, c, 100*time.Millisecond); got != nil {
			t.Errorf("%v got %x", ap(c), got)
		}
	}
	st, _ := b.d.Stats()
	if st.DroppedNoPermission != 2 || st.ToPeerPackets+st.ToClientPackets != 0 {
		t.Errorf("stats %+v, want 2 dropped for no permission and nothing relayed", st)
	}
}

// TestBucket: a cap of 80 kbit/s (10 kB/s, a second of burst) passes about 10 kB of a
// fast 40 kB burst and drops the rest in the kernel; userspace takes from the same
// bucket.
func TestBucket(t *testing.T) {
	b := newBench(t)
	idx, tat, ok := b.d.NewBucket(80_000)
	if !ok {
		t.Fatal("no bucket")
	}
	b.ch.Up = idx
	if err := b.d.SetPermission(b.ch.Alloc, b.ch.Peer.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.d.AddChannel(b.ch); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1000)
	for i := 0; i < 40; i++ {
		if _, err := b.client.WriteToUDPAddrPort(channelData(b.ch.Number, msg), b.ch.Local); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for {
		p, _ := read(t, b.peer, 100*time.Millisecond)
		if p == nil {
			break
		}
		got++
	}
	st, _ := b.d.Stats()
	if got < 9 || got > 11 || int(st.DroppedBandwidth) != 40-got {
		t.Errorf("%d of 40 passed a 10 kB/s cap, %d dropped; want about 10 passed and the rest dropped", got, st.DroppedBandwidth)
	}
	if tat.Load() == 0 {
		t.Error("the bucket's tat, as userspace sees it, did not move")
	}
}

// TestDetach: Close leaves nothing of ours attached to lo.
func TestDetach(t *testing.T) {
	b := newBench(t)
	if on, err := b.d.Attached(); err != nil || !on {
		t.Fatalf("the program is not attached to lo: %v", err)
	}
	if err := b.d.Close(); err != nil {
		t.Fatal(err)
	}
	if on, err := b.d.Attached(); err != nil || on {
		t.Fatalf("the program is still attached to lo after Close (%v)", err)
	}
}

// TestChecksum: datagrams that carry a real UDP checksum (sent with a raw socket, so
// the stack verifies it on delivery: CHECKSUM_NONE) still arrive after the rewrite, both
// ways, for even and odd lengths: the program's incremental checksum is right. A wrong
// one would be dropped by the stack and counted in Udp InCsumErrors.
func TestChecksum(t *testing.T) {
	b := newBench(t)
	if err := b.d.SetPermission(b.ch.Alloc, b.ch.Peer.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.d.AddChannel(b.ch); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	raw := func(from, to netip.AddrPort, payload []byte) {
		t.Helper()
		pkt := rawUDP(from, to, payload)
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: to.Addr().As4()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 2, 99, 100, 1001} {
		msg := bytes.Repeat([]byte{0xa5, 0x3c, 0xff}, n)[:n]
		raw(b.ch.Client, b.ch.Local, channelData(b.ch.Number, msg))
		if got, _ := read(t, b.peer, time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes to the peer: got %d bytes", n, len(got))
		}
		// Padded to a multiple of 4, with padding that is not zeros: it leaves the
		// datagram and the checksum.
		padded := channelData(b.ch.Number, msg)
		for len(padded)%4 != 0 {
			padded = append(padded, 0xee)
		}
		raw(b.ch.Client, b.ch.Local, padded)
		if got, _ := read(t, b.peer, time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes padded to the peer: got %d bytes", n, len(got))
		}
		raw(b.ch.Peer, b.ch.Relay, msg)
		if got, _ := read(t, b.client, time.Second); !bytes.Equal(got, channelData(b.ch.Number, msg)) {
			t.Fatalf("%d bytes to the client: got %d bytes", n, len(got))
		}
	}
	if st, _ := b.d.Stats(); st.ToPeerPackets != 10 || st.ToClientPackets != 5 {
		t.Errorf("stats %+v: the raw datagrams did not all take the kernel path", st)
	}
}

// rawUDP is an IPv4 header (the kernel fills in its checksum) and a UDP datagram with
// its checksum.
func rawUDP(from, to netip.AddrPort, payload []byte) []byte {
	ulen := 8 + len(payload)
	p := make([]byte, 20+ulen)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	s, d := from.Addr().As4(), to.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:2], from.Port())
	binary.BigEndian.PutUint16(u[2:4], to.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(ulen))
	copy(u[8:], payload)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	sum += 17 + uint32(ulen)
	add(u)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	return p
}
