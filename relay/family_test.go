package relay

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/testpeer"
)

// familyAttr is REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY with a value.
type familyAttr struct {
	t stun.AttrType
	f byte
}

func (a familyAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, []byte{a.f, 0, 0, 0})
	return nil
}

func wantIPv6(t stun.AttrType) familyAttr { return familyAttr{t, familyIPv6} }

// ipv6Server is a relay whose listeners are on ::1 (and 127.0.0.1), with IPv6 relayed
// addresses on ::1 when relay6, and only ::1 (and 127.0.0.1) allowed past the deny list.
func ipv6Server(t *testing.T, relay6 bool) *testServer {
	t.Helper()
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = c.Close()
	}
	return startServer(t, func(c *config.Config) {
		c.TURN.UDP = []string{"[::1]:0", "127.0.0.1:0"}
		c.TURN.TCP = []string{"[::1]:0"}
		if relay6 {
			c.TURN.RelayIP6 = netip.MustParseAddr("::1")
		}
		c.Peers.Allow = []string{"::1", "127.0.0.1"}
	})
}

// xorAddr reads an XOR address attribute.
func xorAddr(t *testing.T, m *stun.Message, typ stun.AttrType) netip.AddrPort {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, typ); err != nil {
		t.Fatalf("no %v in %v", typ, m)
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

// TestIPv6Relay: over UDP and TCP on ::1, a Binding answers with the IPv6 reflexive
// address; an Allocate with REQUESTED-ADDRESS-FAMILY IPv6 gets an IPv6 relayed address
// in the relay port range, relays ChannelData and Send indications to an IPv6 echo peer
// and back; an IPv4 peer gets 443 (CreatePermission and ChannelBind). Without the
// attribute the same client gets an IPv4 relayed address, to which an IPv6 peer is 443.
func TestIPv6Relay(t *testing.T) {
	s := ipv6Server(t, true)
	echo6 := netip.MustParseAddrPort(testpeer.Echo6(t).String())
	echo4 := netip.MustParseAddrPort(testpeer.Echo(t).String())
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			c := dialRaw(t, transport, s.addr(transport), nil)
			b := c.roundTrip(mustBuild(t, stun.BindingRequest, stun.Fingerprint), 2*time.Second)
			if got := xorAddr(t, b, stun.AttrXORMappedAddress); got != addrPortOf(c.conn.LocalAddr()) {
				t.Fatalf("Binding over %s: XOR-MAPPED-ADDRESS %v, want %v", transport, got, c.conn.LocalAddr())
			}
			user, pass := s.creds(t, "v6-"+transport)
			sess, r := c.allocate(user, pass, requestedUDP(), wantIPv6(stun.AttrRequestedAddressFamily))
			if errorCode(r) != 0 {
				t.Fatalf("Allocate IPv6: %d", errorCode(r))
			}
			relayed := xorAddr(t, r, stun.AttrXORRelayedAddress)
			if relayed.Addr() != netip.MustParseAddr("::1") || !s.cfg.TURN.RelayPorts.Contains(relayed.Port()) {
				t.Fatalf("relayed address %v, want [::1] in the relay port range", relayed)
			}
			if got := xorAddr(t, r, stun.AttrXORMappedAddress); !got.Addr().Is6() {
				t.Fatalf("XOR-MAPPED-ADDRESS %v, want the IPv6 client", got)
			}
			for _, m := range []stun.Method{stun.MethodCreatePermission, stun.MethodChannelBind} {
				if r := sess.request(stun.NewType(m, stun.ClassRequest), channelNumber(0x4002), xorPeer{echo4}); errorCode(r) != 443 {
					t.Fatalf("%v for an IPv4 peer on an IPv6 allocation: %d, want 443", m, errorCode(r))
				}
			}
			if r := sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(0x4001), xorPeer{echo6}); errorCode(r) != 0 {
				t.Fatalf("ChannelBind to %v: %d", echo6, errorCode(r))
			}
			cs := &channelSession{session: sess, s: s, peer: echo6}
			for _, payload := range []string{"over IPv6", "and again"} {
				if got := cs.echo(t, []byte(payload)); string(got) != payload {
					t.Fatalf("echo through the IPv6 relay: %q", got)
				}
			}
			// A Send indication goes out of the same relay socket; the echo comes back
			// as ChannelData (the peer has a channel).
			send := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{echo6},
				stun.RawAttribute{Type: stun.AttrData, Value: []byte("indicated")}, stun.Fingerprint)
			if _, err := c.conn.Write(send.Raw); err != nil {
				t.Fatal(err)
			}
			_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 2048)
			n, err := c.conn.Read(buf)
			if err != nil || n < 4 || binary.BigEndian.Uint16(buf[0:2]) != 0x4001 || string(buf[4:4+binary.BigEndian.Uint16(buf[2:4])]) != "indicated" {
				t.Fatalf("echo of a Send indication: % x, %v", buf[:n], err)
			}

			// The default family from the same transport: IPv4.
			c4 := dialRaw(t, transport, s.addr(transport), nil)
			sess4, r := c4.allocate(user, pass)
			if errorCode(r) != 0 {
				t.Fatalf("Allocate: %d", errorCode(r))
			}
			if got := xorAddr(t, r, stun.AttrXORRelayedAddress); !got.Addr().Is4() {
				t.Fatalf("relayed address %v without REQUESTED-ADDRESS-FAMILY, want IPv4", got)
			}
			if r := sess4.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{echo6}); errorCode(r) != 443 {
				t.Fatalf("CreatePermission for an IPv6 peer on an IPv4 allocation: %d, want 443", errorCode(r))
			}
		})
	}
}

