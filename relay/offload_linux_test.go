//go:build linux

package relay

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/offload"
	"github.com/relayproject/relay/internal/skipnote"
)

// The kernel data path, as the server drives it: these tests need the program loaded
// and attached (root, Linux 6.6+) and skip (fail in CI) without.

// requireOffload skips t unless s relays in the kernel.
func requireOffload(t *testing.T, s *testServer) {
	t.Helper()
	if s.kernel != nil {
		return
	}
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the kernel data path needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)", "sudo go test ./relay")
	}
	skipnote.Skip(t, "the kernel data path cannot run here: "+s.offloadOff, "Linux 6.6 or later with BTF, as root")
}

// peerSocket is a peer that records what reaches it.
func peerSocket(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// readUDP is the next datagram on c within d, or nil.
func readUDP(c *net.UDPConn, d time.Duration) []byte {
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func (cs *channelSession) allocation(t *testing.T) *allocation {
	t.Helper()
	a := cs.s.allocs.lookup(tupleKey{client: addrPortOf(cs.conn.LocalAddr()), local: addrPortOf(cs.s.Addrs("udp")[0])})
	if a == nil {
		t.Fatal("no allocation")
	}
	return a
}

func kernelStats(t *testing.T, s *testServer) offload.Stats {
	t.Helper()
	st, err := s.kernel.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestOffloadCounts: ChannelData both ways goes through the kernel (relay's sockets see
// none of it), and what was sent is what relay_turn_relayed_*,
// relay_turn_offloaded_packets_total and the allocation log line say, exactly.
func TestOffloadCounts(t *testing.T) {
	var buf syncBuffer
	s := startServer(t, allowLoopback)
	requireOffload(t, s)
	s.allocs.log = slog.New(slog.NewJSONHandler(&buf, nil))
	if got := testutil.ToFloat64(s.metrics.OffloadActive); got != 1 {
		t.Fatalf("relay_turn_offload_active = %v, want 1", got)
	}
	cs := bindChannel(t, s, "udp")
	a := cs.allocation(t)
	sizes := []int{1, 5, 160, 999, 1200}
	total := 0
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(n + i)
		}
		if got := cs.echo(t, p); string(got) != string(p) {
			t.Fatalf("echo of %d bytes: got %d bytes", n, len(got))
		}
		total += n
	}
	if c := a.conn.counts(); c != (relayCounts{}) {
		t.Errorf("relay's own path relayed %+v: the kernel should have carried everything", c)
	}
	k := len(sizes)
	for _, d := range []string{"client_to_peer", "peer_to_client"} {
		waitFor(t, "the counters of "+d, func() bool {
			return testutil.ToFloat64(s.metrics.RelayedPackets.WithLabelValues(d)) == float64(k) &&
				testutil.ToFloat64(s.metrics.RelayedBytes.WithLabelValues(d)) == float64(total) &&
				testutil.ToFloat64(s.metrics.OffloadedPackets.WithLabelValues(d)) == float64(k)
		})
	}
	// Scraped, the figures are current without waiting for a sync.
	if _, err := s.metrics.Gather(); err != nil {
		t.Fatal(err)
	}

	if r := cs.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(0)); errorCode(r) != 0 {
		t.Fatalf("release: %d", errorCode(r))
	}
	waitFor(t, "the allocation log line", func() bool { return strings.Contains(buf.String(), `"allocation ended"`) })
	var rec map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &rec); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]float64{"bytes_client_to_peer": float64(total), "packets_client_to_peer": float64(k),
		"bytes_peer_to_client": float64(total), "packets_peer_to_client": float64(k)} {
		if rec[key] != want {
			t.Errorf("allocation log %s = %v, want %v", key, rec[key], want)
		}
	}
}

