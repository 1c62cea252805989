package relay

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
)

func allowLoopback(c *config.Config) {
	c.Peers.Allow = []string{"127.0.0.0/8"}
}

// pionClient connects pion's TURN client over the given transport.
func pionClient(t *testing.T, s *testServer, transport string, tlsConf *tls.Config, user, pass string) *turn.Client {
	t.Helper()
	addr := s.addr(transport)
	var conn net.PacketConn
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		c, err := tls.Dial("tcp", addr, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass, Realm: testRealm, LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); _ = conn.Close() })
	return client
}

// allocated is a pion client over UDP with an allocation, both closed by t.Cleanup.
func allocated(t *testing.T, s *testServer, user string) (*turn.Client, net.PacketConn) {
	t.Helper()
	u, p := s.creds(t, user)
	c := pionClient(t, s, "udp", nil, u, p)
	r, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return c, r
}

// TestRelayRoundTrip: allocate, permission, channel and echo through the relay over each
// client transport, with the pion TURN client.
func TestRelayRoundTrip(t *testing.T) {
	certFile, keyFile, clientTLS := selfSignedTLS(t)
	s := startServer(t, func(c *config.Config) {
		allowLoopback(c)
		c.TURN.TLS = []string{"127.0.0.1:0"}
		c.TURN.TLSCert, c.TURN.TLSKey = certFile, keyFile
	})
	peer := testpeer.Echo(t)
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			user, pass := s.creds(t, "alice-"+transport)
			client := pionClient(t, s, transport, clientTLS, user, pass)
			mapped, err := client.SendBindingRequest()
			if err != nil {
				t.Fatalf("binding: %v", err)
			}
			if ua := mapped.(*net.UDPAddr); !ua.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Fatalf("reflexive address %v, want 127.0.0.1", mapped)
			}
			relayConn, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			defer relayConn.Close()
			if got := relayConn.LocalAddr().(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) || got.Port < 61000 || got.Port > 61999 {
				t.Fatalf("relayed address %v outside 127.0.0.1:61000-61999", got)
			}
			if err := client.CreatePermission(peer); err != nil {
				t.Fatalf("permission: %v", err)
			}
			before := testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues(transport))
			if before != 1 {
				t.Fatalf("relay_turn_allocations_active{transport=%q} = %v, want 1", transport, before)
			}
			buf := make([]byte, 1500)
			// The first writes go as Send indications while pion binds a channel; keep
			// going until the channel exists so both paths are exercised.
			for i := 0; i < 20; i++ {
				msg := []byte(fmt.Sprintf("hello %s %d", transport, i))
				if _, err := relayConn.WriteTo(msg, peer); err != nil {
					t.Fatal(err)
				}
				_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, from, err := relayConn.ReadFrom(buf)
				if err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], msg) || from.String() != peer.String() {
					t.Fatalf("echo %d: got %q from %v", i, buf[:n], from)
				}
			}
			waitFor(t, "a channel binding", func() bool { return testutil.ToFloat64(s.metrics.ChannelsActive) >= 1 })
		})
	}
	waitFor(t, "allocations to end", func() bool {
		return testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues("udp"))+
			testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues("tcp"))+
			testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues("tls")) == 0
	})
	if got := testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("success")); got != 3 {
		t.Errorf("relay_turn_allocations_total{result=success} = %v, want 3", got)
	}
	for _, dir := range []string{"client_to_peer", "peer_to_client"} {
		if got := testutil.ToFloat64(s.metrics.RelayedPackets.WithLabelValues(dir)); got != 60 {
			t.Errorf("relay_turn_relayed_packets_total{direction=%s} = %v, want 60", dir, got)
		}
	}
	// 3 transports x 10 messages of 13 bytes + 10 of 14 bytes ("hello udp 0".."hello udp 19").
	wantBytes := 0.0
	for _, tr := range []string{"udp", "tcp", "tls"} {
		for i := 0; i < 20; i++ {
			wantBytes += float64(len(fmt.Sprintf("hello %s %d", tr, i)))
		}
	}
	for _, dir := range []string{"client_to_peer", "peer_to_client"} {
		if got := testutil.ToFloat64(s.metrics.RelayedBytes.WithLabelValues(dir)); got != wantBytes {
			t.Errorf("relay_turn_relayed_bytes_total{direction=%s} = %v, want %v", dir, got, wantBytes)
		}
	}
}

