package relay

import (
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
)

// testControl is a Control kept in memory, as the admin package's State would be.
type testControl struct {
	mu       sync.Mutex
	revoked  map[string]bool // user ids and usernames
	usage    map[string]*Usage
	refs     map[string]int
	budget   int64
	refused  []Refusal
	created  []AllocationInfo
	ended    []AllocationEnd
	acquired int
}

func newTestControl() *testControl {
	return &testControl{revoked: map[string]bool{}, usage: map[string]*Usage{}, refs: map[string]int{}}
}

func (c *testControl) Revoked(username, userID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revoked[username] || c.revoked[userID]
}

func (c *testControl) usageOf(userID string) *Usage {
	u := c.usage[userID]
	if u == nil {
		u = &Usage{}
		u.SetLimit(c.budget)
		c.usage[userID] = u
	}
	return u
}

// setBudget sets the limit for users from now on and for those already counted (an
// Allocate the harness made at start may have counted one).
func (c *testControl) setBudget(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget = n
	for _, u := range c.usage {
		u.SetLimit(n)
	}
}

func (c *testControl) usageFor(userID string) *Usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usageOf(userID)
}

func (c *testControl) OverBudget(userID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.usageOf(userID).allow()
}

func (c *testControl) AcquireUsage(userID string) *Usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refs[userID]++
	c.acquired++
	return c.usageOf(userID)
}

func (c *testControl) ReleaseUsage(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refs[userID]--
}

func (c *testControl) Refused(r Refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused = append(c.refused, r)
}

func (c *testControl) AllocationCreated(a AllocationInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created = append(c.created, a)
}

func (c *testControl) AllocationEnded(e AllocationEnd) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = append(c.ended, e)
}

func (c *testControl) reasons() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.refused {
		out = append(out, r.Reason)
	}
	return out
}

func (c *testControl) endedOf(id string) (AllocationEnd, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.ended {
		if e.ID == id {
			return e, true
		}
	}
	return AllocationEnd{}, false
}

// controlled is a server with a testControl, logging into a buffer.
func controlled(t *testing.T, mutate func(*config.Config)) (*testServer, *testControl, *syncBuffer) {
	t.Helper()
	ctl := newTestControl()
	var log syncBuffer
	s := startServerControl(t, func(c *config.Config) {
		allowLoopback(c)
		if mutate != nil {
			mutate(c)
		}
	}, slog.New(slog.NewTextHandler(&log, nil)), ctl)
	return s, ctl, &log
}

// TestControlListAndEnd: a live allocation is listed with its user, credentials,
// addresses, lifetime, permissions, channels and counts; ending it closes its relay
// socket, the client's next request gets 437, and the allocation log and the control
// say reason=admin.
func TestControlListAndEnd(t *testing.T) {
	s, ctl, log := controlled(t, nil)
	cs := bindChannel(t, s, "udp")
	if got := cs.echo(t, []byte("hello")); string(got) != "hello" {
		t.Fatalf("echo: %q", got)
	}
	list := s.Allocations("")
	if len(list) != 1 {
		t.Fatalf("Allocations() = %+v, want one", list)
	}
	a := list[0]
	if a.User != "fast" || a.Username != cs.user || a.Transport != "udp" || a.Client != cs.conn.LocalAddr().String() ||
		a.Permissions != 1 || a.Channels != 1 || a.ExpiresCredential == nil || len(a.ID) != 16 {
		t.Errorf("listed %+v", a)
	}
	if a.LifetimeLeftS < 590 || a.LifetimeLeftS > 600 {
		t.Errorf("lifetime_left_s = %d, want pion's default 600 granted just now", a.LifetimeLeftS)
	}
	waitFor(t, "the echo counted", func() bool {
		a = s.Allocations("fast")[0]
		return a.BytesClientToPeer == 5 && a.BytesPeerToClient == 5 && a.PacketsClientToPeer == 1 && a.PacketsPeerToClient == 1
	})
	if other := s.Allocations("someone-else"); len(other) != 0 {
		t.Errorf("Allocations(someone-else) = %+v", other)
	}
	if len(ctl.created) != 1 || ctl.created[0].ID != a.ID {
		t.Errorf("AllocationCreated calls: %+v", ctl.created)
	}

	if s.EndAllocation("0000000000000000", EndAdmin) {
		t.Error("ended an allocation that does not exist")
	}
	if !s.EndAllocation(a.ID, EndAdmin) {
		t.Fatal("EndAllocation found nothing")
	}
	waitFor(t, "the allocation to go", func() bool { return s.Gone(a.ID) })
	if r := cs.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest)); errorCode(r) != 437 {
		t.Errorf("Refresh after the end: %d, want 437", errorCode(r))
	}
	if got := cs.echo(t, []byte("gone")); got != nil {
		t.Errorf("ChannelData relayed after the end: %q", got)
	}
	e, ok := ctl.endedOf(a.ID)
	if !ok || e.Reason != EndAdmin || e.User != "fast" || e.BytesClientToPeer != 5 {
		t.Errorf("AllocationEnded: %+v (%v)", e, ok)
	}
	if !strings.Contains(log.String(), `msg="allocation ended" id=`+a.ID) || !strings.Contains(log.String(), "reason=admin") {
		t.Errorf("allocation log:\n%s", log)
	}
	if ctl.refs["fast"] != 0 || ctl.acquired != 1 {
		t.Errorf("usage acquired %d times, %d still held", ctl.acquired, ctl.refs["fast"])
	}
}

