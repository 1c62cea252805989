package signaling

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testSignal struct {
	*Server
	base    string // http://127.0.0.1:PORT/path/
	metrics *metrics.Metrics
}

func startSignal(t testing.TB, mutate func(*config.Signal)) *testSignal {
	t.Helper()
	return startSignalLog(t, mutate, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// startSignalLog is startSignal logging to log.
func startSignalLog(t testing.TB, mutate func(*config.Signal), log *slog.Logger) *testSignal {
	t.Helper()
	return startSignalRevoking(t, mutate, log, nil)
}

// startSignalRevoking is startSignalLog with an Options.Revoke.
func startSignalRevoking(t testing.TB, mutate func(*config.Signal), log *slog.Logger, revoke func(string, time.Time)) *testSignal {
	t.Helper()
	cfg := config.Default().Signal
	cfg.Listen = "127.0.0.1:0"
	cfg.ExpireTimeout = 300 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	c := config.Default()
	c.Signal = cfg
	c.Auth.Secrets = []string{"signal-test-secret"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Options{Secrets: c.Auth.Secrets, MaxTTL: c.Auth.MaxTTL})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	s, err := New(Options{
		Config: c.Signal, Mint: a.Mint, Metrics: m, Revoke: revoke,
		URIs: func(host string) ([]string, []string) {
			return []string{"stun:" + host + ":3478"}, []string{"turn:" + host + ":3478?transport=udp", "turn:" + host + ":3478?transport=tcp"}
		},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return &testSignal{Server: s, base: "http://" + s.Addr().String() + c.Signal.Path, metrics: m}
}

// client is a PeerJS-protocol WebSocket client that reads in the background (answering
// pings, as browsers do) and hands messages to the test.
type client struct {
	t    testing.TB
	ws   *websocket.Conn
	msgs chan map[string]any
	done chan struct{}
}

func (s *testSignal) wsURL(params string) string {
	return "ws" + strings.TrimPrefix(s.base, "http") + "peerjs?" + params
}

func (s *testSignal) dial(t testing.TB, id, token string) *client {
	t.Helper()
	return s.dialURL(t, s.wsURL(fmt.Sprintf("key=peerjs&id=%s&token=%s&version=1.5.5", url.QueryEscape(id), url.QueryEscape(token))), nil)
}

func (s *testSignal) dialURL(t testing.TB, u string, hdr http.Header) *client {
	t.Helper()
	return s.dialWith(t, u, hdr, nil, nil)
}

// dialWith dials (with d, or the default dialer) and lets prepare adjust the socket
// before the reader starts.
func (s *testSignal) dialWith(t testing.TB, u string, hdr http.Header, prepare func(*websocket.Conn), d *websocket.Dialer) *client {
	t.Helper()
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, _, err := d.Dial(u, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	if prepare != nil {
		prepare(ws)
	}
	c := &client{t: t, ws: ws, msgs: make(chan map[string]any, 1000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				close(c.msgs)
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				select {
				case c.msgs <- m:
				default: // a test that stopped reading must not stall the socket
				}
			}
		}
	}()
	t.Cleanup(func() { _ = ws.Close(); <-c.done })
	return c
}

// next returns the next message, failing after a deadline.
func (c *client) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("socket closed while waiting for a message")
		}
		return m
	case <-time.After(3 * time.Second):
		c.t.Fatal("no message within 3s")
	}
	return nil
}

// expect reads the next message and checks its type.
func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	m := c.next()
	if m["type"] != typ {
		c.t.Fatalf("got %v, want type %s", m, typ)
	}
	return m
}

// closed waits for the server to close the socket, draining messages.
func (c *client) closed() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Fatal("socket still open")
	}
}

// quiet checks nothing arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("unexpected message %v", m)
		}
	case <-time.After(d):
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatal(err)
	}
}

func payloadMsg(m map[string]any) string {
	p, _ := m["payload"].(map[string]any)
	s, _ := p["msg"].(string)
	return s
}

