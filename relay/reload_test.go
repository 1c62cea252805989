package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
)

type lifetime time.Duration

func (l lifetime) AddTo(m *stun.Message) error {
	s := uint32(time.Duration(l) / time.Second)
	m.Add(stun.AttrLifetime, []byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)})
	return nil
}

// TestReloadKeepsAllocations: after a reload that rotates the secret out and tightens
// quotas, an open allocation keeps working with the credentials it was made with, while
// new allocations need the new secret and obey the new quota.
func TestReloadKeepsAllocations(t *testing.T) {
	s := startServer(t, nil)
	oldUser, oldPass := s.creds(t, "caller")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	sess, r := c.allocate(oldUser, oldPass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}

	cfg := *s.cfg
	cfg.Auth.Secrets = []string{"the-new-secret-after-rotation"}
	cfg.Limits.UserAllocations = 1
	cfg.Realm = "another.realm"
	cfg.TURN.UDP = []string{"127.0.0.1:1"}
	a, err := auth.New(auth.Options{Secrets: cfg.Auth.Secrets, MaxTTL: cfg.Auth.MaxTTL})
	if err != nil {
		t.Fatal(err)
	}
	restart, err := s.Reload(&cfg, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 2 || restart[0] != "realm" || restart[1] != "turn.udp" {
		t.Errorf("needs restart %v, want [realm turn.udp]", restart)
	}

	if r := sess.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(10*time.Minute)); errorCode(r) != 0 {
		t.Errorf("Refresh of an open allocation with its own (rotated-out) credentials: %d", errorCode(r))
	}
	if r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{netip.MustParseAddrPort("8.8.8.8:53")}); errorCode(r) != 0 {
		t.Errorf("CreatePermission on an open allocation after rotation: %d", errorCode(r))
	}
	if _, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(oldUser, oldPass); errorCode(r) != 401 {
		t.Errorf("new allocation with rotated-out credentials: %d, want 401", errorCode(r))
	}
	newCreds, err := a.Mint("caller", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(newCreds.Username, newCreds.Password); errorCode(r) != 486 {
		t.Errorf("second allocation of user 'caller' under user_allocations = 1: %d, want 486", errorCode(r))
	}
	other, err := a.Mint("someone-else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(other.Username, other.Password); errorCode(r) != 0 {
		t.Errorf("allocation with the new secret: %d", errorCode(r))
	}
	if got := testutil.ToFloat64(s.metrics.AllocationsLimit); got != float64(cfg.Limits.TotalAllocations) {
		t.Errorf("relay_turn_allocations_limit = %v", got)
	}
}

// TestDrain: a draining server refuses new allocations (508, or 300 with the alternate
// server) and keeps serving open ones.
func TestDrain(t *testing.T) {
	alt := netip.MustParseAddrPort("203.0.113.9:3478")
	for _, alternate := range []netip.AddrPort{{}, alt} {
		s := startServer(t, func(c *config.Config) { c.TURN.AlternateServer = alternate })
		user, pass := s.creds(t, "u")
		c := dialRaw(t, "udp", s.addr("udp"), nil)
		sess, r := c.allocate(user, pass)
		if errorCode(r) != 0 {
			t.Fatalf("allocate: %d", errorCode(r))
		}
		s.Drain()
		if got := testutil.ToFloat64(s.metrics.Draining); got != 1 {
			t.Errorf("relay_draining = %v", got)
		}
		_, r = dialRaw(t, "udp", s.addr("udp"), nil).allocate(user, pass)
		if alternate.IsValid() {
			var as stun.AlternateServer
			if errorCode(r) != 300 || as.GetFrom(r) != nil || net.JoinHostPort(as.IP.String(), strconv.Itoa(as.Port)) != alt.String() {
				t.Errorf("draining with alternate_server: %d %v, want 300 with ALTERNATE-SERVER %s", errorCode(r), as, alt)
			}
		} else if errorCode(r) != 508 {
			t.Errorf("new Allocate while draining: %d, want 508", errorCode(r))
		}
		if r := sess.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(time.Minute)); errorCode(r) != 0 {
			t.Errorf("Refresh of an open allocation while draining: %d", errorCode(r))
		}
		if n := s.AllocationCount(); n != 1 {
			t.Errorf("AllocationCount = %d", n)
		}
		if r := sess.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(0)); errorCode(r) != 0 {
			t.Errorf("releasing: %d", errorCode(r))
		}
		waitFor(t, "the allocation to end", func() bool { return s.AllocationCount() == 0 })
	}
}
