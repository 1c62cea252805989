package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
)

// channelSession is a raw client with an allocation, a permission and channel 0x4001
// bound to an echo peer.
type channelSession struct {
	*session
	s    *testServer
	peer netip.AddrPort
}

func bindChannel(t testing.TB, s *testServer, transport string) *channelSession {
	t.Helper()
	return bindChannelTo(t, s, transport, netip.MustParseAddrPort(testpeer.Echo(t).String()))
}

func bindChannelTo(t testing.TB, s *testServer, transport string, peer netip.AddrPort) *channelSession {
	t.Helper()
	user, pass := s.creds(t, "fast")
	c := dialRaw(t, transport, s.addr(transport), nil)
	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	if r := sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4001), xorPeer{peer}); errorCode(r) != 0 {
		t.Fatalf("ChannelBind: %d", errorCode(r))
	}
	return &channelSession{session: sess, s: s, peer: peer}
}

func channelData(ch uint16, payload []byte) []byte {
	b := make([]byte, 4, 4+len(payload)+3)
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(payload)))
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0) // harmless on UDP, required on TCP
	}
	return b
}

// echo sends payload on the channel and returns what comes back, or nil.
func (cs *channelSession) echo(t testing.TB, payload []byte) []byte {
	t.Helper()
	if _, err := cs.conn.Write(channelData(0x4001, payload)); err != nil {
		t.Fatal(err)
	}
	_ = cs.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 2048)
	var n int
	var err error
	if cs.stream {
		n, err = cs.conn.Read(buf) // one small frame arrives in one read on loopback
	} else {
		n, err = cs.conn.Read(buf)
	}
	if err != nil {
		return nil
	}
	if n < 4 || binary.BigEndian.Uint16(buf[0:2]) != 0x4001 {
		t.Fatalf("not ChannelData on our channel: % x", buf[:min(n, 8)])
	}
	l := int(binary.BigEndian.Uint16(buf[2:4]))
	return buf[4 : 4+l]
}

// TestFastPathEcho: ChannelData both ways over UDP and TCP, padded on TCP, counted.
func TestFastPathEcho(t *testing.T) {
	s := startServer(t, allowLoopback)
	for _, transport := range []string{"udp", "tcp"} {
		cs := bindChannel(t, s, transport)
		for _, payload := range [][]byte{[]byte("a"), []byte("five!"), make([]byte, 1200)} {
			if got := cs.echo(t, payload); string(got) != string(payload) {
				t.Fatalf("%s echo of %d bytes: got %d bytes", transport, len(payload), len(got))
			}
		}
	}
	want := float64(2 * (1 + 5 + 1200))
	for _, d := range []string{"client_to_peer", "peer_to_client"} {
		// Counted right after the send: poll rather than race the last packet.
		waitFor(t, "relay_turn_relayed_bytes_total{direction="+d+"}", func() bool {
			return testutil.ToFloat64(s.metrics.RelayedBytes.WithLabelValues(d)) == want
		})
	}
}

// TestFastPathBurst: bursts longer than one recvmmsg batch from a peer all reach the
// client, in order: the poller comes back for what one read left behind.
func TestFastPathBurst(t *testing.T) {
	s := startServer(t, allowLoopback)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs := bindChannelTo(t, s, "udp", netip.MustParseAddrPort(peer.LocalAddr().String()))
	a := s.allocs.lookup(tupleKey{client: addrPortOf(cs.conn.LocalAddr()), local: addrPortOf(s.Addrs("udp")[0])})
	if a == nil {
		t.Fatal("no allocation")
	}
	to := net.UDPAddrFromAddrPort(a.relayAddr)
	buf := make([]byte, 2048)
	for burst := 0; burst < 4; burst++ {
		const n = 43 // more than five of the poller's recvmmsg batches
		for i := 0; i < n; i++ {
			if _, err := peer.WriteToUDP([]byte{byte(burst), byte(i)}, to); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < n; i++ {
			_ = cs.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			m, err := cs.conn.Read(buf)
			if err != nil {
				t.Fatalf("burst %d: %d of %d datagrams arrived: %v", burst, i, n, err)
			}
			if m < 6 || binary.BigEndian.Uint16(buf[0:2]) != 0x4001 || buf[4] != byte(burst) || buf[5] != byte(i) {
				t.Fatalf("burst %d datagram %d: % x", burst, i, buf[:m])
			}
		}
	}
}

// TestFastPathPermissionExpiry: when pion expires a permission (its event is the signal),
// ChannelData to and from that peer is dropped and counted, though the channel remains.
func TestFastPathPermissionExpiry(t *testing.T) {
	s := startServer(t, allowLoopback)
	cs := bindChannel(t, s, "udp")
	if got := cs.echo(t, []byte("before")); string(got) != "before" {
		t.Fatalf("echo before expiry: %q", got)
	}
	// What pion calls when the permission's 5-minute timer fires.
	client := cs.conn.LocalAddr()
	server := s.Addrs("udp")[0]
	s.allocs.eventHandler(nil).OnPermissionDeleted(client, server, "UDP", "", "", nil, net.IP(cs.peer.Addr().AsSlice()))
	before := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("no_permission"))
	if got := cs.echo(t, []byte("after")); got != nil {
		t.Fatalf("relayed %q after the permission expired", got)
	}
	if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("no_permission")); got != before+1 {
		t.Errorf("relay_turn_dropped_total{reason=no_permission} %v -> %v, want +1", before, got)
	}
	// The peer's own datagrams to the relayed address are dropped too.
	relayed := s.allocs.lookup(tupleKey{client: addrPortOf(client), local: addrPortOf(server)}).relayAddr
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteToUDPAddrPort([]byte("unsolicited"), relayed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unsolicited datagram to be dropped", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("no_permission")) == before+2
	})
}

