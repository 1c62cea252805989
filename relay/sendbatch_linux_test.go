//go:build linux

package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/rawudp"
)

// Two listener sockets served by one poller's sendBatch: datagrams for the second must
// leave in the order they were added.
func TestSendBatchKeepsOrder(t *testing.T) {
	s := startServer(t, nil)
	listener := func() *packetConn {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = u.Close() })
		rc, _ := u.SyscallConn()
		return &packetConn{UDPConn: u, rc: rc, family: rawudp.FamilyOf(u), s: s.Server, ctr: s.counters,
			gate: newGate(s.Server, "udp", addrPortOf(u.LocalAddr()), false)}
	}
	a, b := listener(), listener()
	client := func() *net.UDPConn {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = u.Close() })
		return u
	}
	ca, cb := client(), client()
	toA, toB := netip.MustParseAddrPort(ca.LocalAddr().String()), netip.MustParseAddrPort(cb.LocalAddr().String())

	var q sendBatch
	q.add(a, []byte("A1"), toA, 2)
	q.add(b, []byte("B1"), toB, 2)
	q.add(b, []byte("B2"), toB, 2)
	q.add(a, []byte("A2"), toA, 2)
	q.flush()

	read := func(u *net.UDPConn) string {
		buf := make([]byte, 64)
		_ = u.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := u.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	gotA := read(ca) + "," + read(ca)
	gotB := read(cb) + "," + read(cb)
	t.Logf("client A got %s; client B got %s", gotA, gotB)
	if gotA != "A1,A2" || gotB != "B1,B2" {
		t.Fatalf("reordered: A %s, B %s", gotA, gotB)
	}
}