// TestAddressFamilyErrors: RFC 8656 §7.2's answers. Without relay_ip6, IPv6 gets 440;
// an unknown family 440; REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together, an
// ADDITIONAL-ADDRESS-FAMILY of IPv4, or one with EVEN-PORT, 400.
// ADDITIONAL-ADDRESS-FAMILY IPv6 gets the IPv4 half with ADDRESS-ERROR-CODE 440 for the
// IPv6 one, in a success answer that is still signed.
func TestAddressFamilyErrors(t *testing.T) {
	for _, relay6 := range []bool{false, true} {
		s := ipv6Server(t, relay6)
		user, pass := s.creds(t, "fam")
		for _, c := range []struct {
			name  string
			attrs []stun.Setter
			want  int
		}{
			{"ipv6 without relay_ip6", []stun.Setter{wantIPv6(stun.AttrRequestedAddressFamily)}, map[bool]int{false: 440, true: 0}[relay6]},
			{"unknown family", []stun.Setter{familyAttr{stun.AttrRequestedAddressFamily, 3}}, 440},
			{"requested and additional", []stun.Setter{familyAttr{stun.AttrRequestedAddressFamily, familyIPv4}, wantIPv6(attrAdditionalAddressFamily)}, 400},
			{"additional ipv4", []stun.Setter{familyAttr{attrAdditionalAddressFamily, familyIPv4}}, 400},
			{"additional with even-port", []stun.Setter{wantIPv6(attrAdditionalAddressFamily), stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0}}}, 400},
			{"requested ipv4", []stun.Setter{familyAttr{stun.AttrRequestedAddressFamily, familyIPv4}}, 0},
		} {
			t.Run(fmt.Sprintf("relay6=%v/%s", relay6, c.name), func(t *testing.T) {
				cl := dialRaw(t, "udp", s.addr("udp"), nil)
				_, r := cl.allocate(user, pass, append([]stun.Setter{requestedUDP()}, c.attrs...)...)
				if errorCode(r) != c.want {
					t.Fatalf("got %d, want %d", errorCode(r), c.want)
				}
				if c.want != 0 && r.Contains(stun.AttrMessageIntegrity) {
					if err := stun.MessageIntegrity(auth.LongTermKey(user, testRealm, pass)).Check(r); err != nil {
						t.Fatalf("error answer's MESSAGE-INTEGRITY: %v", err)
					}
				}
			})
		}
		t.Run(fmt.Sprintf("relay6=%v/additional ipv6", relay6), func(t *testing.T) {
			cl := dialRaw(t, "udp", s.addr("udp"), nil)
			_, r := cl.allocate(user, pass, requestedUDP(), wantIPv6(attrAdditionalAddressFamily))
			if errorCode(r) != 0 {
				t.Fatalf("got %d, want success", errorCode(r))
			}
			if got := xorAddr(t, r, stun.AttrXORRelayedAddress); !got.Addr().Is4() {
				t.Fatalf("relayed %v, want the IPv4 half", got)
			}
			v, err := r.Get(attrAddressErrorCode)
			if err != nil || len(v) < 4 || v[0] != familyIPv6 || int(v[2])*100+int(v[3]) != 440 {
				t.Fatalf("ADDRESS-ERROR-CODE % x, %v; want IPv6 and 440", v, err)
			}
			if err := stun.MessageIntegrity(auth.LongTermKey(user, testRealm, pass)).Check(r); err != nil {
				t.Fatalf("MESSAGE-INTEGRITY of the rewritten answer: %v", err)
			}
			if err := stun.Fingerprint.Check(r); err != nil {
				t.Fatalf("FINGERPRINT of the rewritten answer: %v", err)
			}
		})
	}
}

