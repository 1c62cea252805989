package signaling

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/wsconn"
)

// userOf is the user id in a TURN REST username, <expiry>:<user id>.
func userOf(t *testing.T, username string) string {
	t.Helper()
	_, user, ok := strings.Cut(username, ":")
	if !ok {
		t.Fatalf("username %q is not <expiry>:<user id>", username)
	}
	return user
}

// TestSecurity2ICEUsernameNeedsToken: without a valid bearer token nobody gets
// credentials for a user id of their choosing (which would let them fill that user's
// user_allocations and lock the user out); each call gets a fresh random id. With a
// token the caller (a backend) names the user.
func TestSecurity2ICEUsernameNeedsToken(t *testing.T) {
	t.Run("no api_tokens", func(t *testing.T) {
		s := startSignal(t, nil)
		seen := map[string]bool{}
		for range 3 {
			var rest struct{ Username, Password string }
			if resp := iceGet(t, s.base+"ice?service=turn&username=victim", nil, &rest); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			u := userOf(t, rest.Username)
			if u == "victim" || !strings.HasPrefix(u, "web-") || seen[u] {
				t.Errorf("anonymous call asking for victim got user %q (seen before: %v)", u, seen[u])
			}
			seen[u] = true
			var cfg rtcConfig
			iceGet(t, s.base+"ice?username=victim", nil, &cfg)
			if u := userOf(t, cfg.ICEServers[1].Username); u == "victim" {
				t.Errorf("RTCConfiguration form minted credentials for victim")
			}
		}
		// A name that would be refused is ignored too: it is not the caller's to give.
		if resp := iceGet(t, s.base+"ice?username=a%20b", nil, nil); resp.StatusCode != 200 {
			t.Errorf("ignored bad username: %d, want 200", resp.StatusCode)
		}
	})
	t.Run("api_tokens", func(t *testing.T) {
		s := startSignal(t, func(c *config.Signal) { c.APITokens = []string{"backend-token"} })
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": "backend-token"}} {
			var e map[string]string
			if resp := iceGet(t, s.base+"ice?service=turn&username=victim", hdr, &e); resp.StatusCode != 401 || e["error"] == "" {
				t.Errorf("%v: %d %v, want 401 and no credentials", hdr, resp.StatusCode, e)
			}
		}
		var rest struct{ Username string }
		iceGet(t, s.base+"ice?service=turn&username=victim", map[string]string{"Authorization": "Bearer backend-token"}, &rest)
		if u := userOf(t, rest.Username); u != "victim" {
			t.Errorf("with a valid token: user %q, want victim", u)
		}
		iceGet(t, s.base+"ice?service=turn", map[string]string{"Authorization": "Bearer backend-token"}, &rest)
		if u := userOf(t, rest.Username); !strings.HasPrefix(u, "web-") {
			t.Errorf("with a token and no username: user %q, want a fresh web- id", u)
		}
	})
}

// dialFrom connects as id from a local address of the loopback network (127.0.0.x),
// so that one test can play several source IPs.
func (s *testSignal) dialFrom(t *testing.T, local, id string) *client {
	t.Helper()
	d := &websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return nd.Dial(network, addr)
	}}
	return s.dialWith(t, s.wsURL("key=peerjs&token=t&id="+id), nil, nil, d)
}

// heldFor walks what the registry holds, independently of its byte counters: the
// messages and their bytes, over all ids.
func heldFor(r *memoryRegistry) (msgs, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, hq := range r.queues {
		for _, m := range hq.msgs {
			msgs++
			bytes += len(m.Data)
		}
	}
	return msgs, bytes
}