func TestHandshake(t *testing.T) {
	s := startSignal(t, nil)
	cases := []struct {
		name, params, typ, msg string
	}{
		{"no id", "key=peerjs&token=t", "ERROR", msgNoIDTokenKey},
		{"no token", "key=peerjs&id=a", "ERROR", msgNoIDTokenKey},
		{"no key", "id=a&token=t", "ERROR", msgNoIDTokenKey},
		{"empty id", "key=peerjs&id=&token=t", "ERROR", msgNoIDTokenKey},
		{"wrong key", "key=nope&id=a&token=t", "ERROR", msgInvalidKey},
		{"missing params before wrong key", "key=nope&token=t", "ERROR", msgNoIDTokenKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialURL(t, s.wsURL(tc.params), nil)
			m := c.expect(tc.typ)
			if payloadMsg(m) != tc.msg {
				t.Errorf("msg %q, want %q", payloadMsg(m), tc.msg)
			}
			c.closed()
		})
	}
	if got := testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("invalid_key")); got != 1 {
		t.Errorf("relay_signal_rejected_total{reason=invalid_key} = %v", got)
	}
}

func TestOpenRelayAndSrc(t *testing.T) {
	s := startSignal(t, nil)
	a := s.dial(t, "alice", "ta")
	a.expect("OPEN")
	b := s.dial(t, "bob", "tb")
	b.expect("OPEN")
	if got := testutil.ToFloat64(s.metrics.SignalPeers); got != 2 {
		t.Errorf("relay_signal_peers_connected = %v, want 2", got)
	}
	// src is the sender's registered id whatever it claims; extra fields are dropped.
	a.send(map[string]any{"type": "OFFER", "dst": "bob", "src": "mallory", "extra": 1,
		"payload": map[string]any{"sdp": map[string]any{"type": "offer", "sdp": "v=0"}, "connectionId": "dc_1"}})
	m := b.expect("OFFER")
	if m["src"] != "alice" || m["dst"] != "bob" {
		t.Errorf("relayed %v: want src alice, dst bob", m)
	}
	if _, ok := m["extra"]; ok {
		t.Errorf("extra top-level field relayed: %v", m)
	}
	if p, _ := m["payload"].(map[string]any); p["connectionId"] != "dc_1" {
		t.Errorf("payload not relayed intact: %v", m["payload"])
	}
	for _, typ := range []string{"ANSWER", "CANDIDATE"} {
		b.send(map[string]any{"type": typ, "dst": "alice", "payload": map[string]any{"n": 1}})
		if m := a.expect(typ); m["src"] != "bob" {
			t.Errorf("%s src %v", typ, m["src"])
		}
	}
	// Bad JSON, unknown types and HEARTBEAT are ignored and the connection stays.
	if err := a.ws.WriteMessage(websocket.TextMessage, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	a.send(map[string]any{"type": "NONSENSE", "dst": "bob"})
	a.send(map[string]any{"type": "HEARTBEAT"})
	a.send(map[string]any{"type": "CANDIDATE", "dst": "bob", "payload": 7})
	if m := b.expect("CANDIDATE"); m["payload"] != float64(7) {
		t.Errorf("after garbage: %v", m)
	}
	b.quiet(100 * time.Millisecond)
	if got := testutil.ToFloat64(s.metrics.SignalMessages.WithLabelValues("OFFER")); got != 1 {
		t.Errorf("relay_signal_messages_total{type=OFFER} = %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.SignalMessages.WithLabelValues("other")); got != 1 {
		t.Errorf("relay_signal_messages_total{type=other} = %v", got)
	}
}

func TestIDTakenAndReconnect(t *testing.T) {
	s := startSignal(t, nil)
	first := s.dial(t, "osama", "token-1")
	first.expect("OPEN")

	thief := s.dial(t, "osama", "token-2")
	if m := thief.expect("ID-TAKEN"); payloadMsg(m) != msgIDTaken {
		t.Errorf("ID-TAKEN msg %q", payloadMsg(m))
	}
	thief.closed()

	// A message for osama while it reconnects is delivered to the new socket.
	other := s.dial(t, "other", "t")
	other.expect("OPEN")
	again := s.dial(t, "osama", "token-1")
	again.expect("OPEN")
	first.closed() // the old socket is replaced
	other.send(map[string]any{"type": "OFFER", "dst": "osama", "payload": "x"})
	again.expect("OFFER")
	if got := testutil.ToFloat64(s.metrics.SignalPeers); got != 2 {
		t.Errorf("relay_signal_peers_connected = %v after a reconnect, want 2", got)
	}
}

func TestQueueDeliveryAfterOpen(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.ExpireTimeout = 5 * time.Second })
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	a.send(map[string]any{"type": "OFFER", "dst": "late", "payload": 1})
	a.send(map[string]any{"type": "CANDIDATE", "dst": "late", "payload": 2})
	a.send(map[string]any{"type": "LEAVE", "dst": "late"})  // LEAVE is not queued
	a.send(map[string]any{"type": "EXPIRE", "dst": "late"}) // nor EXPIRE
	waitFor(t, "two queued messages", func() bool { return s.reg.(*memoryRegistry).queueLen("late") == 2 })
	late := s.dial(t, "late", "t")
	late.expect("OPEN")
	if m := late.expect("OFFER"); m["src"] != "a" || m["payload"] != float64(1) {
		t.Errorf("first queued: %v", m)
	}
	if m := late.expect("CANDIDATE"); m["payload"] != float64(2) {
		t.Errorf("second queued: %v", m)
	}
	late.quiet(100 * time.Millisecond)
}