// TestIPv6DenyList: on an IPv6 allocation, the default deny list refuses with 403 every
// IPv6 special-purpose address and every IPv6 form of a denied IPv4 one, counted by
// reason; a public IPv6 address is allowed.
func TestIPv6DenyList(t *testing.T) {
	s := ipv6Server(t, true)
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	user, pass := s.creds(t, "deny6")
	sess, r := c.allocate(user, pass, requestedUDP(), wantIPv6(stun.AttrRequestedAddressFamily))
	if errorCode(r) != 0 {
		t.Fatalf("Allocate IPv6: %d", errorCode(r))
	}
	for _, d := range []struct{ peer, reason string }{
		{"[::2]:9", "unspecified"}, // IPv4-compatible ::0.0.0.2
		{"[fe80::1]:9", "link_local"},
		{"[fc00::1]:9", "private"},
		{"[fd12:3456::1]:9", "private"},
		{"[ff02::1]:9", "multicast"},
		{"[::]:9", "unspecified"},
		{"[::ffff:127.0.0.2]:9", "loopback"},
		{"[::ffff:10.0.0.1]:9", "private"},
		{"[64:ff9b::a9fe:a9fe]:80", "link_local"},                // NAT64 of 169.254.169.254
		{"[2002:7f00:2::]:9", "loopback"},                        // 6to4 of 127.0.0.2
		{"[2002:a00:1::]:9", "private"},                          // 6to4 of 10.0.0.1
		{"[2001:0:4136:e378:8000:63bf:80ff:fffd]:9", "loopback"}, // Teredo of 127.0.0.2
		{"[::a00:1]:9", "private"},                               // IPv4-compatible 10.0.0.1
		{"[2001:db8::1]:9", "reserved"},
	} {
		reason := DenyReason(d.reason)
		before := testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues(string(reason)))
		peer := netip.MustParseAddrPort(d.peer)
		for _, m := range []stun.Method{stun.MethodCreatePermission, stun.MethodChannelBind} {
			if r := sess.request(stun.NewType(m, stun.ClassRequest), channelNumber(0x4003), xorPeer{peer}); errorCode(r) != 403 {
				t.Errorf("%v %s on an IPv6 allocation: %d, want 403", m, d.peer, errorCode(r))
			}
		}
		if got := testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues(string(reason))) - before; got != 2 {
			t.Errorf("%s: relay_turn_peer_denied_total{reason=%q} rose by %v, want 2", d.peer, reason, got)
		}
	}
	if r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{netip.MustParseAddrPort("[2606:4700:4700::1111]:53")}); errorCode(r) != 0 {
		t.Errorf("CreatePermission for a public IPv6 peer: %d", errorCode(r))
	}
}

