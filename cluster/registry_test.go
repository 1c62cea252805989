package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/skipnote"
	"github.com/relayproject/relay/signaling"
)

func TestMain(m *testing.M) {
	// go-redis's pool reaper and pub/sub reconnect goroutines end with Close; anything
	// else left running is a leak.
	goleak.VerifyTestMain(m)
}

// redisServer is a redis-server started for one test on a free loopback port.
type redisServer struct {
	t    testing.TB
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		skipnote.Skip(t, "redis-server not found", "apt-get install redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &redisServer{t: t, addr: addr, dir: t.TempDir()}
	s.start(bin)
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) start(bin string) {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	if os.Getenv("REDIS_VERBOSE") == "" {
		s.cmd.Stdout, s.cmd.Stderr = nil, nil
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not listen on %s: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func (s *redisServer) restart() {
	s.stop()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

// testPeer records what it is sent.
type testPeer struct {
	mu     sync.Mutex
	got    []string
	closed bool
}

func (p *testPeer) Send(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.got = append(p.got, string(b))
	return true
}

func (p *testPeer) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

func (p *testPeer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *testPeer) messages() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

var testLimits = signaling.Limits{Peers: 100, QueuePerID: 4, QueueBytes: 1 << 20, BytesPerIP: 4096, BytesPerPeer: 4096}

// node starts a Registry for node name against s, closed at the end of the test.
func node(t testing.TB, s *redisServer, name string, ttl time.Duration) *Registry {
	t.Helper()
	return nodeLog(t, s, name, ttl, nil)
}

// nodeLog is node logging to log (nil: slog's default).
func nodeLog(t testing.TB, s *redisServer, name string, ttl time.Duration, log *slog.Logger) *Registry {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
	r, err := New(Options{Client: rdb, Node: name, Limits: testLimits, Prefix: "test:", LeaseTTL: ttl, OpTimeout: 500 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); rdb.Close() })
	waitFor(t, "subscription of "+name, func() bool { return subscribed(t, s, "test:node:"+name) })
	return r
}

func subscribed(t testing.TB, s *redisServer, channel string) bool {
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	ctx, cancel := (&Registry{timeout: time.Second}).ctx()
	defer cancel()
	n, err := c.PubSubNumSub(ctx, channel).Result()
	return err == nil && n[channel] > 0
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 15*time.Second, what, cond)
}

func TestClusterIDsUniqueAcrossNodes(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 3*time.Second), node(t, s, "n2", 3*time.Second)
	a := &testPeer{}
	if _, err := n1.Register("alice", "tok-a", a); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Register("alice", "other", &testPeer{}); err != signaling.ErrIDTaken {
		t.Fatalf("second registration with another token on node 2: %v, want ErrIDTaken", err)
	}
	if !n2.Taken("alice") || n2.Taken("bob") {
		t.Errorf("Taken on node 2 does not see node 1's ids")
	}
	// The same token takes over on another node; node 1's socket is closed.
	a2 := &testPeer{}
	if old, err := n2.Register("alice", "tok-a", a2); err != nil || old != nil {
		t.Fatalf("takeover on node 2: %v %v", old, err)
	}
	waitFor(t, "node 1 closing the taken-over peer", a.isClosed)
	if n1.Unregister("alice", a) != true {
		t.Errorf("node 1 should still forget its own closed peer")
	}
	if !n1.Taken("alice") {
		t.Errorf("node 1's unregister freed node 2's lease")
	}
	if n2.Unregister("alice", a2) != true || n1.Taken("alice") {
		t.Errorf("alice not freed fleet-wide after leaving")
	}
}

func TestClusterRoutesAcrossNodes(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 3*time.Second), node(t, s, "n2", 3*time.Second)
	a, b := &testPeer{}, &testPeer{}
	n1.Register("a", "ta", a)
	n2.Register("b", "tb", b)
	dst := n1.Lookup("b")
	if dst == nil {
		t.Fatal("node 1 cannot find b on node 2")
	}
	offer := `{"type":"OFFER","src":"a","dst":"b","payload":{"sdp":"x"}}`
	if !dst.Send([]byte(offer)) {
		t.Fatal("send across nodes failed")
	}
	waitFor(t, "the OFFER on node 2", func() bool { return len(b.messages()) == 1 })
	if got := b.messages()[0]; got != offer {
		t.Errorf("b got %q", got)
	}
	// An id is framed by its length: an id holding NUL cannot make its node deliver
	// the rest of the frame to another peer as a message.
	evil := &testPeer{}
	n2.Register("b\x00x", "te", evil)
	if !n1.Lookup("b\x00x").Send([]byte(`{"type":"OFFER","src":"forged"}`)) {
		t.Fatal("send to an id with NUL failed")
	}
	waitFor(t, "the message for the NUL id", func() bool { return len(evil.messages()) == 1 })
	if len(b.messages()) != 1 {
		t.Errorf("b got the NUL id's message: %q", b.messages())
	}
	// Same node: the peer itself, no Redis.
	if n1.Lookup("a") != signaling.Peer(a) {
		t.Errorf("local lookup is not the local peer")
	}
	// Absent id: queued fleet-wide, drained by whichever node it registers on.
	q := signaling.Queued{Src: "a", Dst: "c", Data: []byte(`{"type":"OFFER","src":"a","dst":"c"}`), At: time.Now(), From: netip.MustParseAddr("192.0.2.1")}
	if n1.Lookup("c") != nil || !n1.Enqueue(q) {
		t.Fatal("enqueue for absent c failed")
	}
	got := n2.Drain("c")
	if len(got) != 1 || got[0].Src != "a" || string(got[0].Data) != string(q.Data) || got[0].From != q.From {
		t.Fatalf("drained %+v", got)
	}
	if len(n1.Drain("c")) != 0 {
		t.Errorf("drained twice")
	}
}