// TestBinding: Binding requests on UDP and TCP get XOR-MAPPED-ADDRESS, MAPPED-ADDRESS and
// a valid FINGERPRINT, and SOFTWARE only when configured.
func TestBinding(t *testing.T) {
	for _, software := range []string{"", "relay-test/1"} {
		s := startServer(t, func(c *config.Config) { c.Software = software })
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("%s/software=%q", transport, software), func(t *testing.T) {
				c := dialRaw(t, transport, s.addr(transport), nil)
				resp := c.roundTrip(mustBuild(t, stun.BindingRequest), 2*time.Second)
				if resp == nil || resp.Type != stun.BindingSuccess {
					t.Fatalf("no Binding success: %v", resp)
				}
				local := addrPortOf(c.conn.LocalAddr())
				var xor stun.XORMappedAddress
				if err := xor.GetFrom(resp); err != nil {
					t.Fatalf("XOR-MAPPED-ADDRESS: %v", err)
				}
				var mapped stun.MappedAddress
				if err := mapped.GetFrom(resp); err != nil {
					t.Fatalf("MAPPED-ADDRESS: %v", err)
				}
				for _, got := range []string{xor.String(), mapped.String()} {
					if got != local.String() {
						t.Errorf("mapped %s, want %s", got, local)
					}
				}
				if err := stun.Fingerprint.Check(resp); err != nil {
					t.Errorf("FINGERPRINT: %v", err)
				}
				var sw stun.Software
				err := sw.GetFrom(resp)
				if software == "" && err == nil {
					t.Errorf("SOFTWARE %q present though not configured", sw)
				}
				if software != "" && (err != nil || sw.String() != software) {
					t.Errorf("SOFTWARE = %q (%v), want %q", sw, err, software)
				}
			})
		}
		if got := testutil.ToFloat64(s.metrics.STUNBindingRequests.WithLabelValues("udp")); got != 1 {
			t.Errorf("relay_stun_binding_requests_total{transport=udp} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(s.metrics.STUNBindingRequests.WithLabelValues("tcp")); got != 1 {
			t.Errorf("relay_stun_binding_requests_total{transport=tcp} = %v, want 1", got)
		}
	}
}

// TestBindingBurst: a burst of Binding requests larger than one read batch is answered
// in full, each with its own transaction ID (answers go out batched), and the answers
// are not counted as relayed data.
func TestBindingBurst(t *testing.T) {
	s := startServer(t, nil)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.addr("udp"))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 3*batchSize + 5
	want := map[[12]byte]bool{}
	for i := 0; i < n; i++ {
		m := mustBuild(t, stun.BindingRequest)
		want[m.TransactionID] = true
		if _, err := c.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	for i := 0; i < n; i++ {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%d of %d answers: %v", i, n, err)
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:k]...)}
		if err := resp.Decode(); err != nil || resp.Type != stun.BindingSuccess || !want[resp.TransactionID] {
			t.Fatalf("answer %d: %v %v", i, resp, err)
		}
		delete(want, resp.TransactionID)
	}
	if got := testutil.ToFloat64(s.metrics.RelayedPackets.WithLabelValues("peer_to_client")); got != 0 {
		t.Errorf("Binding answers counted as %v relayed packets", got)
	}
}

func TestBindingAllocationFree(t *testing.T) {
	txid := make([]byte, 12)
	from := netip.MustParseAddrPort("203.0.113.7:54321")
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = appendBindingSuccess(buf[:0], txid, from, "x") }); n != 0 {
		t.Fatalf("appendBindingSuccess allocates %v times", n)
	}
}