func TestExpire(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.ExpireTimeout = 300 * time.Millisecond })
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	start := time.Now()
	a.send(map[string]any{"type": "OFFER", "dst": "ghost", "payload": 1})
	a.send(map[string]any{"type": "CANDIDATE", "dst": "ghost", "payload": 2})
	m := a.expect("EXPIRE")
	elapsed := time.Since(start)
	if m["src"] != "ghost" || m["dst"] != "a" {
		t.Errorf("EXPIRE %v: want src ghost, dst a", m)
	}
	if elapsed < 300*time.Millisecond {
		t.Errorf("EXPIRE after %v, before expire_timeout", elapsed)
	}
	a.quiet(500 * time.Millisecond) // once per (sender, absent id)
	if got := testutil.ToFloat64(s.metrics.SignalExpired); got != 2 {
		t.Errorf("relay_signal_expired_total = %v, want 2", got)
	}
	// The expired messages are gone: ghost connecting now gets only OPEN.
	g := s.dial(t, "ghost", "t")
	g.expect("OPEN")
	g.quiet(100 * time.Millisecond)
}

func TestLeave(t *testing.T) {
	s := startSignal(t, nil)
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	b := s.dial(t, "b", "t")
	b.expect("OPEN")
	a.send(map[string]any{"type": "LEAVE", "dst": "b"})
	if m := b.expect("LEAVE"); m["src"] != "a" {
		t.Errorf("LEAVE %v", m)
	}
	// LEAVE without dst unregisters the sender: its id is free again.
	a.send(map[string]any{"type": "LEAVE"})
	a.closed()
	waitFor(t, "id a to be free", func() bool { return !s.reg.Taken("a") })
	a2 := s.dial(t, "a", "another-token")
	a2.expect("OPEN")
	// Closing a socket frees the id at once.
	_ = b.ws.Close()
	waitFor(t, "id b to be free", func() bool { return !s.reg.Taken("b") })
	if got := testutil.ToFloat64(s.metrics.SignalPeers); got != 1 {
		t.Errorf("relay_signal_peers_connected = %v, want 1", got)
	}
}

func TestLimits(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) {
		c.ConcurrentLimit = 3
		c.MaxPeersPerIP = 2
		c.MaxQueue = 2
		c.MaxMessageBytes = 1024
	})
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	b := s.dial(t, "b", "t")
	b.expect("OPEN")
	c := s.dial(t, "c", "t")
	if m := c.expect("ERROR"); payloadMsg(m) != msgTooManyFrom {
		t.Errorf("third peer from one IP: %v", m)
	}
	c.closed()
	if s.reg.Taken("c") {
		t.Error("refused peer left registered")
	}

	// Queue length per absent peer.
	for i := 0; i < 5; i++ {
		a.send(map[string]any{"type": "OFFER", "dst": "absent", "payload": i})
	}
	waitFor(t, "queue_full refusals", func() bool {
		return testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("queue_full")) == 3
	})

	// An oversized message closes that socket; others are unaffected.
	big := `{"type":"OFFER","dst":"b","payload":"` + strings.Repeat("x", 2000) + `"}`
	_ = a.ws.WriteMessage(websocket.TextMessage, []byte(big))
	a.closed()
	waitFor(t, "the oversized message to be counted", func() bool {
		return testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("message_too_large")) == 1
	})
	b.send(map[string]any{"type": "HEARTBEAT"})
	waitFor(t, "a to be released", func() bool { return !s.reg.Taken("a") })
}

func TestConcurrentLimit(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.ConcurrentLimit = 1 })
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	b := s.dial(t, "b", "t")
	if m := b.expect("ERROR"); payloadMsg(m) != msgFull {
		t.Errorf("past concurrent_limit: %v", m)
	}
	// ID-TAKEN is checked before the limit, and a reconnect is not refused as "full".
	c := s.dial(t, "a", "other")
	c.expect("ID-TAKEN")
	d := s.dial(t, "a", "t")
	d.expect("OPEN")
}

