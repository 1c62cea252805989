package relay

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
)

// TestCredentials: every kind of time-limited credential gets the answer RFC 8656 asks
// for, and refusals are counted by reason.
func TestCredentials(t *testing.T) {
	const oldSecret = "retired-secret-still-verifies"
	s := startServer(t, func(c *config.Config) {
		c.Auth.Secrets = []string{testSecret, oldSecret}
		c.Auth.MaxTTL = 2 * time.Hour
		c.Auth.Users = map[string]string{"static": "static-password"}
	})
	rest := func(secret string, expiry time.Time, user string) (string, string) {
		name := strconv.FormatInt(expiry.Unix(), 10) + ":" + user
		return name, auth.RESTPassword(secret, name)
	}
	now := time.Now()
	cases := []struct {
		name       string
		user, pass string
		want       int
		reason     string
	}{
		{"valid", "", "", 0, ""},
		{"rotated secret", "", "", 0, ""},
		{"static user", "static", "static-password", 0, ""},
		{"expired", "", "", 401, "expired"},
		{"wrong secret", "", "", 401, "bad_password"},
		{"beyond max_ttl", "", "", 401, "too_far_future"},
		{"static wrong password", "static", "nope", 401, "bad_password"},
		{"malformed username", "not-a-user", "x", 401, "malformed"},
		// u0's key is cached from the first case: a wrong password still fails.
		{"verified user, wrong password", "", "wrong", 401, "bad_password"},
	}
	cases[0].user, cases[0].pass = rest(testSecret, now.Add(time.Hour), "u0")
	cases[1].user, cases[1].pass = rest(oldSecret, now.Add(time.Hour), "u1")
	cases[3].user, cases[3].pass = rest(testSecret, now.Add(-time.Minute), "u3")
	cases[4].user, cases[4].pass = rest("some-other-secret", now.Add(time.Hour), "u4")
	cases[5].user, cases[5].pass = rest(testSecret, now.Add(3*time.Hour), "u5")
	cases[8].user = cases[0].user
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			allocsBefore := s.allocs.total()
			before := 0.0
			if tc.reason != "" {
				before = testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(tc.reason))
			}
			c := dialRaw(t, "udp", s.addr("udp"), nil)
			_, resp := c.allocate(tc.user, tc.pass)
			if got := errorCode(resp); got != tc.want {
				t.Fatalf("Allocate answered %d, want %d", got, tc.want)
			}
			if tc.want == 401 {
				var realm stun.Realm
				var nonce stun.Nonce
				if realm.GetFrom(resp) != nil || nonce.GetFrom(resp) != nil {
					t.Errorf("401 without REALM and NONCE")
				}
				if got := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(tc.reason)); got != before+1 {
					t.Errorf("relay_turn_auth_failures_total{reason=%q} went %v -> %v, want +1", tc.reason, before, got)
				}
				if s.allocs.total() != allocsBefore {
					t.Errorf("state kept after a refused Allocate")
				}
			} else {
				var relayed stun.XORMappedAddress
				if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
					t.Fatalf("no XOR-RELAYED-ADDRESS: %v", err)
				}
				if err := stun.MessageIntegrity(auth.LongTermKey(tc.user, testRealm, tc.pass)).Check(resp); err != nil {
					t.Errorf("success response not signed with the client's key: %v", err)
				}
			}
		})
	}
	if got := testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("unauthorized")); got != 6 {
		t.Errorf("relay_turn_allocations_total{result=unauthorized} = %v, want 6", got)
	}
}

// deniedPeers are the default deny list in every encoding a client can send.
var deniedPeers = []string{
	"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1",
	"2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo for 127.0.0.1
	"0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0",
	"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "::ffff:10.0.0.1",
	"169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
	"fd00::1", "fe80::1", "ff02::1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
	"192.0.2.1", "198.51.100.1", "203.0.113.1", "198.18.0.1", "2001:db8::1",
}

// TestPeerDenied: CreatePermission and ChannelBind to any denied address, in any
// encoding, get 403; nothing is installed; the refusal is counted.
func TestPeerDenied(t *testing.T) {
	s := startServer(t, nil)
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	user, pass := s.creds(t, "mallory")
	sess, resp := c.allocate(user, pass)
	if errorCode(resp) != 0 {
		t.Fatalf("allocate: %d", errorCode(resp))
	}
	for i, peer := range deniedPeers {
		ap := netip.AddrPortFrom(netip.MustParseAddr(peer), 3478)
		t.Run(peer, func(t *testing.T) {
			reason := string(s.settings.Load().policy.CheckAddr(ap))
			before := testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues(reason))
			r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{ap})
			if got := errorCode(r); got != 403 {
				t.Errorf("CreatePermission %s: %d, want 403", peer, got)
			}
			if r != nil && stun.MessageIntegrity(sess.key).Check(r) != nil {
				t.Errorf("403 not signed")
			}
			r = sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
				channelNumber(0x4000+i), xorPeer{ap})
			if got := errorCode(r); got != 403 {
				t.Errorf("ChannelBind %s: %d, want 403", peer, got)
			}
			after := testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues(reason))
			if after != before+2 {
				t.Errorf("relay_turn_peer_denied_total did not count both refusals (%v -> %v)", before, after)
			}
		})
	}
	// One allowed and one denied peer in the same request: nothing is installed.
	r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		xorPeer{netip.MustParseAddrPort("8.8.8.8:53")}, xorPeer{netip.MustParseAddrPort("127.0.0.1:53")})
	if got := errorCode(r); got != 403 {
		t.Errorf("mixed CreatePermission: %d, want 403", got)
	}
	if got := testutil.ToFloat64(s.metrics.PermissionsActive); got != 0 {
		t.Errorf("relay_turn_permissions_active = %v after refusals, want 0", got)
	}
	// A public peer is fine.
	r = sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{netip.MustParseAddrPort("8.8.8.8:53")})
	if got := errorCode(r); got != 0 {
		t.Errorf("CreatePermission 8.8.8.8: %d, want success", got)
	}
	waitFor(t, "the permission gauge", func() bool { return testutil.ToFloat64(s.metrics.PermissionsActive) == 1 })
}