// TestOffloadPermissionExpired: when pion expires a permission, ChannelData to that
// peer is dropped in the kernel (its counter, not relay's path), and so is the peer's.
func TestOffloadPermissionExpired(t *testing.T) {
	s := startServer(t, allowLoopback)
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	a := cs.allocation(t)
	if _, err := cs.conn.Write(channelData(0x4001, []byte("before"))); err != nil {
		t.Fatal(err)
	}
	if got := readUDP(peer, time.Second); string(got) != "before" {
		t.Fatalf("before expiry the peer got %q", got)
	}
	client, server := cs.conn.LocalAddr(), s.Addrs("udp")[0]
	s.allocs.eventHandler(nil).OnPermissionDeleted(client, server, "UDP", "", "", nil, net.IP(peerAddr.Addr().AsSlice()))

	before := kernelStats(t, s)
	if _, err := cs.conn.Write(channelData(0x4001, []byte("after"))); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("unsolicited"), a.relayAddr); err != nil {
		t.Fatal(err)
	}
	if got := readUDP(peer, 200*time.Millisecond); got != nil {
		t.Fatalf("the peer got %q after its permission expired", got)
	}
	after := kernelStats(t, s)
	if after.DroppedNoPermission != before.DroppedNoPermission+2 {
		t.Errorf("the kernel dropped %d datagrams for no permission, want 2", after.DroppedNoPermission-before.DroppedNoPermission)
	}
	waitFor(t, "relay_turn_dropped_total{reason=no_permission} to say so", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropNoPermission)) == 2
	})
}

// TestOffloadChannelExpired: a channel pion deletes stops relaying in the kernel: its
// ChannelData reaches relay, which drops it (no_channel), and the peer gets nothing.
func TestOffloadChannelExpired(t *testing.T) {
	s := startServer(t, allowLoopback)
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	if _, err := cs.conn.Write(channelData(0x4001, []byte("bound"))); err != nil {
		t.Fatal(err)
	}
	if got := readUDP(peer, time.Second); string(got) != "bound" {
		t.Fatalf("the peer got %q", got)
	}
	client, server := cs.conn.LocalAddr(), s.Addrs("udp")[0]
	s.allocs.eventHandler(nil).OnChannelDeleted(client, server, "UDP", "", "", nil, net.UDPAddrFromAddrPort(peerAddr), 0x4001)

	before := kernelStats(t, s)
	if _, err := cs.conn.Write(channelData(0x4001, []byte("expired"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "relay to drop it as no_channel", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropNoChannel)) == 1
	})
	if got := readUDP(peer, 100*time.Millisecond); got != nil {
		t.Fatalf("the peer got %q after the channel expired", got)
	}
	if after := kernelStats(t, s); after.ToPeerPackets != before.ToPeerPackets {
		t.Errorf("the kernel relayed %d datagrams on an expired channel", after.ToPeerPackets-before.ToPeerPackets)
	}
}