// TestAliveByPongs: a client that never sends a message stays connected as long as it
// answers pings (legacy PeerJS 0.3.x); one that answers nothing is dropped and its id
// freed after alive_timeout.
func TestAliveByPongs(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.AliveTimeout = 400 * time.Millisecond })
	legacy := s.dial(t, "legacy", "t") // gorilla's client answers pings while it reads, like a browser
	legacy.expect("OPEN")

	silent := s.dialWith(t, s.wsURL("key=peerjs&id=silent&token=t"), nil, func(ws *websocket.Conn) {
		ws.SetPingHandler(func(string) error { return nil }) // never pongs
	}, nil)
	silent.expect("OPEN")

	start := time.Now()
	silent.closed()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("silent client dropped after %v, before alive_timeout", d)
	}
	waitFor(t, "silent's id to be freed", func() bool { return !s.reg.Taken("silent") })
	// Well past alive_timeout, the pinged client is still there and reachable.
	time.Sleep(time.Second) // the behaviour under test is staying alive across time
	other := s.dial(t, "other", "t")
	other.expect("OPEN")
	other.send(map[string]any{"type": "OFFER", "dst": "legacy", "payload": 1})
	legacy.expect("OFFER")
}

func TestHTTPRoutes(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.Path = "/sig/" })
	get := func(path string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, s.base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if !strings.HasSuffix(s.base, "/sig/") {
		t.Fatalf("base %s", s.base)
	}
	resp, body := get("", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"name":"PeerJS Server"`) {
		t.Errorf("GET {path}: %d %s", resp.StatusCode, body)
	}
	resp, body = get("peerjs/id?ts=123&version=1.5.5", map[string]string{"Origin": "http://page.test"})
	if resp.StatusCode != 200 || len(body) != 36 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET {path}{key}/id: %d %q %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "http://page.test" {
		t.Errorf("CORS does not reflect the Origin: %v", resp.Header)
	}
	if resp, _ := get("peerjs/peers", nil); resp.StatusCode != 401 {
		t.Errorf("peers with discovery off: %d, want 401", resp.StatusCode)
	}
	if resp, _ := get("nothing/here/at/all", nil); resp.StatusCode != 404 {
		t.Errorf("unknown route: %d", resp.StatusCode)
	}
	// A WebSocket upgrade on another path is a 400.
	if _, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.base, "http")+"elsewhere?key=peerjs&id=a&token=t", nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("upgrade on another path: %v %v", resp, err)
	}
	// The legacy client's XHR stream POST gets a harmless 404.
	presp, err := http.Post(s.base+"peerjs/a/t/id?i=0", "text/plain", nil)
	if err != nil || presp.StatusCode != 404 {
		t.Errorf("legacy POST: %v %v", presp, err)
	} else {
		presp.Body.Close()
	}
}

func TestDiscovery(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.AllowDiscovery = true })
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	resp, err := http.Get(s.base + "peerjs/peers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ids []string
	if err := json.NewDecoder(resp.Body).Decode(&ids); err != nil || len(ids) != 1 || ids[0] != "a" {
		t.Errorf("peers: %v %v", ids, err)
	}
}

func TestAllowedOrigins(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.AllowedOrigins = []string{"https://app.example.org"} })
	hdr := http.Header{"Origin": {"https://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=a&token=t"), hdr); err == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade from a foreign origin: %v %v", resp, err)
	}
	ok := s.dialURL(t, s.wsURL("key=peerjs&id=a&token=t"), http.Header{"Origin": {"https://app.example.org"}})
	ok.expect("OPEN")
	req, _ := http.NewRequest(http.MethodGet, s.base+"ice", nil)
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("ICE from a foreign origin: %d, want 403", resp.StatusCode)
	}
}

// TestSlowConsumer: a peer that stops reading is dropped without holding up others.
func TestSlowConsumerDoesNotBlock(t *testing.T) {
	s := startSignal(t, nil)
	sender := s.dial(t, "sender", "t")
	sender.expect("OPEN")
	fast := s.dial(t, "fast", "t")
	fast.expect("OPEN")
	// A raw socket that completes the handshake and then never reads.
	stuck, _, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=stuck&token=t"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	waitFor(t, "stuck to register", func() bool { return s.reg.Taken("stuck") })
	big := strings.Repeat("y", 60000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 400; i++ {
			b, _ := json.Marshal(map[string]any{"type": "CANDIDATE", "dst": "stuck", "payload": big})
			if sender.ws.WriteMessage(websocket.TextMessage, b) != nil {
				return
			}
		}
	}()
	other := s.dial(t, "other", "t")
	other.expect("OPEN")
	other.send(map[string]any{"type": "OFFER", "dst": "fast", "payload": 1})
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case m := <-sender.msgs:
			_ = m
		case m := <-fast.msgs:
			got = m["type"] == "OFFER"
		case <-deadline:
			t.Fatal("a stuck peer held up delivery to another")
		}
	}
	wg.Wait()
}

// TestSlowConsumerDropped: a peer that falls maxOutbox messages behind is closed and
// the sender told it left.
func TestSlowConsumerDropped(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.MessagesPerSecond = 100000 })
	sender := s.dial(t, "sender", "t")
	sender.expect("OPEN")
	s.dialStalled(t, "stuck")
	msg, _ := json.Marshal(map[string]any{"type": "CANDIDATE", "dst": "stuck", "payload": strings.Repeat("z", 20000)})
	for i := 0; i < 2000 && s.reg.Taken("stuck"); i++ {
		if err := sender.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the slow consumer to be dropped", func() bool {
		return testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("slow_consumer")) >= 1 && !s.reg.Taken("stuck")
	})
	if m := sender.expect("LEAVE"); m["src"] != "stuck" || m["dst"] != "sender" {
		t.Errorf("LEAVE %v", m)
	}
}

// dialStalled connects a peer id that reads nothing, with a small receive buffer so that
// it stalls soon: a slow consumer. It is closed when the test ends.
func (s *testSignal) dialStalled(t *testing.T, id string) {
	t.Helper()
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096) // take little before stalling
		}
		return c, err
	}}
	ws, _, err := d.Dial(s.wsURL("key=peerjs&id="+id+"&token=t"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	waitFor(t, id+" to register", func() bool { return s.reg.Taken(id) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, cond)
}

func clientIPFrom(remote string) netip.Addr {
	r := &http.Request{RemoteAddr: remote}
	return clientIP(r)
}

// TestTLS: with a certificate the endpoint serves https and wss.
func TestTLS(t *testing.T) {
	certFile, keyFile, clientTLS := testcert.Write(t)
	s := startSignal(t, func(c *config.Signal) { c.TLSCert, c.TLSKey = certFile, keyFile })
	if s.Scheme() != "https" {
		t.Fatalf("scheme %s", s.Scheme())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	resp, err := hc.Get("https://" + s.Addr().String() + "/peerjs/id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("https id: %d", resp.StatusCode)
	}
	d := websocket.Dialer{TLSClientConfig: clientTLS}
	ws, _, err := d.Dial("wss://"+s.Addr().String()+"/peerjs?key=peerjs&id=a&token=t", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, msg, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(msg), "OPEN") {
		t.Fatalf("wss: %s %v", msg, err)
	}
	// Messages are relayed between TLS sockets, read by the pollers.
	b := s.dialWith(t, "wss://"+s.Addr().String()+"/peerjs?key=peerjs&id=b&token=t", nil, nil, &d)
	b.expect("OPEN")
	if !s.onPollers(t, 2) {
		t.Error("a wss peer is not on a poller")
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"OFFER","dst":"b","payload":{"sdp":"v=0"}}`)); err != nil {
		t.Fatal(err)
	}
	if m := b.expect("OFFER"); m["src"] != "a" {
		t.Errorf("relayed over TLS: %v", m)
	}
}

// TestMessageRate: a connection sending faster than max_messages_per_second has the
// excess dropped and counted; its connection and others stay.
func TestMessageRate(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.MessagesPerSecond = 10 })
	a := s.dial(t, "a", "t")
	a.expect("OPEN")
	b := s.dial(t, "b", "t")
	b.expect("OPEN")
	for i := 0; i < 100; i++ {
		a.send(map[string]any{"type": "CANDIDATE", "dst": "b", "payload": i})
	}
	got := 0
	for {
		select {
		case <-b.msgs:
			got++
			continue
		case <-time.After(300 * time.Millisecond):
		}
		break
	}
	if got < 40 || got > 45 {
		t.Errorf("%d of 100 messages relayed; want the 4-second burst of 40 (and a few refilled)", got)
	}
	waitFor(t, "the excess to be counted", func() bool {
		return testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("rate"))+float64(got) == 100
	})
}