// TestControlRevoked: revoked credentials get 401 on Allocate, and on requests for an
// allocation made before; the refusal is reported as revoked.
func TestControlRevoked(t *testing.T) {
	s, ctl, _ := controlled(t, nil)
	user, pass := s.creds(t, "mallory")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	sess, r := c.allocate(user, pass)
	if errorCode(r) != 0 {
		t.Fatalf("allocate: %d", errorCode(r))
	}
	ctl.mu.Lock()
	ctl.revoked["mallory"] = true
	ctl.mu.Unlock()
	if r := sess.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest)); errorCode(r) != 401 {
		t.Errorf("Refresh with revoked credentials: %d, want 401", errorCode(r))
	}
	c2 := dialRaw(t, "udp", s.addr("udp"), nil)
	if _, r := c2.allocate(user, pass); errorCode(r) != 401 {
		t.Errorf("Allocate with revoked credentials: %d, want 401", errorCode(r))
	}
	if got := ctl.reasons(); len(got) != 2 || got[0] != ReasonRevoked || got[1] != ReasonRevoked {
		t.Errorf("refusals %q, want two revoked", got)
	}
	if r := ctl.refused[1]; r.User != "mallory" || r.Username != user || r.Method != "allocate" || r.Source != c2.conn.LocalAddr().String() {
		t.Errorf("refusal %+v", r)
	}
	if n := testutil.ToFloat64(s.metrics.AuthFailures.WithLabelValues(ReasonRevoked)); n != 2 {
		t.Errorf("relay_turn_auth_failures_total{reason=revoked} = %v, want 2", n)
	}
	n := s.EndAllocations(func(a *AllocationInfo) bool { return a.User == "mallory" }, EndRevoked)
	if n != 1 {
		t.Fatalf("EndAllocations ended %d, want 1", n)
	}
	waitFor(t, "mallory's allocation to end", func() bool { return len(s.Allocations("mallory")) == 0 })
}