// TestOffloadDeniedPeer: a denied peer never relays. ChannelBind to it is refused and
// leaves nothing in the maps; a reload that denies a bound peer takes its channel out of
// the kernel, and relay's path drops its data by the policy; allowed again, it returns.
func TestOffloadDeniedPeer(t *testing.T) {
	s := startServer(t, allowLoopback)
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	a := cs.allocation(t)

	if r := cs.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4002), xorPeer{netip.MustParseAddrPort("10.1.2.3:5000")}); errorCode(r) != 403 {
		t.Fatalf("ChannelBind to a private address: %d, want 403", errorCode(r))
	}
	// Bound behind the gate's back (as a race with a reload could), the channel to a
	// denied peer still never enters the maps.
	a.mu.Lock()
	s.kernel.addChannel(a, 0x4003, netip.MustParseAddrPort("10.1.2.3:5000"))
	_, in := a.kchans[0x4003]
	a.mu.Unlock()
	if in {
		t.Fatal("a channel to a denied peer entered the kernel's maps")
	}

	reload := func(allow []string) {
		t.Helper()
		cfg := *s.cfg
		cfg.Peers.Allow = allow
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		au, err := auth.New(auth.Options{Secrets: cfg.Auth.Secrets, MaxTTL: cfg.Auth.MaxTTL})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reload(&cfg, au); err != nil {
			t.Fatal(err)
		}
	}
	reload(nil) // 127.0.0.0/8 denied again (loopback)
	a.mu.Lock()
	_, in = a.kchans[0x4001]
	a.mu.Unlock()
	if in {
		t.Fatal("after a reload that denies the peer its channel is still in the kernel's maps")
	}
	if _, err := cs.conn.Write(channelData(0x4001, []byte("denied"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "relay to refuse it by the policy", func() bool {
		return testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues(string(DenyLoopback))) >= 1
	})
	if got := readUDP(peer, 100*time.Millisecond); got != nil {
		t.Fatalf("a denied peer got %q", got)
	}

	reload([]string{"127.0.0.0/8"})
	before := kernelStats(t, s)
	if _, err := cs.conn.Write(channelData(0x4001, []byte("allowed again"))); err != nil {
		t.Fatal(err)
	}
	if got := readUDP(peer, time.Second); string(got) != "allowed again" {
		t.Fatalf("the peer got %q after the policy allowed it again", got)
	}
	if after := kernelStats(t, s); after.ToPeerPackets != before.ToPeerPackets+1 {
		t.Errorf("allowed again, the channel did not return to the kernel")
	}
}

// TestOffloadBandwidthCap: max_bps holds in the kernel: of a 30 kB burst under a 10 kB/s
// cap about 10 kB pass, the rest is dropped there and counted as bandwidth.
func TestOffloadBandwidthCap(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		allowLoopback(c)
		c.Limits.MaxBPS = 80_000
	})
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	payload := make([]byte, 1000)
	for i := 0; i < 30; i++ {
		if _, err := cs.conn.Write(channelData(0x4001, payload)); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for readUDP(peer, 200*time.Millisecond) != nil {
		got++
	}
	st := kernelStats(t, s)
	if got < 9 || got > 11 || st.ToPeerPackets != uint64(got) || st.DroppedBandwidth != uint64(30-got) {
		t.Errorf("%d of 30 passed, kernel: %d relayed, %d dropped; want about 10 relayed by the kernel and the rest dropped there", got, st.ToPeerPackets, st.DroppedBandwidth)
	}
	waitFor(t, "relay_turn_dropped_total{reason=bandwidth}", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBandwidth)) == float64(30-got)
	})
}