// TestFastPathMalformed: ChannelData with a length field that exceeds the datagram, or
// for an unbound channel, or from a client without an allocation, is dropped and counted.
func TestFastPathMalformed(t *testing.T) {
	s := startServer(t, allowLoopback)
	cs := bindChannel(t, s, "udp")
	lying := channelData(0x4001, []byte("abcd"))
	binary.BigEndian.PutUint16(lying[2:4], 1000)
	stranger := dialRaw(t, "udp", s.addr("udp"), nil)
	for _, tc := range []struct {
		conn   net.Conn
		b      []byte
		reason string
	}{
		{cs.conn, lying, "malformed"},
		{cs.conn, channelData(0x4444, []byte("x")), "no_channel"},
		{stranger.conn, channelData(0x4001, []byte("x")), "no_allocation"},
	} {
		before := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(tc.reason))
		if _, err := tc.conn.Write(tc.b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tc.reason+" to be counted", func() bool {
			return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(tc.reason)) == before+1
		})
	}
	if got := cs.echo(t, []byte("still fine")); string(got) != "still fine" {
		t.Fatalf("echo after bad input: %q", got)
	}
}

// fastPathFixture is an allocation with a channel, driven without its sockets' read
// loops: the client→peer half through the gate, the peer→client half through fromPeer.
func fastPathFixture(b testing.TB) (g *gate, cd []byte, from netip.AddrPort, rc *relayConn, peer netip.AddrPort) {
	g, cd, from, rc, peer, a := fastPathAllocation(b)
	a.out = &nopReplier{} // peer→client sends go nowhere: measure relay, not the socket
	return g, cd, from, rc, peer
}

// fastPathAllocation is fastPathFixture with the allocation's real client socket.
func fastPathAllocation(b testing.TB) (g *gate, cd []byte, from netip.AddrPort, rc *relayConn, peer netip.AddrPort, a *allocation) {
	s := startServer(b, func(c *config.Config) {
		allowLoopback(c)
		c.Limits.MaxBPS = 0 // measure the path, not the cap dropping the flood
	})
	// A peer that never answers: the relay socket's own read loop stays idle, so the
	// benchmark alone drives fromPeer.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	cs := bindChannelTo(b, s, "udp", netip.MustParseAddrPort(sink.LocalAddr().String()))
	from = addrPortOf(cs.conn.LocalAddr())
	a = s.allocs.lookup(tupleKey{client: from, local: addrPortOf(s.Addrs("udp")[0])})
	g = newGate(s.Server, "udp", addrPortOf(s.Addrs("udp")[0]), false)
	return g, channelData(0x4001, make([]byte, 160)), from, a.conn, cs.peer, a
}

func BenchmarkChannelDataClientToPeer(b *testing.B) {
	g, cd, from, _, _ := fastPathFixture(b)
	rep := &nopReplier{}
	b.ReportAllocs()
	b.SetBytes(160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g.inspect(cd, from, rep) // includes the sendto(2) to the peer
	}
}

func BenchmarkChannelDataPeerToClient(b *testing.B) {
	_, _, _, rc, peer := fastPathFixture(b)
	buf := make([]byte, relayBufSize)
	b.ReportAllocs()
	b.SetBytes(160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !rc.fromPeer(buf, 160, peer, nil) {
			b.Fatal("not relayed on the fast path")
		}
	}
}