// TestControlRefusals: each kind of refusal reaches the control with its reason.
func TestControlRefusals(t *testing.T) {
	s, ctl, _ := controlled(t, func(c *config.Config) { c.Limits.UserAllocations = 1 })
	now := time.Now().Unix()
	cases := []struct {
		username, password, want string
	}{
		{itoa(now-10) + ":old", "x", "expired"},
		{itoa(now+int64(48*time.Hour/time.Second)) + ":future", "x", "too_far_future"},
		{itoa(now+600) + ":guess", "wrong", "bad_password"},
		{"no-such-user", "x", "malformed"},
	}
	for _, tc := range cases {
		c := dialRaw(t, "udp", s.addr("udp"), nil)
		if _, r := c.allocate(tc.username, tc.password); errorCode(r) != 401 {
			t.Errorf("%s: %d, want 401", tc.want, errorCode(r))
		}
	}
	user, pass := s.creds(t, "one")
	if _, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(user, pass); errorCode(r) != 0 {
		t.Fatalf("first allocation: %d", errorCode(r))
	}
	if _, r := dialRaw(t, "udp", s.addr("udp"), nil).allocate(user, pass); errorCode(r) != 486 {
		t.Errorf("second allocation over user_allocations: %d, want 486", errorCode(r))
	}
	got := ctl.reasons()
	want := []string{"expired", "too_far_future", "bad_password", "malformed", ReasonQuota}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("refusals %q, want %q", got, want)
	}
	if ctl.refused[0].User != "old" || ctl.refused[4].User != "one" {
		t.Errorf("user ids: %q, %q", ctl.refused[0].User, ctl.refused[4].User)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestControlBudget: a user whose Usage reaches its limit relays nothing more, either
// way (dropped and counted as budget), gets 486 for a new Allocate, and the allocation
// log says how much was dropped.
func TestControlBudget(t *testing.T) {
	s, ctl, log := controlled(t, nil)
	ctl.setBudget(3000)
	cs := bindChannel(t, s, "udp")
	payload := make([]byte, 1000)
	relayed := 0
	for i := 0; i < 3; i++ {
		if got := cs.echo(t, payload); got != nil {
			relayed++
		}
	}
	// 1000 bytes each way per echo: the first echo comes back (2000 bytes); the second
	// reaches the peer (3000) and its answer is dropped; the third is dropped on its
	// way to the peer.
	if relayed != 1 {
		t.Errorf("%d echoes came back, want 1 before the budget of 3000 bytes ran out", relayed)
	}
	u := ctl.usageFor("fast")
	if u.Total() != 3000 {
		t.Errorf("usage %d bytes, want 3000", u.Total())
	}
	if n := testutil.ToFloat64(s.metrics.Dropped.WithLabelValues(dropBudget)); n != 2 {
		t.Errorf("relay_turn_dropped_total{reason=budget} = %v, want 2", n)
	}
	user, pass := s.creds(t, "fast")
	c := dialRaw(t, "udp", s.addr("udp"), nil)
	_, r := c.allocate(user, pass)
	var ec stun.ErrorCodeAttribute
	if errorCode(r) != 486 || ec.GetFrom(r) != nil || !strings.Contains(string(ec.Reason), "byte budget") {
		t.Errorf("Allocate over the budget: %d %q, want 486 naming the byte budget", errorCode(r), ec.Reason)
	}
	if got := ctl.reasons(); len(got) != 1 || got[0] != ReasonOverBudget {
		t.Errorf("refusals %q, want over_budget", got)
	}
	u.SetOthers(-u.Local()) // as if a new day had begun
	if got := cs.echo(t, payload); string(got) != string(payload) {
		t.Fatal("no echo after the budget was reset")
	}
	u.SetOthers(0)
	for _, a := range s.Allocations("fast") {
		s.EndAllocation(a.ID, EndAdmin)
	}
	waitFor(t, "the end logged", func() bool { return strings.Contains(log.String(), "dropped_budget=2") })
}

// withBudget gives rc's allocation a Usage with a budget it never reaches.
func withBudget(rc *relayConn) *Usage {
	u := &Usage{}
	u.SetLimit(1 << 62)
	rc.alloc.Load().usage = u
	return u
}

// TestFastPathBudgetAllocationFree: counting a user's bytes against its budget adds no
// allocation per packet, either way.
func TestFastPathBudgetAllocationFree(t *testing.T) {
	g, cd, from, rc, peer := fastPathFixture(t)
	u := withBudget(rc)
	rep := &nopReplier{}
	buf := make([]byte, relayBufSize)
	if n := testing.AllocsPerRun(500, func() { g.inspect(cd, from, rep) }); n != 0 {
		t.Errorf("client→peer ChannelData with a budget allocates %v times per packet", n)
	}
	if n := testing.AllocsPerRun(500, func() { rc.fromPeer(buf, 160, peer, nil) }); n != 0 {
		t.Errorf("peer→client ChannelData with a budget allocates %v times per packet", n)
	}
	if u.Local() == 0 {
		t.Error("nothing counted")
	}
}

// BenchmarkChannelDataBudget is BenchmarkChannelDataClientToPeer with a byte budget to
// check and count against.
func BenchmarkChannelDataBudget(b *testing.B) {
	g, cd, from, rc, _ := fastPathFixture(b)
	withBudget(rc)
	rep := &nopReplier{}
	b.ReportAllocs()
	b.SetBytes(160)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g.inspect(cd, from, rep)
	}
}

// TestControlRates: the rate sampler works out each allocation's current rate.
func TestControlRates(t *testing.T) {
	s, _, _ := controlled(t, nil)
	cs := bindChannel(t, s, "udp")
	for i := 0; i < 20; i++ {
		cs.echo(t, make([]byte, 1000))
	}
	s.sampleRates(time.Now()) // since the allocation was made
	a := s.Allocations("fast")[0]
	if a.BPSClientToPeer == 0 || a.BPSPeerToClient == 0 {
		t.Errorf("rates %d / %d bit/s after 20 kB each way", a.BPSClientToPeer, a.BPSPeerToClient)
	}
	s.sampleRates(time.Now().Add(time.Second)) // a second with nothing relayed
	if a := s.Allocations("fast")[0]; a.BPSClientToPeer != 0 {
		t.Errorf("rate %d bit/s after a quiet second", a.BPSClientToPeer)
	}
}

// BenchmarkChannelDataBudgetPeerToClient is BenchmarkChannelDataPeerToClient with a
// byte budget to check and count against.
func BenchmarkChannelDataBudgetPeerToClient(b *testing.B) {
	_, _, _, rc, peer := fastPathFixture(b)
	withBudget(rc)
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