// rss is this process's resident set in bytes, after returning what the heap freed.
func rss(t *testing.T) int64 {
	t.Helper()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// heapLive is the heap in use after a full collection.
func heapLive() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestSecurity3QueueBytesPerSource: 100 connections from one address send 64 KB
// messages to ids that never connect. What is held stays within that address's byte
// budget (max_queue_bytes_per_ip), not 100 x max_queue messages; the rest is refused
// and counted as queue_full; memory does not grow with what was sent.
func TestSecurity3QueueBytesPerSource(t *testing.T) {
	const conns, each = 100, 12
	s := startSignal(t, func(c *config.Signal) { c.ExpireTimeout = time.Minute })
	cfg := config.Default().Signal
	reg := s.reg.(*memoryRegistry)
	before, heapBefore := rss(t), heapLive()

	payload := strings.Repeat("x", 65000) // a message just under max_message_bytes
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = s.dialFrom(t, "127.0.0.2", fmt.Sprintf("flood%d", i))
		clients[i].expect("OPEN")
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				b, _ := json.Marshal(map[string]any{"type": "OFFER", "dst": fmt.Sprintf("ghost-%d-%d", i, j), "payload": payload})
				if c.ws.WriteMessage(websocket.TextMessage, b) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	rejected := s.metrics.SignalRejected.WithLabelValues("queue_full")
	// 75 MB through the frame reader: under the race detector on a busy machine that
	// takes longer than waitFor's deadline.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		held, _ := heldFor(reg)
		if held+int(testutil.ToFloat64(rejected)) == conns*each {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages held or refused after a minute", held+int(testutil.ToFloat64(rejected)), conns*each)
		}
	}
	held, bytes := heldFor(reg)
	total, fromSrc, _ := reg.queuedBytes(netip.MustParseAddr("127.0.0.2"), "")
	t.Logf("held %d messages, %d bytes (counted %d for the source, %d in total); %v refused",
		held, bytes, fromSrc, total, testutil.ToFloat64(rejected))
	if bytes > cfg.MaxQueueBytesPerIP || fromSrc > cfg.MaxQueueBytesPerIP || fromSrc < bytes || total != fromSrc {
		t.Errorf("one source holds %d bytes (counted %d, total %d), cap %d", bytes, fromSrc, total, cfg.MaxQueueBytesPerIP)
	}
	if held == 0 {
		t.Error("nothing held: the cap is to bound the queue, not to refuse everything")
	}
	// Without the caps this flood holds 78 MB. The live heap after a collection is
	// what the server keeps (plus the 200 sockets' buffers); RSS is bounded loosely, and
	// not under the race detector, whose shadow memory grows it too.
	heapGrew, rssGrew := heapLive()-heapBefore, rss(t)-before
	t.Logf("live heap grew by %.1f MiB, RSS by %.1f MiB", float64(heapGrew)/(1<<20), float64(rssGrew)/(1<<20))
	if heapGrew > 16<<20 {
		t.Errorf("live heap grew by %d MiB", heapGrew>>20)
	}
	if rssGrew > 48<<20 && !raceDetector {
		t.Errorf("RSS grew by %d MiB", rssGrew>>20)
	}
	// Draining gives the bytes back to the source's budget.
	for i := range conns {
		for j := range each {
			reg.Drain(fmt.Sprintf("ghost-%d-%d", i, j))
		}
	}
	if total, fromSrc, _ := reg.queuedBytes(netip.MustParseAddr("127.0.0.2"), ""); total != 0 || fromSrc != 0 {
		t.Errorf("after draining: %d bytes counted in total, %d for the source", total, fromSrc)
	}
}

// TestSecurity3SixSourcesCannotCrowdOutSeventh: small messages from six addresses
// fill their own budgets, not the total, so a seventh address still gets its messages
// queued for a peer that connects a moment later.
func TestSecurity3SixSourcesCannotCrowdOutSeventh(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) {
		c.ExpireTimeout = time.Minute
		c.MessagesPerSecond = 100000
		c.MaxQueueBytes = 60000       // six sources could fill this many times over...
		c.MaxQueueBytesPerIP = 8000   // ...but each gets an eighth of it at most
		c.MaxQueueBytesPerPeer = 4000 // and one absent id half of that
	})
	reg := s.reg.(*memoryRegistry)
	const perSource = 400
	var wg sync.WaitGroup
	for n := 2; n <= 7; n++ {
		ip := fmt.Sprintf("127.0.0.%d", n)
		c := s.dialFrom(t, ip, "spam"+strconv.Itoa(n))
		c.expect("OPEN")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSource {
				b, _ := json.Marshal(map[string]any{"type": "CANDIDATE", "dst": fmt.Sprintf("nobody-%d", j%50), "payload": j})
				if c.ws.WriteMessage(websocket.TextMessage, b) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	rejected := s.metrics.SignalRejected.WithLabelValues("queue_full")
	waitFor(t, "the spam to be held or refused", func() bool {
		held, _ := heldFor(reg)
		return held+int(testutil.ToFloat64(rejected)) == 6*perSource
	})
	if testutil.ToFloat64(rejected) == 0 {
		t.Fatal("no spam refused: the test does not reach the caps")
	}
	for n := 2; n <= 7; n++ {
		if _, fromSrc, _ := reg.queuedBytes(netip.MustParseAddr(fmt.Sprintf("127.0.0.%d", n)), ""); fromSrc > 8000 {
			t.Errorf("127.0.0.%d holds %d bytes, over its cap", n, fromSrc)
		}
	}
	before := testutil.ToFloat64(rejected)
	legit := s.dialFrom(t, "127.0.0.8", "alice")
	legit.expect("OPEN")
	for i := range 3 {
		legit.send(map[string]any{"type": "OFFER", "dst": "bob", "payload": map[string]any{"sdp": "v=0", "n": i}})
	}
	waitFor(t, "alice's messages for bob to be queued", func() bool { return reg.queueLen("bob") == 3 })
	if got := testutil.ToFloat64(rejected); got != before {
		t.Errorf("%v of the legitimate sender's messages refused", got-before)
	}
	bob := s.dialFrom(t, "127.0.0.8", "bob")
	bob.expect("OPEN")
	for range 3 {
		if m := bob.expect("OFFER"); m["src"] != "alice" {
			t.Errorf("bob got %v", m)
		}
	}
}

// outboxHeld is what p holds for its socket, counted from the frames themselves.
func outboxHeld(p *peer) int { return p.c.Held() }

// TestSecurity3OutboxBytes: a receiver that stops reading holds at most
// wsconn.MaxOutboxBytes (not 256 frames of up to 64 KB) before it is dropped as a slow
// consumer, and its bytes leave the server-wide count when it goes.
func TestSecurity3OutboxBytes(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.MessagesPerSecond = 100000 })
	sender := s.dial(t, "sender", "t")
	sender.expect("OPEN")
	s.dialStalled(t, "stuck")
	p := s.reg.Lookup("stuck").(*peer)

	// Watch the outbox as it fills, until the peer is gone.
	most, done := 0, make(chan struct{})
	go func() {
		defer close(done)
		for !p.c.Closed() {
			most = max(most, outboxHeld(p))
			runtime.Gosched()
		}
	}()
	msg, _ := json.Marshal(map[string]any{"type": "CANDIDATE", "dst": "stuck", "payload": strings.Repeat("z", 60000)})
	sent := 0
	for ; sent < 2000 && s.reg.Taken("stuck"); sent++ {
		if err := sender.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the slow consumer to be dropped", func() bool {
		return testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("slow_consumer")) >= 1 && !s.reg.Taken("stuck")
	})
	<-done
	t.Logf("the stalled receiver held at most %d KiB (%d messages of %d KiB sent)", most>>10, sent, len(msg)>>10)
	if most > wsconn.MaxOutboxBytes+len(msg) {
		t.Errorf("a stalled receiver held %d bytes, cap %d", most, wsconn.MaxOutboxBytes)
	}
	if m := sender.expect("LEAVE"); m["src"] != "stuck" {
		t.Errorf("LEAVE %v", m)
	}
	if total, forIP := s.outboxes.Bytes(sourceKey(p.ip)); total != 0 || forIP != 0 {
		t.Errorf("after the drop %d bytes still counted (%d for its address)", total, forIP)
	}
}