// BenchmarkChannelDataPeerToClientBatched is the poller's way: 64 datagrams framed and
// then sent to the client with sendmmsg(2), the system call included.
func BenchmarkChannelDataPeerToClientBatched(b *testing.B) {
	_, _, _, rc, peer, _ := fastPathAllocation(b)
	var bufs [64][relayBufSize]byte
	out := &sendBatch{}
	b.ReportAllocs()
	b.SetBytes(160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !rc.fromPeer(bufs[i%64][:], 160, peer, out) {
			b.Fatal("not relayed on the fast path")
		}
		if i%64 == 63 {
			out.flush()
		}
	}
	out.flush()
}

func TestFastPathAllocationFree(t *testing.T) {
	t.Run("batched", func(t *testing.T) {
		_, _, _, rc, peer, _ := fastPathAllocation(t)
		out := &sendBatch{}
		buf := make([]byte, relayBufSize)
		if n := testing.AllocsPerRun(500, func() { rc.fromPeer(buf, 160, peer, out); out.flush() }); n != 0 {
			t.Errorf("peer→client ChannelData through sendmmsg allocates %v times per packet", n)
		}
	})
	g, cd, from, rc, peer := fastPathFixture(t)
	rep := &nopReplier{}
	buf := make([]byte, relayBufSize)
	if n := testing.AllocsPerRun(500, func() { g.inspect(cd, from, rep) }); n != 0 {
		t.Errorf("client→peer ChannelData allocates %v times per packet", n)
	}
	if n := testing.AllocsPerRun(500, func() { rc.fromPeer(buf, 160, peer, nil) }); n != 0 {
		t.Errorf("peer→client ChannelData allocates %v times per packet", n)
	}
}

// Data from a peer that pion must see (no channel) waits in a bounded queue for pion's
// read loop; past the bound it is dropped and counted, and Close wakes the reader.
func TestRelayQueueForPion(t *testing.T) {
	s := startServer(t, nil)
	c := &relayConn{r: s.relay, ctr: s.counters, wake: make(chan struct{}, 1)} // no allocation yet: everything goes to pion
	from := netip.MustParseAddrPort("192.0.2.7:5000")
	before := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBacklog))
	buf := make([]byte, relayBufSize)
	for i := 0; i <= maxQueued; i++ {
		buf[channelDataHdrSize] = byte(i)
		c.received(buf, 1, from, nil)
	}
	if got := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBacklog)) - before; got != 1 {
		t.Fatalf("dropped{reason=backlog} rose by %v, want 1", got)
	}
	p := make([]byte, 64)
	for i := 0; i < maxQueued; i++ {
		n, addr, err := c.ReadFrom(p)
		if err != nil || n != 1 || p[0] != byte(i) || addr.String() != from.String() {
			t.Fatalf("datagram %d: %d bytes %v from %v, %v", i, n, p[:n], addr, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(p)
		done <- err
	}()
	_ = c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still blocked after the socket closed")
	}
}

// TestSendErrorCounted: a datagram for a peer that the kernel refuses to send to is
// dropped and counted as relay_turn_dropped_total{reason="send_error"}, whether the fast
// path (ChannelData) or pion (a Send indication) sent it, and nothing counts as relayed.
// The peer is the loopback network's broadcast address, which the test's peer policy
// allows: relay sockets never set SO_BROADCAST, so sendto(2) fails with EACCES, on any
// Linux machine, every time.
func TestSendErrorCounted(t *testing.T) {
	s := startServer(t, allowLoopback)
	series := func() string {
		mfs, err := s.metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "relay_turn_dropped_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" && l.GetValue() == "send_error" {
						return fmt.Sprint(m.GetCounter().GetValue())
					}
				}
			}
		}
		return "absent"
	}
	if got := series(); got != "0" {
		t.Fatalf("relay_turn_dropped_total{reason=\"send_error\"} at start: %s, want 0 (pre-created)", got)
	}
	broadcast := netip.MustParseAddrPort("127.255.255.255:9")
	cs := bindChannelTo(t, s, "udp", broadcast)
	sendErrors := func() float64 { return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues("send_error")) }
	relayed := testutil.ToFloat64(s.metrics.PacketsClientToPeer)

	if _, err := cs.conn.Write(channelData(0x4001, []byte("to everyone"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused ChannelData to be counted", func() bool { return sendErrors() == 1 })

	send := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{broadcast},
		stun.RawAttribute{Type: stun.AttrData, Value: []byte("to everyone, through pion")})
	if _, err := cs.conn.Write(send.Raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused Send indication to be counted", func() bool { return sendErrors() == 2 })

	if got := testutil.ToFloat64(s.metrics.PacketsClientToPeer); got != relayed {
		t.Errorf("relay_turn_relayed_packets_total{direction=client_to_peer} %v -> %v: refused sends counted as relayed", relayed, got)
	}
	if got := series(); got != "2" {
		t.Errorf("exported series: %s, want 2", got)
	}
}
