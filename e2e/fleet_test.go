package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/internal/testcert"
)

// startRedisServer runs a redis-server on a free loopback port with nothing saved to
// disk, stopped when the test ends; it returns its redis:// URL.
func startRedisServer(t *testing.T) string { return newRedisProc(t).url }

// redisProc is a redis-server the test can stop and start again on the same port.
type redisProc struct {
	t        *testing.T
	bin, dir string
	addr     string
	url      string
	cmd      *exec.Cmd
	done     chan struct{}
}

func newRedisProc(t *testing.T) *redisProc {
	t.Helper()
	bin := need(t, "redis-server", "redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := &redisProc{t: t, bin: bin, dir: t.TempDir(), addr: addr, url: "redis://" + addr + "/0"}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisProc) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func(c *exec.Cmd) { _ = c.Wait(); close(done) }(r.cmd)
	r.done = done
	waitFor(r.t, "redis-server listening", func() bool {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (r *redisProc) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

type peerMsg struct {
	Type    string          `json:"type"`
	Src     string          `json:"src"`
	Dst     string          `json:"dst"`
	Payload json.RawMessage `json:"payload"`
}

func dialPeer(t *testing.T, p *relayProc, id, token string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.addr("signal")+"/peerjs?key=peerjs&id="+id+"&token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// openPeer is dialPeer for a peer that must get OPEN.
func openPeer(t *testing.T, p *relayProc, id, token string) *websocket.Conn {
	t.Helper()
	ws := dialPeer(t, p, id, token)
	if m := readPeer(t, ws); m.Type != "OPEN" {
		t.Fatalf("%s got %+v, want OPEN", id, m)
	}
	return ws
}

func readPeer(t *testing.T, ws *websocket.Conn) peerMsg {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m peerMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return m
}

// TestFleetTwoNodes: two relay processes sharing one redis-server. An id registered on
// node 1 is taken on node 2, and an OFFER from a peer on node 1 reaches a peer on node 2
// with src set by node 1.
func TestFleetTwoNodes(t *testing.T) {
	url := startRedisServer(t)
	n1 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n1\"\n"))
	n2 := startRelay(t, baseConfig("[cluster]\nredis = \""+url+"\"\nnode = \"n2\"\n"))
	n1.waitLog(`"msg":"fleet"`)

	a := openPeer(t, n1, "alice", "ta")
	dup := dialPeer(t, n2, "alice", "someone-else")
	if m := readPeer(t, dup); m.Type != "ID-TAKEN" {
		t.Fatalf("alice's id registered again on node 2: %+v", m)
	}
	b := openPeer(t, n2, "bob", "tb")
	offer := `{"type":"OFFER","dst":"bob","src":"mallory","payload":{"sdp":{"type":"offer","sdp":"v=0"},"type":"media","connectionId":"mc_1"}}`
	if err := a.WriteMessage(websocket.TextMessage, []byte(offer)); err != nil {
		t.Fatal(err)
	}
	m := readPeer(t, b)
	if m.Type != "OFFER" || m.Src != "alice" || m.Dst != "bob" || len(m.Payload) == 0 {
		t.Fatalf("bob got %+v, want alice's OFFER", m)
	}
	answer := `{"type":"ANSWER","dst":"alice","payload":{"sdp":{"type":"answer","sdp":"v=0"},"type":"media","connectionId":"mc_1"}}`
	if err := b.WriteMessage(websocket.TextMessage, []byte(answer)); err != nil {
		t.Fatal(err)
	}
	if m := readPeer(t, a); m.Type != "ANSWER" || m.Src != "bob" {
		t.Fatalf("alice got %+v, want bob's ANSWER", m)
	}
	// A node counts a message sent when Redis acknowledges the PUBLISH, which may be
	// after the other node has delivered it: poll.
	var m1, m2 map[string]float64
	counted := func() bool {
		m1, m2 = n1.metrics(), n2.metrics()
		return m1["relay_cluster_backend_up"] == 1 && m1["relay_cluster_messages_sent_total"] == 1 && m1["relay_cluster_messages_received_total"] == 1 &&
			m2["relay_cluster_messages_sent_total"] == 1 && m2["relay_cluster_messages_received_total"] == 1
	}
	deadline := time.Now().Add(5 * time.Second)
	for !counted() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !counted() {
		t.Errorf("cluster metrics: node 1 %v, node 2 %v", pick(m1, "relay_cluster_"), pick(m2, "relay_cluster_"))
	}
}

func pick(m map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// TestFleetQueueAndNodeKilled: a message for an id not connected anywhere waits in the
// fleet's queue and is delivered when the id registers on the other node, one for an id
// that never comes back gets EXPIRE, and the ids of a node killed with SIGKILL are free
// again within the lease TTL while the other node's peers go on.
func TestFleetQueueAndNodeKilled(t *testing.T) {
	url := startRedisServer(t)
	sig := "[signal]\nlisten = \"127.0.0.1:0\"\nexpire_timeout = \"1s\"\n"
	n1 := startRelay(t, baseConfig(sig+"[cluster]\nredis = \""+url+"\"\nnode = \"n1\"\n"))
	n2 := startRelay(t, baseConfig(sig+"[cluster]\nredis = \""+url+"\"\nnode = \"n2\"\n"))

	a := openPeer(t, n1, "alice", "ta")
	send := func(ws *websocket.Conn, msg string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send(a, `{"type":"OFFER","dst":"carol","payload":{"n":1}}`)
	send(a, `{"type":"OFFER","dst":"nobody","payload":{"n":2}}`)
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0")})
	defer rdb.Close()
	waitFor(t, "the OFFER for carol to be held in Redis", func() bool {
		return rdb.LLen(context.Background(), "relay:q:carol").Val() == 1
	})
	c := openPeer(t, n2, "carol", "tc")
	if m := readPeer(t, c); m.Type != "OFFER" || m.Src != "alice" || string(m.Payload) != `{"n":1}` {
		t.Fatalf("carol got %+v, want alice's held OFFER", m)
	}
	if m := readPeer(t, a); m.Type != "EXPIRE" || m.Src != "nobody" {
		t.Fatalf("alice got %+v, want EXPIRE for nobody", m)
	}

	// Node 1 dies without a word: alice's lease runs out, carol's node goes on.
	_ = n1.cmd.Process.Kill()
	<-n1.exited
	start := time.Now()
	var again *websocket.Conn
	waitFor(t, "alice's id free on node 2", func() bool {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+n2.addr("signal")+"/peerjs?key=peerjs&id=alice&token=other", nil)
		if err != nil {
			return false
		}
		if m := readPeer(t, ws); m.Type == "OPEN" {
			again = ws
			return true
		}
		ws.Close()
		time.Sleep(100 * time.Millisecond)
		return false
	})
	defer again.Close()
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("alice's id freed %v after node 1 died; the lease TTL is 6s", d)
	}
	send(again, `{"type":"OFFER","dst":"carol","payload":{"n":3}}`)
	if m := readPeer(t, c); m.Type != "OFFER" || m.Src != "alice" || string(m.Payload) != `{"n":3}` {
		t.Fatalf("carol got %+v after node 1 died", m)
	}
}

func iceTURN(t *testing.T, p *relayProc) (urls []string, user, pass string) {
	t.Helper()
	ice := fetchICE(t, p)
	for _, s := range ice.ICEServers {
		if len(s.URLs) > 0 && strings.HasPrefix(s.URLs[0], "turn:") {
			return s.URLs, s.Username, s.Credential
		}
	}
	t.Fatalf("no TURN server in %+v", ice)
	return nil, "", ""
}

// TestFleetICESteering: {path}ice on node 1 carries both nodes' TURN URLs, its
// credentials allocate on node 2 (shared secrets), and a node that starts draining
// (SIGTERM, an allocation still open) leaves node 1's answers within 2 s.
func TestFleetICESteering(t *testing.T) {
	url := startRedisServer(t)
	sig := "[signal]\nlisten = \"127.0.0.1:0\"\nice_requests_per_minute = 100000\n"
	n1 := startRelay(t, baseConfig(sig+"[cluster]\nredis = \""+url+"\"\nnode = \"n1\"\n"))
	// Node 2 keeps draining while the test looks: a long drain_timeout and an allocation.
	n2 := startRelay(t, strings.Replace(baseConfig(sig+"[cluster]\nredis = \""+url+"\"\nnode = \"n2\"\n"), `drain_timeout = "1s"`, `drain_timeout = "30s"`, 1))
	n2TURN := "turn:127.0.0.1:" + n2.port("udp") + "?transport=udp"
	n1TURN := "turn:127.0.0.1:" + n1.port("udp") + "?transport=udp"
	var user, pass string
	waitFor(t, "node 2 in node 1's ICE answer", func() bool {
		var urls []string
		urls, user, pass = iceTURN(t, n1)
		return slices.Contains(urls, n2TURN) && slices.Contains(urls, n1TURN)
	})
	sess, err := dialTURN(t, n2.addr("udp"), user, pass)
	if err != nil {
		t.Fatalf("node 1's credentials on node 2: %v", err)
	}
	_ = n2.cmd.Process.Signal(syscall.SIGTERM)
	n2.waitLog("draining")
	start := time.Now()
	waitFor(t, "node 2 out of node 1's ICE answer", func() bool {
		urls, _, _ := iceTURN(t, n1)
		return !slices.Contains(urls, n2TURN) && slices.Contains(urls, n1TURN)
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("draining node left the ICE answers after %v, want within 2 s", d)
	}
	if m := n1.metrics(); m[`relay_cluster_nodes{state="draining"}`] != 1 || m[`relay_cluster_nodes{state="up"}`] != 1 {
		t.Errorf("relay_cluster_nodes: %v", pick(m, "relay_cluster_nodes"))
	}
	sess.close() // node 2's last allocation ends: it exits
}

// TestFleetRedisStoppedAndRestarted: with Redis gone, peers on one node keep talking, a
// message for a peer on the other node gets EXPIRE at once, each node logs the outage
// once; when Redis is back (empty), the nodes re-register their peers and route across
// again without a restart.
func TestFleetRedisStoppedAndRestarted(t *testing.T) {
	rp := newRedisProc(t)
	cl := func(name string) string {
		return baseConfig("[signal]\nlisten = \"127.0.0.1:0\"\n[cluster]\nredis = \"" + rp.url + "\"\nnode = \"" + name + "\"\n")
	}
	n1, n2 := startRelay(t, cl("n1")), startRelay(t, cl("n2"))
	open := func(p *relayProc, id string) *websocket.Conn {
		ws := dialPeer(t, p, id, "t-"+id)
		if m := readPeer(t, ws); m.Type != "OPEN" {
			t.Fatalf("%s got %+v", id, m)
		}
		return ws
	}
	a, b, c := open(n1, "alice"), open(n1, "bob"), open(n2, "carol")
	send := func(ws *websocket.Conn, msg string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}

	rp.stop()
	send(a, `{"type":"OFFER","dst":"bob","payload":{"n":1}}`)
	if m := readPeer(t, b); m.Type != "OFFER" || m.Src != "alice" {
		t.Fatalf("bob got %+v; same-node routing must not need Redis", m)
	}
	for i := range 5 {
		send(a, `{"type":"OFFER","dst":"carol","payload":{"n":2}}`)
		if m := readPeer(t, a); m.Type != "EXPIRE" && m.Type != "LEAVE" {
			t.Fatalf("message %d for carol with Redis down: alice got %+v, want EXPIRE or LEAVE", i, m)
		}
	}
	n1.waitLog("cluster backend unreachable")
	if n := strings.Count(n1.log(), "cluster backend unreachable"); n != 1 {
		t.Errorf("node 1 logged the outage %d times", n)
	}
	if m := n1.metrics(); m["relay_cluster_backend_up"] != 0 {
		t.Errorf("relay_cluster_backend_up = %v with Redis down", m["relay_cluster_backend_up"])
	}

	rp.start() // empty: every lease and subscription is gone
	n1.waitLog("cluster backend reachable again")
	// carol's messages come through a reader goroutine: a read with a deadline would
	// end the WebSocket, and the test polls until node 2 has re-registered carol.
	got := make(chan peerMsg, 64)
	go func() {
		defer close(got)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var m peerMsg
			if json.Unmarshal(b, &m) == nil {
				got <- m
			}
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for arrived := false; !arrived; {
		if time.Now().After(deadline) {
			t.Fatal("alice cannot reach carol across nodes after Redis came back")
		}
		send(a, `{"type":"OFFER","dst":"carol","payload":{"n":3}}`)
		select {
		case m := <-got:
			if m.Type != "OFFER" || m.Src != "alice" || string(m.Payload) != `{"n":3}` {
				t.Fatalf("carol got %+v", m)
			}
			arrived = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	if m := n2.metrics(); m["relay_cluster_backend_up"] != 1 {
		t.Errorf("node 2: relay_cluster_backend_up = %v after Redis came back", m["relay_cluster_backend_up"])
	}
	dup := dialPeer(t, n2, "alice", "someone-else")
	if m := readPeer(t, dup); m.Type != "ID-TAKEN" {
		t.Errorf("alice's id not re-registered fleet-wide after the restart: node 2 said %+v", m)
	}
	c.Close()
	for range got {
	}
}

// TestFleetRedisTLSAndPasswordFile: the deploy guide's Redis, with TLS (rediss://) and
// a password that only the redis_password_file holds. Both nodes join, route a message
// across, and neither logs nor exports the password. The test CA reaches relay the way
// an operator's private CA would: SSL_CERT_FILE (or the system's trust store).
func TestFleetRedisTLSAndPasswordFile(t *testing.T) {
	bin := need(t, "redis-server", "redis-server")
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.WriteFor(t, dir, net.IPv4(127, 0, 0, 1))
	const password = "s3cret-redis-pass"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile,
		"--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", dir)
	var redisOut strings.Builder
	cmd.Stdout, cmd.Stderr = &redisOut, &redisOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	waitFor(t, "redis-server listening with TLS", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		select {
		case <-done:
			t.Fatalf("redis-server exited: %s", redisOut.String())
		default:
		}
		return err == nil
	})
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster := func(node string) string {
		return baseConfig("[cluster]\nredis = \"rediss://" + addr + "/0\"\nredis_password_file = \"" + pwFile + "\"\nnode = \"" + node + "\"\n")
	}
	env := []string{"SSL_CERT_FILE=" + certFile}
	n1 := startRelayEnv(t, cluster("n1"), env)
	n2 := startRelayEnv(t, cluster("n2"), env)
	waitFor(t, "both nodes in the fleet", func() bool {
		m := n1.metrics()
		return m[`relay_cluster_backend_up`] == 1 && m[`relay_cluster_nodes{state="up"}`] == 2
	})
	a := openPeer(t, n1, "alice", "ta")
	b := openPeer(t, n2, "bob", "tb")
	if err := a.WriteMessage(websocket.TextMessage, []byte(`{"type":"OFFER","dst":"bob","payload":{"n":1}}`)); err != nil {
		t.Fatal(err)
	}
	if m := readPeer(t, b); m.Type != "OFFER" || m.Src != "alice" {
		t.Fatalf("bob got %+v, want alice's OFFER over the TLS backend", m)
	}
	for _, n := range []*relayProc{n1, n2} {
		if strings.Contains(n.log(), password) {
			t.Errorf("the Redis password is in a node's log")
		}
		for k := range n.metrics() {
			if strings.Contains(k, password) {
				t.Errorf("the Redis password is in metric %s", k)
			}
		}
	}
}

// TestFleetReloadSteering: [cluster] ice_nodes and region change with SIGHUP, without a
// restart: node 1's ICE answers go from both nodes to one, and its region label and
// announcement change; the other [cluster] keys are still logged as needing a restart.
func TestFleetReloadSteering(t *testing.T) {
	url := startRedisServer(t)
	sig := "[signal]\nlisten = \"127.0.0.1:0\"\nice_requests_per_minute = 100000\n"
	cl := func(node, extra string) string {
		return baseConfig(sig + "[cluster]\nredis = \"" + url + "\"\nnode = \"" + node + "\"\n" + extra)
	}
	n1 := startRelay(t, cl("n1", "ice_nodes = 2\n"))
	n2 := startRelay(t, cl("n2", ""))
	n1TURN := "turn:127.0.0.1:" + n1.port("udp") + "?transport=udp"
	n2TURN := "turn:127.0.0.1:" + n2.port("udp") + "?transport=udp"
	waitFor(t, "both nodes in node 1's ICE answer", func() bool {
		urls, _, _ := iceTURN(t, n1)
		return slices.Contains(urls, n1TURN) && slices.Contains(urls, n2TURN)
	})
	n1.rewrite(cl("n1", "ice_nodes = 1\nregion = \"eu-west\"\n"))
	if err := n1.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	n1.waitLog("config reloaded")
	waitFor(t, "one node in node 1's ICE answer", func() bool {
		urls, _, _ := iceTURN(t, n1)
		return slices.Contains(urls, n1TURN) != slices.Contains(urls, n2TURN)
	})
	waitFor(t, "the new region in node 1's metrics", func() bool {
		return n1.metrics()[`relay_cluster_node_info{node="n1",region="eu-west"}`] == 1
	})
	if strings.Contains(n1.log(), "cluster.ice_nodes") || strings.Contains(n1.log(), "cluster.region") {
		t.Errorf("ice_nodes or region logged as needing a restart:\n%s", n1.log())
	}
	n1.rewrite(cl("n1-renamed", "ice_nodes = 1\nregion = \"eu-west\"\n"))
	if err := n1.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	n1.waitLog("cluster.node")
}