// TestStreamFamiliesConcurrently: Allocates of both families arriving at once on many
// connections of one TCP listener (one relay address generator, family.go) each get the
// family they asked for.
func TestStreamFamiliesConcurrently(t *testing.T) {
	s := ipv6Server(t, true)
	// pion asks for each relay socket slowly: without the generator held from the gate
	// to pion's answer, the other Allocates would change the family meanwhile.
	slow := func() { time.Sleep(2 * time.Millisecond) }
	familyTestHook.Store(&slow)
	t.Cleanup(func() { familyTestHook.Store(nil) })
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		// The challenge first, one connection at a time; then every signed Allocate at once.
		c := dialRaw(t, "tcp", s.addr("tcp"), nil)
		first := c.roundTrip(mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()), 2*time.Second)
		var nonce stun.Nonce
		if err := nonce.GetFrom(first); err != nil {
			t.Fatal("no nonce")
		}
		user, pass := s.creds(t, fmt.Sprintf("conc%d", i))
		v6 := i%2 == 0
		setters := []stun.Setter{stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()}
		if v6 {
			setters = append(setters, wantIPv6(stun.AttrRequestedAddressFamily))
		}
		req := mustBuild(t, append(setters, stun.NewUsername(user), stun.NewRealm(testRealm), nonce,
			stun.MessageIntegrity(auth.LongTermKey(user, testRealm, pass)), stun.Fingerprint)...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := streamRoundTrip(c.conn, req)
			if err != nil || errorCode(r) != 0 {
				errs <- fmt.Errorf("connection %d: %d %v", i, errorCode(r), err)
				return
			}
			var a stun.XORMappedAddress
			if err := a.GetFromAs(r, stun.AttrXORRelayedAddress); err != nil || (a.IP.To4() == nil) != v6 {
				errs <- fmt.Errorf("connection %d asked IPv6=%v, got %v", i, v6, a.IP)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// streamRoundTrip writes m on a stream connection and reads one framed answer.
func streamRoundTrip(c net.Conn, m *stun.Message) (*stun.Message, error) {
	if _, err := c.Write(m.Raw); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, int(binary.BigEndian.Uint16(hdr[2:4])))
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	r := &stun.Message{Raw: append(hdr, body...)}
	return r, r.Decode()
}

// TestPionClientIPv6: pion's TURN client over UDP on ::1, its Allocate given
// REQUESTED-ADDRESS-FAMILY IPv6 on the way out (pion's client has no option for it):
// it gets an IPv6 relayed address and relays to an IPv6 echo peer and back.
func TestPionClientIPv6(t *testing.T) {
	s := ipv6Server(t, true)
	user, pass := s.creds(t, "pion6")
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: s.addr("udp"), TURNServerAddr: s.addr("udp"), Net: resolve6{std},
		Conn: &askIPv6{PacketConn: pc, key: auth.LongTermKey(user, testRealm, pass)}, Username: user, Password: pass,
		Realm: testRealm, LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer pc.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	mapped, err := client.SendBindingRequest()
	if err != nil || mapped.(*net.UDPAddr).IP.To4() != nil {
		t.Fatalf("Binding: %v, %v", mapped, err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayConn.Close()
	if ra := relayConn.LocalAddr().(*net.UDPAddr); ra.IP.To4() != nil || !ra.IP.Equal(net.IPv6loopback) {
		t.Fatalf("relayed address %v, want [::1]", ra)
	}
	echo := testpeer.Echo6(t)
	buf := make([]byte, 1500)
	for i := range 3 {
		msg := fmt.Sprintf("pion over IPv6 %d", i)
		if _, err := relayConn.WriteTo([]byte(msg), echo); err != nil {
			t.Fatal(err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := relayConn.ReadFrom(buf)
		if err != nil || string(buf[:n]) != msg || from.String() != echo.String() {
			t.Fatalf("echo %q from %v: %v", buf[:n], from, err)
		}
	}
}

// resolve6 resolves the server's address as it is: pion's client asks for "udp4".
type resolve6 struct{ transport.Net }

func (n resolve6) ResolveUDPAddr(_, addr string) (*net.UDPAddr, error) {
	return net.ResolveUDPAddr("udp", addr)
}

// askIPv6 adds REQUESTED-ADDRESS-FAMILY IPv6 to the authenticated Allocate requests a
// client writes, signing them again with key.
type askIPv6 struct {
	net.PacketConn
	key []byte
}

func (c *askIPv6) WriteTo(p []byte, addr net.Addr) (int, error) {
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil || m.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) || !m.Contains(stun.AttrMessageIntegrity) {
		return c.PacketConn.WriteTo(p, addr)
	}
	out := &stun.Message{Type: m.Type, TransactionID: m.TransactionID}
	out.WriteHeader()
	for _, a := range m.Attributes {
		if a.Type != stun.AttrMessageIntegrity && a.Type != stun.AttrFingerprint {
			out.Add(a.Type, a.Value)
		}
	}
	out.Add(stun.AttrRequestedAddressFamily, []byte{familyIPv6, 0, 0, 0})
	if err := stun.MessageIntegrity(c.key).AddTo(out); err != nil {
		return 0, err
	}
	if err := stun.Fingerprint.AddTo(out); err != nil {
		return 0, err
	}
	if _, err := c.PacketConn.WriteTo(out.Raw, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// TestDualStackListeners: the default listener form (an empty host, ":3478") takes
// IPv4 and IPv6 clients on one port, over UDP and TCP; each is answered with its own
// address, IPv4 ones unmapped.
func TestDualStackListeners(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = c.Close()
	}
	if d := config.Default(); d.TURN.UDP[0] != ":3478" || d.TURN.TCP[0] != ":3478" {
		t.Fatalf("default listeners %v %v, want [\":3478\"] (both families)", d.TURN.UDP, d.TURN.TCP)
	}
	s := startServer(t, func(c *config.Config) {
		c.TURN.UDP = []string{":0"}
		c.TURN.TCP = []string{":0"}
	})
	for _, transport := range []string{"udp", "tcp"} {
		_, port, _ := net.SplitHostPort(s.addr(transport))
		for _, host := range []string{"127.0.0.1", "::1"} {
			c := dialRaw(t, transport, net.JoinHostPort(host, port), nil)
			b := c.roundTrip(mustBuild(t, stun.BindingRequest, stun.Fingerprint), 2*time.Second)
			if got := xorAddr(t, b, stun.AttrXORMappedAddress); got != addrPortOf(c.conn.LocalAddr()) {
				t.Errorf("%s Binding from %s: XOR-MAPPED-ADDRESS %v, want %v", transport, host, got, c.conn.LocalAddr())
			}
		}
	}
}

// TestStalledAllocateDoesNotHoldListener: an authenticated client on a TCP listener
// sends an Allocate pion never answers (one pion's read buffer cannot take: pion drops
// it and reads on) and then sends nothing more. Another user's Allocate on the same
// listener is still answered at once, not after familyWait with 508: the listener's
// relay address generator is given back as soon as pion reads again, not when the
// staller's next message arrives.
func TestStalledAllocateDoesNotHoldListener(t *testing.T) {
	for _, size := range []int{pionReadBufSize, pionReadBufSize + 400} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := startServer(t, nil)
			staller := dialRaw(t, "tcp", s.addr("tcp"), nil)
			user, pass := s.creds(t, "staller")
			first := staller.roundTrip(mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()), 2*time.Second)
			var nonce stun.Nonce
			if err := nonce.GetFrom(first); err != nil {
				t.Fatal("no nonce")
			}
			// Padding in a comprehension-optional attribute to make the whole message size
			// bytes long: 20 header, 8 REQUESTED-TRANSPORT, username, realm, nonce, 24
			// MESSAGE-INTEGRITY, 8 FINGERPRINT.
			build := func(pad int) *stun.Message {
				return mustBuild(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
					stun.RawAttribute{Type: 0x8050, Value: make([]byte, pad)},
					stun.NewUsername(user), stun.NewRealm(testRealm), nonce,
					stun.MessageIntegrity(auth.LongTermKey(user, testRealm, pass)), stun.Fingerprint)
			}
			req := build(size - len(build(0).Raw))
			if len(req.Raw) != size {
				t.Fatalf("built %d bytes, want %d", len(req.Raw), size)
			}
			if _, err := staller.conn.Write(req.Raw); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the staller's Allocate to reach pion", func() bool { return s.streams[0].gen.holds.Load() == 1 })
			victim := dialRaw(t, "tcp", s.addr("tcp"), nil)
			vu, vp := s.creds(t, "victim")
			start := time.Now()
			_, r := victim.allocate(vu, vp)
			if took := time.Since(start); errorCode(r) != 0 || took > familyWait/4 {
				t.Fatalf("victim's Allocate behind a stalled one: code %d after %v, want success at once", errorCode(r), took)
			}
		})
	}
}

// TestRefreshAddressFamily: a Refresh whose REQUESTED-ADDRESS-FAMILY is not the
// allocation's family gets 443 (RFC 6156 §5.2, RFC 8656 §7.3) and refreshes nothing;
// the allocation's own family refreshes it.
func TestRefreshAddressFamily(t *testing.T) {
	s := ipv6Server(t, true)
	user, pass := s.creds(t, "refresh-family")
	for _, c := range []struct {
		name         string
		alloc        []stun.Setter
		wrong, right byte
	}{
		{"ipv4 allocation", []stun.Setter{requestedUDP()}, familyIPv6, familyIPv4},
		{"ipv6 allocation", []stun.Setter{requestedUDP(), wantIPv6(stun.AttrRequestedAddressFamily)}, familyIPv4, familyIPv6},
	} {
		t.Run(c.name, func(t *testing.T) {
			sess, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(user, pass, c.alloc...)
			if errorCode(r) != 0 {
				t.Fatalf("Allocate: %d", errorCode(r))
			}
			refresh := stun.NewType(stun.MethodRefresh, stun.ClassRequest)
			if r := sess.request(refresh, familyAttr{stun.AttrRequestedAddressFamily, c.wrong}); errorCode(r) != 443 {
				t.Errorf("Refresh asking the other family: %d, want 443", errorCode(r))
			}
			if r := sess.request(refresh, familyAttr{stun.AttrRequestedAddressFamily, c.right}); errorCode(r) != 0 {
				t.Errorf("Refresh asking the allocation's family: %d, want success", errorCode(r))
			}
		})
	}
}