// TestOffloadDetach: the program is attached while the server runs, a reload leaves it
// attached and relaying, and Close (after a drain) detaches it.
func TestOffloadDetach(t *testing.T) {
	s := startServer(t, allowLoopback)
	requireOffload(t, s)
	attached := func() bool {
		t.Helper()
		on, err := s.kernel.d.Attached()
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	if !attached() {
		t.Fatal("the program is not attached")
	}
	if _, err := s.Reload(s.cfg, s.settings.Load().auth); err != nil {
		t.Fatal(err)
	}
	cs := bindChannel(t, s, "udp")
	if got := cs.echo(t, []byte("after reload")); string(got) != "after reload" || !attached() {
		t.Fatalf("after a reload: echo %q, attached %v", got, attached())
	}
	k := s.kernel
	s.Drain()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if on, err := k.d.Attached(); err != nil || on {
		t.Fatalf("the program is still attached after Close (%v)", err)
	}
	if got := testutil.ToFloat64(s.metrics.OffloadActive); got != 0 {
		t.Errorf("relay_turn_offload_active = %v after Close, want 0", got)
	}
}

// TestOffloadModes: "off" attaches nothing; "auto" where the kernel path cannot run
// starts without it and says why; "required" refuses to start.
func TestOffloadModes(t *testing.T) {
	if os.Geteuid() != 0 {
		skipnote.Skip(t, "the kernel data path needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)", "sudo go test ./relay")
	}
	off := startServer(t, func(c *config.Config) { c.TURN.Offload = config.OffloadOff })
	if off.kernel != nil || testutil.ToFloat64(off.metrics.OffloadActive) != 0 || off.offloadOff != `turn.offload = "off"` {
		t.Errorf(`offload = "off": kernel %v, active %v, reason %q`, off.kernel != nil, testutil.ToFloat64(off.metrics.OffloadActive), off.offloadOff)
	}
	var buf syncBuffer
	auto := startServerLogging(t, func(c *config.Config) { c.TURN.OffloadInterfaces = []string{"nosuch0"} }, slog.New(slog.NewTextHandler(&buf, nil)))
	if auto.kernel != nil || !strings.Contains(buf.String(), `msg="turn offload off" reason="interface \"nosuch0\" does not exist"`) {
		t.Errorf("auto without a usable interface: kernel %v, log:\n%s", auto.kernel != nil, buf.String())
	}
	cfg := config.Default()
	cfg.TURN.UDP, cfg.TURN.TCP = []string{"127.0.0.1:0"}, nil
	cfg.TURN.RelayIP = netip.MustParseAddr("127.0.0.1")
	cfg.TURN.RelayPorts = config.PortRange{Min: 61000, Max: 61999}
	cfg.TURN.Offload, cfg.TURN.OffloadInterfaces = config.OffloadRequired, []string{"nosuch0"}
	cfg.Metrics.Listen = ""
	au, _ := auth.New(auth.Options{Secrets: []string{testSecret}, MaxTTL: cfg.Auth.MaxTTL})
	srv, err := New(Options{Config: cfg, Auth: au, Metrics: auto.metrics, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil {
		_ = srv.Close()
		t.Fatal(`offload = "required" started without the kernel data path`)
	}
	if !strings.Contains(err.Error(), `turn.offload = "required"`) || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	if c, err := net.Dial("udp", cfg.TURN.UDP[0]); err == nil {
		c.Close() // nothing to check: port 0; the server's sockets are closed (goleak checks the loops)
	}
}

// TestOffloadFullMap: when the kernel's permission map is full, the allocation leaves
// the kernel altogether (the kernel would otherwise drop what relay allows) and relay's
// own path carries its channel.
func TestOffloadFullMap(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		allowLoopback(c)
		c.Limits.TotalAllocations, c.Limits.UserAllocations = 1, 1 // maps of 4 entries
		c.TURN.RelayPorts = config.PortRange{Min: 61000, Max: 61000}
	})
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	a := cs.allocation(t)
	before := kernelStats(t, s)
	if got := cs.echoVia(t, peer, "in the kernel"); got != "in the kernel" {
		t.Fatalf("echo: %q", got)
	}
	if st := kernelStats(t, s); st.ToPeerPackets != before.ToPeerPackets+1 {
		t.Fatal("the channel is not in the kernel to begin with")
	}
	for i := 2; i <= 5; i++ { // the fifth permission does not fit
		other := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}), 9)
		if r := cs.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{other}); errorCode(r) != 0 {
			t.Fatalf("CreatePermission %v: %d", other, errorCode(r))
		}
	}
	a.mu.Lock()
	kid, kchans := a.kid, len(a.kchans)
	a.mu.Unlock()
	if kid != 0 || kchans != 0 {
		t.Fatalf("after a full permission map: kernel id %d, %d channels in the kernel; want the allocation out", kid, kchans)
	}
	before = kernelStats(t, s)
	if got := cs.echoVia(t, peer, "in userspace"); got != "in userspace" {
		t.Fatalf("echo after leaving the kernel: %q", got)
	}
	if st := kernelStats(t, s); st.ToPeerPackets != before.ToPeerPackets {
		t.Error("the kernel still relays for an allocation it let go")
	}
}

