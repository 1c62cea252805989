package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// startRedisServer runs a redis-server on a free loopback port with nothing saved to
// disk, stopped when the test ends; it returns its redis:// URL.
func startRedisServer(t *testing.T) string {
	t.Helper()
	bin := need(t, "redis-server", "redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	waitFor(t, "redis-server listening", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "redis://" + addr + "/0"
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

	a := dialPeer(t, n1, "alice", "ta")
	if m := readPeer(t, a); m.Type != "OPEN" {
		t.Fatalf("alice on node 1 got %+v", m)
	}
	dup := dialPeer(t, n2, "alice", "someone-else")
	if m := readPeer(t, dup); m.Type != "ID-TAKEN" {
		t.Fatalf("alice's id registered again on node 2: %+v", m)
	}
	b := dialPeer(t, n2, "bob", "tb")
	if m := readPeer(t, b); m.Type != "OPEN" {
		t.Fatalf("bob on node 2 got %+v", m)
	}
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
	m1, m2 := n1.metrics(), n2.metrics()
	if m1["relay_cluster_backend_up"] != 1 || m1["relay_cluster_messages_sent_total"] != 1 || m1["relay_cluster_messages_received_total"] != 1 ||
		m2["relay_cluster_messages_sent_total"] != 1 || m2["relay_cluster_messages_received_total"] != 1 {
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

	a := dialPeer(t, n1, "alice", "ta")
	if m := readPeer(t, a); m.Type != "OPEN" {
		t.Fatalf("alice got %+v", m)
	}
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
	c := dialPeer(t, n2, "carol", "tc")
	if m := readPeer(t, c); m.Type != "OPEN" {
		t.Fatalf("carol got %+v", m)
	}
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