// TestOwnRelayAsPeer: two clients reach each other relay to relay (the server's own
// address is always a valid peer), but only on relay ports.
func TestOwnRelayAsPeer(t *testing.T) {
	s := startServer(t, nil) // default deny list: 127.0.0.0/8 is denied except our relay ports
	a, ra := allocated(t, s, "a")
	b, rb := allocated(t, s, "b")
	if err := b.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatalf("permission for the other relay: %v", err)
	}
	if err := a.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatalf("permission for the other relay: %v", err)
	}
	if _, err := ra.WriteTo([]byte("via two relays"), rb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = rb.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := rb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "via two relays" || from.String() != ra.LocalAddr().String() {
		t.Fatalf("relay to relay: %q from %v, %v", buf[:n], from, err)
	}

	// The same IP outside the relay range is refused: in CreatePermission, and per
	// datagram, since the permission installed above covers the whole IP.
	sneaky := netip.MustParseAddrPort(testpeer.Echo(t).String())
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	uc, pc := s.creds(t, "c")
	sess, resp := c.allocate(uc, pc)
	if errorCode(resp) != 0 {
		t.Fatalf("allocate: %d", errorCode(resp))
	}
	if r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{sneaky}); errorCode(r) != 403 {
		t.Errorf("CreatePermission for a loopback service on the relay IP: %d, want 403", errorCode(r))
	}
	relayB := netip.MustParseAddrPort(rb.LocalAddr().String())
	if r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{relayB}); errorCode(r) != 0 {
		t.Fatalf("CreatePermission for a relay address: %d", errorCode(r))
	}
	before := testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues("loopback"))
	send := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{sneaky}, stun.RawAttribute{Type: stun.AttrData, Value: []byte("to a loopback service")})
	if _, err := c.conn.Write(send.Raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused datagram to be counted", func() bool {
		return testutil.ToFloat64(s.metrics.PeerDenied.WithLabelValues("loopback")) > before
	})
}

// TestQuota: per-user concurrent allocations get 486, the server-wide cap 508.
func TestQuota(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Limits.UserAllocations = 2
		c.Limits.TotalAllocations = 3
	})
	user, pass := s.creds(t, "greedy")
	for i := 0; i < 2; i++ {
		c := dialRaw(t, "udp", s.addr("udp"), nil)
		if _, r := c.allocate(user, pass); errorCode(r) != 0 {
			t.Fatalf("allocation %d: %d", i, errorCode(r))
		}
	}
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	if _, r := c.allocate(user, pass); errorCode(r) != 486 {
		t.Fatalf("third allocation of one user: %d, want 486", errorCode(r))
	}
	// A second credential for the same user id shares the quota.
	user2, pass2 := s.creds(t, "greedy")
	c = dialRaw(t, "tcp", s.addr("tcp"), nil)
	if _, r := c.allocate(user2, pass2); errorCode(r) != 486 {
		t.Fatalf("same user id over TCP: %d, want 486", errorCode(r))
	}
	other, otherPass := s.creds(t, "other")
	c = dialRaw(t, "udp", s.addr("udp"), nil)
	if _, r := c.allocate(other, otherPass); errorCode(r) != 0 {
		t.Fatalf("another user: %d", errorCode(r))
	}
	third, thirdPass := s.creds(t, "third")
	c = dialRaw(t, "udp", s.addr("udp"), nil)
	if _, r := c.allocate(third, thirdPass); errorCode(r) != 508 {
		t.Fatalf("past the total cap: %d, want 508", errorCode(r))
	}
	if got := testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("quota")); got != 2 {
		t.Errorf("relay_turn_allocations_total{result=quota} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.metrics.AllocationsTotal.WithLabelValues("capacity")); got != 1 {
		t.Errorf("relay_turn_allocations_total{result=capacity} = %v, want 1", got)
	}
}

// TestAnswersPionGetsWrong: requests pion/turn v4 answers with silence or the wrong code.
func TestAnswersPionGetsWrong(t *testing.T) {
	s := startServer(t, nil)
	user, pass := s.creds(t, "carol")

	c := dialRaw(t, "udp", s.addr("udp"), nil)
	r := c.roundTrip(mustBuild(t, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		xorPeer{netip.MustParseAddrPort("8.8.8.8:53")}), 2*time.Second)
	if got := errorCode(r); got != 437 {
		t.Errorf("CreatePermission without an allocation: %d, want 437", got)
	}
	r = c.roundTrip(mustBuild(t, stun.NewType(stun.MethodRefresh, stun.ClassRequest)), 2*time.Second)
	if got := errorCode(r); got != 437 {
		t.Errorf("Refresh without an allocation: %d, want 437", got)
	}

	_, r = c.allocate(user, pass, requestedTransport(6))
	if got := errorCode(r); got != 442 {
		t.Errorf("Allocate for a TCP relay: %d, want 442", got)
	}

	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	for _, ch := range []uint16{0x0000, 0x3FFF, 0x8000, 0xFFFF} {
		r = sess.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(ch),
			xorPeer{netip.MustParseAddrPort("8.8.8.8:53")})
		if got := errorCode(r); got != 400 {
			t.Errorf("ChannelBind 0x%04x: %d, want 400", ch, got)
		}
	}
}