func TestClusterQueueCapsAndExpire(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 3*time.Second), node(t, s, "n2", 3*time.Second)
	from := netip.MustParseAddr("2001:db8::1")
	old := time.Now().Add(-time.Minute)
	msg := func(dst string, size int, at time.Time) signaling.Queued {
		return signaling.Queued{Src: "s", Dst: dst, Data: []byte(strings.Repeat("x", size)), At: at, From: from}
	}
	// Per id message cap (4), counted fleet-wide over both nodes.
	for i := range 4 {
		n := []*Registry{n1, n2}[i%2]
		if !n.Enqueue(msg("d", 10, old)) {
			t.Fatalf("message %d refused", i)
		}
	}
	if n1.Enqueue(msg("d", 10, old)) {
		t.Errorf("fifth message for d held; cap is 4")
	}
	// A reload raising max_queue applies at once.
	l := testLimits
	l.QueuePerID = 5
	n1.SetLimits(l)
	if !n1.Enqueue(msg("d", 10, old)) {
		t.Errorf("fifth message for d refused after raising the cap to 5")
	}
	n1.SetLimits(testLimits)
	// Per source bytes (4096) over ids: the same /64 counts together.
	other := netip.MustParseAddr("2001:db8::2")
	q := msg("e", 3500, time.Now())
	q.From = other
	if n2.Enqueue(q) {
		t.Errorf("3500 more bytes from the same /64 held over its 4096 budget")
	}
	if exp := n2.Expire(time.Now().Add(-time.Second)); len(exp) != 5 {
		t.Fatalf("expired %d, want 5", len(exp))
	}
	if !n2.Enqueue(q) {
		t.Errorf("budget not given back by Expire")
	}
	if exp := n1.Expire(time.Now().Add(-time.Second)); len(exp) != 0 {
		t.Errorf("fresh message expired: %+v", exp)
	}
	if len(n1.Drain("e")) != 1 {
		t.Errorf("fresh message not drained")
	}
}

// A node that stops refreshing (killed) frees its ids within the lease TTL.
func TestClusterLeaseExpiresWhenNodeStops(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 900*time.Millisecond), node(t, s, "n2", 900*time.Millisecond)
	n1.Register("x", "t1", &testPeer{})
	// Refreshed while connected: still taken well after one TTL.
	time.Sleep(2 * time.Second) // lets the lease outlive its TTL twice; the check is the assertion below
	if _, err := n2.Register("x", "t2", &testPeer{}); err != signaling.ErrIDTaken {
		t.Fatalf("lease not kept alive by its node: %v", err)
	}
	n1.cancel() // the node dies: no more refreshes, no release
	n1.done.Wait()
	start := time.Now()
	waitFor(t, "x to be free", func() bool {
		_, err := n2.Register("x", "t2", &testPeer{})
		return err == nil
	})
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("id freed after %v, TTL is 900ms", d)
	}
}