// TestSecurity3OutboxBudgets: the outboxes of the peers at one address, and of all
// peers, are capped too, so many stalled peers cannot add up to unbounded memory.
func TestSecurity3OutboxBudgets(t *testing.T) {
	s := startSignal(t, nil)
	frame := make([]byte, 60000) // shared by every frame: the caps count, not allocate
	fill := func(ip string) (peers []*peer, bytes int) {
		for {
			p := newPeer(s.Server, nil, "x", "t", netip.MustParseAddr(ip)) // held: frames wait in the outbox
			n := 0
			for p.Send(frame) {
				n += len(frame)
			}
			if n > wsconn.MaxOutboxBytes {
				t.Fatalf("one peer took %d bytes", n)
			}
			peers = append(peers, p)
			bytes += n
			if n == 0 {
				return peers, bytes
			}
		}
	}
	one, bytes := fill("192.0.2.1")
	if bytes > wsconn.MaxOutboxBytesPerIP || bytes < wsconn.MaxOutboxBytesPerIP-len(frame) {
		t.Errorf("one address's peers hold %d bytes, want about %d", bytes, wsconn.MaxOutboxBytesPerIP)
	}
	// The budget is the address's, not the peer's: a new peer at the address gets nothing...
	if p := newPeer(s.Server, nil, "y", "t", netip.MustParseAddr("192.0.2.1")); p.Send(frame) {
		t.Error("a fresh peer at a full address took a frame")
	}
	// ...nor does one in the same IPv6 /64 as a full one.
	six, _ := fill("2001:db8::1")
	if p := newPeer(s.Server, nil, "y", "t", netip.MustParseAddr("2001:db8::ffff")); p.Send(frame) {
		t.Error("a peer in a full /64 took a frame")
	}
	var all []*peer
	all = append(all, one...)
	all = append(all, six...)
	for i := 2; ; i++ {
		peers, n := fill(fmt.Sprintf("192.0.2.%d", i))
		all = append(all, peers...)
		if n == 0 {
			break
		}
	}
	if total, _ := s.outboxes.Bytes(netip.Addr{}); total > wsconn.MaxOutboxBytesTotal || total < wsconn.MaxOutboxBytesTotal-len(frame) {
		t.Errorf("all outboxes hold %d bytes, want about %d", total, wsconn.MaxOutboxBytesTotal)
	}
	for _, p := range all {
		p.Close()
	}
	if total, _ := s.outboxes.Bytes(netip.Addr{}); total != 0 {
		t.Errorf("%d bytes still counted after every peer closed", total)
	}
}