// TestPublicIP: behind a 1:1 NAT, XOR-RELAYED-ADDRESS carries public_ip, and a client
// that sends to another allocation's public address reaches it without hairpinning.
func TestPublicIP(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.TURN.PublicIP = netip.MustParseAddr("203.0.113.50") })
	a, ra := allocated(t, s, "a")
	b, rb := allocated(t, s, "b")
	for _, r := range []net.PacketConn{ra, rb} {
		if ip := r.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.ParseIP("203.0.113.50")) {
			t.Fatalf("XOR-RELAYED-ADDRESS %v, want public_ip 203.0.113.50", r.LocalAddr())
		}
	}
	if err := b.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatalf("permission for the other relay's public address: %v", err)
	}
	if err := a.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatalf("permission for the other relay's public address: %v", err)
	}
	if _, err := ra.WriteTo([]byte("hairpin"), rb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = rb.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := rb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hairpin" || from.String() != ra.LocalAddr().String() {
		t.Fatalf("via public address: %q from %v (want %v), %v", buf[:n], from, ra.LocalAddr(), err)
	}
}

// TestPortInUse: a second server on a taken port fails to start instead of silently
// sharing it through SO_REUSEPORT.
func TestPortInUse(t *testing.T) {
	first := startServer(t, nil)
	cfg := config.Default()
	cfg.TURN.UDP = []string{first.addr("udp")}
	cfg.TURN.TCP = nil
	cfg.TURN.RelayIP = netip.MustParseAddr("127.0.0.1")
	cfg.Auth.Secrets = []string{testSecret}
	second, err := New(Options{Config: cfg, Auth: first.auth, Metrics: first.metrics})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start()
	if err == nil {
		_ = second.Close()
		t.Fatal("a second server started on a UDP port already in use")
	}
	if !strings.Contains(err.Error(), "turn.udp") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q should name turn.udp and say the address is in use", err)
	}
}

// TestRelayPortsExhausted: when the relay range is full, Allocate gets 508 and the
// refusal is counted as capacity.
func TestRelayPortsExhausted(t *testing.T) {
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := uint16(busy.LocalAddr().(*net.UDPAddr).Port)
	s := startServer(t, func(c *config.Config) { c.TURN.RelayPorts = config.PortRange{Min: port, Max: port} })
	user, pass := s.creds(t, "late")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	if _, r := c.allocate(user, pass); errorCode(r) != 508 {
		t.Fatalf("Allocate with every relay port taken: %d, want 508", errorCode(r))
	}
	waitFor(t, "the capacity refusal to be counted", func() bool {
		return testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("capacity")) == 1
	})
	if got := s.allocs.total(); got != 0 {
		// The reservation is released before the next read on that socket.
		c.roundTrip(mustBuild(t, stun.BindingRequest), time.Second)
		if got = s.allocs.total(); got != 0 {
			t.Errorf("%d reservations left after a refused Allocate", got)
		}
	}
}

// TestBadCertificate: an unreadable TLS certificate stops Start with the key named, and
// no listener is left open.
func TestBadCertificate(t *testing.T) {
	cfg := config.Default()
	cfg.TURN.UDP = []string{"127.0.0.1:0"}
	cfg.TURN.TCP = nil
	cfg.TURN.TLS = []string{"127.0.0.1:0"}
	cfg.TURN.TLSCert, cfg.TURN.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	cfg.TURN.RelayIP = netip.MustParseAddr("127.0.0.1")
	s := startServer(t, nil)
	srv, err := New(Options{Config: cfg, Auth: s.auth, Metrics: s.metrics})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil || !strings.Contains(err.Error(), "turn.tls_cert") {
		t.Fatalf("Start with a missing certificate: %v", err)
	}
	if len(srv.Addrs("udp")) != 0 {
		t.Errorf("UDP listener left open after a failed Start")
	}
}