// Redis stopped: same-node routing goes on, cross-node sends fail at once, absent peers
// get EXPIRE, one log line; restarted: leases come back without a restart.
func TestClusterRedisStoppedAndRestarted(t *testing.T) {
	s := startRedis(t)
	var logs strings.Builder
	var logMu sync.Mutex
	n1, n2 := nodeLog(t, s, "n1", 900*time.Millisecond, slogTo(&logs, &logMu)), node(t, s, "n2", 900*time.Millisecond)
	a, b, c := &testPeer{}, &testPeer{}, &testPeer{}
	n1.Register("a", "ta", a)
	n1.Register("b", "tb", b)
	n2.Register("c", "tc", c)
	remote := n1.Lookup("c")

	s.stop()
	if n1.Lookup("b") != signaling.Peer(b) || !b.Send([]byte("hi")) {
		t.Fatal("same-node routing needs Redis")
	}
	// Sends never wait on the dead backend; what was accepted before the node noticed
	// comes back to its sender as EXPIRE, and after that sends fail at once.
	offer := []byte(`{"type":"OFFER","src":"a","dst":"c","payload":{}}`)
	for range 20 {
		start := time.Now()
		remote.Send(offer)
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("cross-node send took %v with Redis down", d)
		}
	}
	waitFor(t, "node 1 to notice the backend is down", func() bool { return !n1.BackendUp() })
	if remote.Send(offer) {
		t.Fatal("cross-node send reported success with Redis down")
	}
	expire := `{"type":"EXPIRE","src":"c","dst":"a"}`
	waitFor(t, "the sender to get EXPIRE for what was in flight", func() bool { return slices.Contains(a.messages(), expire) })
	if n1.Enqueue(signaling.Queued{Src: "a", Dst: "zz", Data: []byte("m"), At: time.Now()}) {
		t.Fatal("held a message with Redis down")
	}
	if got := a.messages(); !slices.Contains(got, `{"type":"EXPIRE","src":"zz","dst":"a"}`) || slices.ContainsFunc(got, func(m string) bool { return m != expire && !strings.Contains(m, `"zz"`) }) {
		t.Errorf("sender got %q, want EXPIREs only", got)
	}
	if n1.BackendUp() {
		t.Errorf("backend reported up")
	}
	// A new peer on node 1 meanwhile registers locally.
	d := &testPeer{}
	if _, err := n1.Register("d", "td", d); err != nil {
		t.Fatalf("register during outage: %v", err)
	}

	s.restart() // empty: every lease is gone
	waitFor(t, "node 1's leases back in Redis", func() bool { return n2.Taken("a") && n2.Taken("d") })
	waitFor(t, "node 2's lease back", func() bool { return n1.Taken("c") })
	waitFor(t, "node 2 subscribed again", func() bool { return subscribed(t, s, "test:node:n2") })
	if !n1.BackendUp() {
		t.Errorf("backend not reported up again")
	}
	waitFor(t, "cross-node routing again", func() bool { return n1.Lookup("c") != nil && n1.Lookup("c").Send([]byte("back")) })
	waitFor(t, "c getting the message", func() bool {
		m := c.messages()
		return len(m) > 0 && m[len(m)-1] == "back"
	})
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if strings.Count(out, "cluster backend unreachable") != 1 || strings.Count(out, "reachable again") != 1 {
		t.Errorf("want one line each for down and up, got:\n%s", out)
	}
	if strings.Contains(out, "password") {
		t.Errorf("log mentions a password:\n%s", out)
	}
}

func TestClusterTakeoverAfterOutageClosesLoser(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 900*time.Millisecond), node(t, s, "n2", 900*time.Millisecond)
	s.stop()
	p1 := &testPeer{}
	n1.Register("x", "t1", p1) // local only while down
	s.restart()
	p2 := &testPeer{}
	waitFor(t, "node 2 to claim x first or see it taken", func() bool {
		_, err := n2.Register("x", "t2", p2)
		return err == nil || err == signaling.ErrIDTaken
	})
	// Exactly one of the two keeps x.
	waitFor(t, "one owner", func() bool {
		return n1.Taken("x") && (p1.isClosed() != n2local(n2, "x"))
	})
}

func n2local(r *Registry, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.local[id]
	return ok
}

var _ = fmt.Sprint
var _ = filepath.Join