// echoVia sends msg on the channel, has peer send it back, and returns what the client
// got.
func (cs *channelSession) echoVia(t *testing.T, peer *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := cs.conn.Write(channelData(0x4001, []byte(msg))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = peer.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil {
		return ""
	}
	if _, err := peer.WriteToUDPAddrPort(buf[:n], from); err != nil {
		t.Fatal(err)
	}
	_ = cs.conn.SetReadDeadline(time.Now().Add(time.Second))
	n, err = cs.conn.Read(buf)
	if err != nil || n < 4 {
		return ""
	}
	return string(buf[4 : 4+(int(buf[2])<<8|int(buf[3]))])
}

// TestOffloadBudget: the kernel's bytes count against the user's day (usage, the admin
// listing); a user whose budget appears while its allocation is in the kernel leaves
// the kernel at the next sweep and relay's path holds the budget from there; a user with
// a budget from the start never enters it.
func TestOffloadBudget(t *testing.T) {
	s, ctl, _ := controlled(t, nil)
	requireOffload(t, s)
	peer, peerAddr := peerSocket(t)
	cs := bindChannelTo(t, s, "udp", peerAddr)
	a := cs.allocation(t)
	if a.kid == 0 {
		t.Fatal("an allocation without a budget is not in the kernel")
	}
	before := kernelStats(t, s)
	for i := 0; i < 10; i++ {
		if got := cs.echoVia(t, peer, strings.Repeat("x", 100)); len(got) != 100 {
			t.Fatalf("echo %d: %d bytes", i, len(got))
		}
	}
	if st := kernelStats(t, s); st.ToPeerPackets-before.ToPeerPackets != 10 || st.ToClientPackets-before.ToClientPackets != 10 {
		t.Fatalf("the kernel relayed %d and %d of 10 each way", st.ToPeerPackets-before.ToPeerPackets, st.ToClientPackets-before.ToClientPackets)
	}
	list := s.Allocations("fast") // sweeps first
	if len(list) != 1 || list[0].BytesClientToPeer != 1000 || list[0].BytesPeerToClient != 1000 || list[0].PacketsClientToPeer != 10 {
		t.Fatalf("admin listing %+v, want 1000 bytes and 10 datagrams each way", list)
	}
	ctl.mu.Lock()
	u := ctl.usage["fast"]
	ctl.mu.Unlock()
	if u.Local() != 2000 {
		t.Fatalf("usage %d bytes, want the kernel's 2000", u.Local())
	}

	u.SetLimit(2500) // 500 bytes left today
	s.kernel.sweep()
	a.mu.Lock()
	kid := a.kid
	a.mu.Unlock()
	if kid != 0 {
		t.Fatal("with a budget the allocation is still in the kernel")
	}
	got := 0
	for i := 0; i < 4; i++ {
		if cs.echoVia(t, peer, strings.Repeat("y", 100)) != "" {
			got++
		}
	}
	// 500 bytes left: two round trips of 200, then the third's way out reaches the
	// budget and its way back is dropped, as is everything after.
	if got != 2 || u.Local() != 2500 {
		t.Errorf("over the budget: %d echoes came back, usage %d; want 2 and 2500", got, u.Local())
	}
	waitFor(t, "datagrams dropped by the budget", func() bool {
		return testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBudget)) > 0
	})

	ctl.mu.Lock()
	ctl.budget = 1 << 40
	ctl.mu.Unlock()
	user, pass := s.creds(t, "budgeted")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	if r := sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4001), xorPeer{peerAddr}); errorCode(r) != 0 {
		t.Fatalf("ChannelBind: %d", errorCode(r))
	}
	b := s.allocs.lookup(tupleKey{client: addrPortOf(c.conn.LocalAddr()), local: addrPortOf(s.Addrs("udp")[0])})
	if b == nil || b.kid != 0 {
		t.Error("an allocation whose user has a budget entered the kernel")
	}
}
