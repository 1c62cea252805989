package relay

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/metrics"
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

// TestAllocationLog: one line per ended allocation, with who, where, how long, how much
// each way and why it ended.
func TestAllocationLog(t *testing.T) {
	var buf syncBuffer
	s := startServer(t, allowLoopback)
	s.allocs.log = slog.New(slog.NewJSONHandler(&buf, nil))
	peer := testpeer.Echo(t)

	// Over TCP, released by closing the connection.
	user, pass := s.creds(t, "logged")
	c := dialRaw(t, "tcp", s.addr("tcp"), nil)
	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	ap := netip.MustParseAddrPort(peer.String())
	if r := sess.request(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), xorPeer{ap}); errorCode(r) != 0 {
		t.Fatalf("permission: %d", errorCode(r))
	}
	send := mustBuild(t, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer{ap}, stun.RawAttribute{Type: stun.AttrData, Value: []byte("twelve bytes")})
	if _, err := c.conn.Write(send.Raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the echo to come back", func() bool { return testutil.ToFloat64(s.metrics.PacketsPeerToClient) == 1 })
	_ = c.conn.Close()

	// Over UDP, released with Refresh lifetime 0.
	u2, p2 := s.creds(t, "released")
	c2 := dialRaw(t, "udp", s.addr("udp"), nil)
	sess2, r := c2.allocate(u2, p2)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	if r := sess2.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime(0)); errorCode(r) != 0 {
		t.Fatalf("release: %d", errorCode(r))
	}
	waitFor(t, "two allocation log lines", func() bool { return strings.Count(buf.String(), `"allocation ended"`) == 2 })

	lines := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "allocation ended" {
			lines[rec["user"].(string)] = rec
		}
	}
	tcp := lines["logged"]
	for k, want := range map[string]any{"transport": "tcp", "reason": "connection_closed",
		"bytes_client_to_peer": float64(12), "packets_client_to_peer": float64(1),
		"bytes_peer_to_client": float64(12), "packets_peer_to_client": float64(1)} {
		if tcp[k] != want {
			t.Errorf("tcp allocation log %s = %v, want %v (%v)", k, tcp[k], want, tcp)
		}
	}
	if tcp["client"] != c.conn.LocalAddr().String() || !strings.HasPrefix(tcp["relay"].(string), "127.0.0.1:") || tcp["duration"] == "" {
		t.Errorf("tcp allocation log: %v", tcp)
	}
	if udp := lines["released"]; udp["reason"] != "released" || udp["transport"] != "udp" {
		t.Errorf("udp allocation log: %v", udp)
	}
	if strings.Contains(buf.String(), pass) || strings.Contains(buf.String(), testSecret) {
		t.Errorf("a password or secret reached the log")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDrainTimeoutLogsEveryAllocation: allocations still open when a drain times out and
// the server closes each get exactly one "allocation ended" line (reason shutdown), over
// UDP and TCP alike, written before Close returns (the process exits right after). The
// log goes to a slow writer, as a busy journald or a pipe can be.
func TestDrainTimeoutLogsEveryAllocation(t *testing.T) {
	var buf syncBuffer
	s := startServer(t, nil)
	s.allocs.log = slog.New(slog.NewJSONHandler(slowWriter{&buf}, nil))
	clients := map[string]bool{}
	for i, transport := range []string{"udp", "udp", "udp", "udp", "tcp", "tcp"} {
		user, pass := s.creds(t, "open-"+strconv.Itoa(i))
		c := dialRaw(t, transport, s.addr(transport), nil)
		if _, r := c.allocate(user, pass); errorCode(r) != 0 {
			t.Fatalf("allocate over %s: %d", transport, errorCode(r))
		}
		clients[c.conn.LocalAddr().String()] = true
	}
	s.Drain()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ended := func() map[string]int {
		n := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "allocation ended" {
				n[rec["client"].(string)]++
				if rec["reason"] != endShutdown {
					t.Errorf("allocation of %v ended with reason %v, want %s", rec["client"], rec["reason"], endShutdown)
				}
			}
		}
		return n
	}
	// Close has returned: every allocation has ended and is logged.
	got := ended()
	for c := range clients {
		if got[c] != 1 {
			t.Errorf("allocation of %s logged %d times after Close, want once", c, got[c])
		}
	}
	if len(got) != len(clients) {
		t.Errorf("allocation ended lines for %v, want %v", got, clients)
	}
	if n := s.AllocationCount(); n != 0 {
		t.Errorf("AllocationCount = %d after Close", n)
	}
	if g := testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues("udp")) + testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues("tcp")); g != 0 {
		t.Errorf("relay_turn_allocations_active = %v after Close", g)
	}
}

// slowWriter takes 20 ms for each write.
type slowWriter struct{ w *syncBuffer }

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return s.w.Write(p)
}

// TestEndAllLogsOnce: an allocation pion never reported deleted is ended by Close's
// sweep, and pion reporting it afterwards logs nothing more.
func TestEndAllLogsOnce(t *testing.T) {
	var buf syncBuffer
	tbl := newAllocations(metrics.New("test", "test"), slog.New(slog.NewJSONHandler(&buf, nil)))
	h := tbl.eventHandler(func(net.Addr) string { return "udp" })
	client := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	server := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
	relayed := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 61000}
	h.OnAllocationCreated(client, server, "udp", "1:u", testRealm, relayed, 0)
	tbl.endAll()
	h.OnAllocationDeleted(client, server, "udp", "1:u", testRealm)
	if n := strings.Count(buf.String(), `"allocation ended"`); n != 1 {
		t.Errorf("%d allocation ended lines, want 1:\n%s", n, buf.String())
	}
	if !tbl.settled() {
		t.Error("table not settled after the sweep")
	}
}