// A Redis that accepts connections and never answers (a black hole, as behind a dead
// route) holds no peer up: after the first call times out, the per-message paths do
// not wait on it.
func TestClusterBlackHoledRedisFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: l.Addr().String(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
	r, err := New(Options{Client: rdb, Node: "n1", Limits: testLimits, Prefix: "test:", LeaseTTL: 900 * time.Millisecond, OpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		r.Close()
		rdb.Close()
		l.Close()
		<-accepted
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	a := &testPeer{}
	if _, err := r.Register("a", "ta", a); err != nil {
		t.Fatalf("register with a black-holed backend: %v", err)
	}
	start := time.Now()
	for range 50 {
		if r.Lookup("zz") != nil {
			t.Fatal("found a peer in a black hole")
		}
		r.Enqueue(signaling.Queued{Src: "a", Dst: "zz", Data: []byte("m"), At: time.Now()})
		if _, err := r.Register("b", "tb", &testPeer{}); err != nil {
			t.Fatal(err)
		}
		r.Unregister("b", nil)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("50 rounds of lookups, enqueues and registrations took %v with Redis black-holed", d)
	}
	if n := len(a.messages()); n != 50 {
		t.Errorf("sender got %d EXPIREs for 50 messages", n)
	}
}

// A sender's node caches where an id is; when the peer has moved to another node since,
// the node it was on forwards the message there.
func TestClusterStaleOwnerForwarded(t *testing.T) {
	s := startRedis(t)
	n1, n2, n3 := node(t, s, "n1", 3*time.Second), node(t, s, "n2", 3*time.Second), node(t, s, "n3", 3*time.Second)
	b := &testPeer{}
	n2.Register("b", "tb", b)
	if !n1.Lookup("b").Send([]byte("one")) {
		t.Fatal("send failed")
	}
	waitFor(t, "b on node 2 getting one", func() bool { return len(b.messages()) == 1 })
	b3 := &testPeer{}
	if _, err := n3.Register("b", "tb", b3); err != nil { // the same peer reconnects on node 3
		t.Fatal(err)
	}
	waitFor(t, "node 2 closing b", b.isClosed)
	n2.Unregister("b", b)
	if node, ok := n1.cached("b"); !ok || node != "n2" {
		t.Fatalf("node 1's cache: %q %v, want n2 (the test needs a stale entry)", node, ok)
	}
	if !n1.Lookup("b").Send([]byte("two")) {
		t.Fatal("send to the stale owner failed")
	}
	waitFor(t, "b on node 3 getting two", func() bool { m := b3.messages(); return len(m) == 1 && m[0] == "two" })
	if got := n2.Drain("b"); len(got) != 0 {
		t.Errorf("message held instead of forwarded: %+v", got)
	}
}

// The owner cache points at a node that has stopped, and the peer is on another node
// now: nothing subscribes to the old node's channel, so the message is routed to the
// id's node as it is now, not held for a peer that is live elsewhere.
func TestClusterStaleOwnerGone(t *testing.T) {
	s := startRedis(t)
	n1, n3 := node(t, s, "n1", 3*time.Second), node(t, s, "n3", 3*time.Second)
	n2 := node(t, s, "n2", 3*time.Second)
	b := &testPeer{}
	n2.Register("b", "tb", b)
	if !n1.Lookup("b").Send([]byte("one")) {
		t.Fatal("send failed")
	}
	waitFor(t, "b on node 2 getting one", func() bool { return len(b.messages()) == 1 })
	n2.Close() // its leases go with it
	b3 := &testPeer{}
	if _, err := n3.Register("b", "tb", b3); err != nil {
		t.Fatal(err)
	}
	if node, ok := n1.cached("b"); !ok || node != "n2" {
		t.Fatalf("node 1's cache: %q %v, want n2 (the test needs a stale entry)", node, ok)
	}
	if !n1.Lookup("b").Send([]byte("two")) {
		t.Fatal("send to the stale owner failed")
	}
	waitFor(t, "b on node 3 getting two", func() bool { m := b3.messages(); return len(m) == 1 && m[0] == "two" })
	if got := n1.Drain("b"); len(got) != 0 {
		t.Errorf("message held instead of routed: %+v", got)
	}
}

// A peer dropped because it could not keep up with what arrives from another node:
// the sender there is told it left, as a sender on the same node would be.
func TestClusterSlowRemotePeerLeaveToSender(t *testing.T) {
	s := startRedis(t)
	n1, n2 := node(t, s, "n1", 3*time.Second), node(t, s, "n2", 3*time.Second)
	a, b := &testPeer{}, &testPeer{}
	n1.Register("a", "ta", a)
	n2.Register("b", "tb", b)
	b.Close() // its outbox is full: Send says no
	if !n1.Lookup("b").Send([]byte(`{"type":"OFFER","src":"a","dst":"b","payload":{}}`)) {
		t.Fatal("send failed")
	}
	waitFor(t, "a getting LEAVE", func() bool {
		return slices.Contains(a.messages(), `{"type":"LEAVE","src":"b","dst":"a"}`)
	})
}
