package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/poll"
	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/metrics"
	"github.com/relayproject/relay/relay"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testSecret = "check-test-secret"
	testRealm  = "check.test"
)

// server is an in-process relay on 127.0.0.1 with free ports.
type server struct {
	*relay.Server
	metrics *metrics.Metrics
	auth    *auth.Authenticator
	caFile  string // with TLS: the certificate, which is its own CA
}

func startRelay(t *testing.T, withTLS bool, mutate func(*config.Config)) *server {
	t.Helper()
	cfg := config.Default()
	cfg.Realm = testRealm
	cfg.TURN.UDP = []string{"127.0.0.1:0"}
	cfg.TURN.TCP = []string{"127.0.0.1:0"}
	cfg.TURN.RelayIP = netip.MustParseAddr("127.0.0.1")
	cfg.TURN.RelayPorts = config.PortRange{Min: 63000, Max: 63499}
	cfg.TURN.UDPSockets = 1
	cfg.Auth.Secrets = []string{testSecret}
	cfg.Metrics.Listen = ""
	cfg.Signal.Listen = ""
	var caFile string
	if withTLS {
		cert, key, _ := testcert.Write(t)
		cfg.TURN.TLS = []string{"127.0.0.1:0"}
		cfg.TURN.TLSCert, cfg.TURN.TLSKey = cert, key
		caFile = cert
	}
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	a, err := auth.New(auth.Options{Secrets: cfg.Auth.Secrets, MaxTTL: cfg.Auth.MaxTTL, Users: cfg.Auth.Users})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	s, err := relay.New(relay.Options{Config: cfg, Auth: a, Metrics: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &server{Server: s, metrics: m, auth: a, caFile: caFile}
}

func (s *server) addr(transport string) string { return s.Addrs(transport)[0].String() }

func (s *server) activeAllocations() float64 {
	n := 0.0
	for _, tr := range []string{"udp", "tcp", "tls"} {
		n += testutil.ToFloat64(s.metrics.AllocationsActive.WithLabelValues(tr))
	}
	return n
}

// run checks and returns the report and the text printed while it ran.
func run(t *testing.T, o Options) (Report, string) {
	t.Helper()
	var out strings.Builder
	o.Out = &out
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run(%s): %v", o.URL, err)
	}
	if got := rep.String(); got != out.String() {
		t.Errorf("Report.Print differs from the streamed output:\n%s\nstreamed:\n%s", got, out.String())
	}
	t.Logf("relay check %s\n%s", o.URL, out.String())
	return rep, out.String()
}

func stepNames(t Target) []string {
	var names []string
	for _, s := range t.Steps {
		names = append(names, s.Name)
	}
	return names
}

func failed(t *testing.T, rep Report) Step {
	t.Helper()
	for _, tg := range rep.Targets {
		for _, s := range tg.Steps {
			if !s.OK {
				return s
			}
		}
	}
	t.Fatalf("no step failed:\n%s", rep)
	return Step{}
}

func TestCheckPasses(t *testing.T) {
	s := startRelay(t, true, nil)
	pass := []string{"STUN Binding", "Allocate", "Allocate (second)", "CreatePermission", "relay round trip", "Release"}
	for _, tc := range []struct {
		name, url string
		steps     []string
	}{
		{"udp", "turn:" + s.addr("udp") + "?transport=udp", pass},
		{"udp-default", "turn:" + s.addr("udp"), pass},
		{"tcp", "turn:" + s.addr("tcp") + "?transport=tcp", append([]string{"TCP connect"}, pass...)},
		{"tls", "turns:" + s.addr("tls") + "?transport=tcp", append([]string{"TLS handshake"}, pass...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, out := run(t, Options{URL: tc.url, Secret: testSecret, CAFile: s.caFile})
			if !rep.OK() {
				t.Fatalf("check failed:\n%s", out)
			}
			if got := strings.Join(stepNames(rep.Targets[0]), ","); got != strings.Join(tc.steps, ",") {
				t.Errorf("steps %s, want %s", got, strings.Join(tc.steps, ","))
			}
			for _, want := range []string{"reflexive address 127.0.0.1:", "relayed address 127.0.0.1:", "(lifetime 600 s)",
				"5/5 datagrams through two allocations", "2 allocations deleted", "\nPASS\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if tc.name == "tls" && !strings.Contains(out, "verified") {
				t.Errorf("TLS step does not say the certificate was verified")
			}
			// Release really deleted both allocations.
			waitFor(t, "allocations to end", func() bool { return s.activeAllocations() == 0 })
		})
	}
}

func TestCheckStaticUser(t *testing.T) {
	s := startRelay(t, false, func(c *config.Config) { c.Auth.Users = map[string]string{"alice": "wonderland"} })
	rep, out := run(t, Options{URL: "turn:" + s.addr("udp"), User: "alice", Password: "wonderland", Count: 20})
	if !rep.OK() || !strings.Contains(out, "20/20 datagrams") {
		t.Fatalf("static credentials:\n%s", out)
	}
}

func TestCheckWrongSecret(t *testing.T) {
	s := startRelay(t, false, nil)
	for _, tr := range []string{"udp", "tcp"} {
		rep, out := run(t, Options{URL: "turn:" + s.addr(tr) + "?transport=" + tr, Secret: "not-the-secret"})
		if rep.OK() {
			t.Fatalf("passed with a wrong secret:\n%s", out)
		}
		f := failed(t, rep)
		if f.Name != "Allocate" || f.Code != 401 {
			t.Errorf("failed step %q code %d, want Allocate 401", f.Name, f.Code)
		}
		for _, want := range []string{"401 Unauthorized", "wrong secret, expired, or username not in <expiry>:<user> form", ":relay-check\"", "\nFAIL\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if strings.Contains(out, "Release") {
			t.Errorf("nothing was allocated, yet a Release step ran")
		}
	}
}

func TestCheckTLSCertificate(t *testing.T) {
	s := startRelay(t, true, nil)
	url := "turns:" + s.addr("tls")
	rep, out := run(t, Options{URL: url, Secret: testSecret})
	f := failed(t, rep)
	if f.Name != "TLS handshake" || !strings.Contains(f.Detail, "unknown authority") || !strings.Contains(f.Detail, "-ca FILE") {
		t.Errorf("self-signed certificate without -ca:\n%s", out)
	}
	rep, out = run(t, Options{URL: url, Secret: testSecret, Insecure: true})
	if !rep.OK() || !strings.Contains(out, "NOT verified") {
		t.Errorf("-insecure:\n%s", out)
	}
}

func TestCheckTLSOnPlainPort(t *testing.T) {
	s := startRelay(t, false, nil)
	rep, out := run(t, Options{URL: "turns:" + s.addr("tcp"), Secret: testSecret})
	f := failed(t, rep)
	if f.Name != "TLS handshake" || !strings.Contains(f.Detail, "TLS port") {
		t.Errorf("turns: against a plain TCP port:\n%s", out)
	}
}

func TestCheckUnreachable(t *testing.T) {
	const timeout = 400 * time.Millisecond
	// A UDP socket that never answers: a firewall dropping packets.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	rep, _ := run(t, Options{URL: "turn:" + silent.LocalAddr().String(), Secret: testSecret, Timeout: timeout})
	f := failed(t, rep)
	want := fmt.Sprintf("no answer from %s over udp within 400ms: is the port open in the firewall?", silent.LocalAddr())
	if f.Name != "STUN Binding" || f.Detail != want {
		t.Errorf("silent UDP port: got %q, want %q", f.Detail, want)
	}
	if el := time.Since(start); el > timeout+time.Second {
		t.Errorf("took %v with a %v timeout", el, timeout)
	}

	// A closed UDP port: ICMP port unreachable.
	closedUDP := silent.LocalAddr().String()
	_ = silent.Close()
	rep, out := run(t, Options{URL: "turn:" + closedUDP, Secret: testSecret, Timeout: timeout})
	f = failed(t, rep)
	if !strings.Contains(f.Detail, "connection refused by "+closedUDP+" over udp") {
		t.Errorf("closed UDP port:\n%s", out)
	}

	// A closed TCP port.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedTCP := l.Addr().String()
	_ = l.Close()
	rep, out = run(t, Options{URL: "turn:" + closedTCP + "?transport=tcp", Secret: testSecret, Timeout: timeout})
	f = failed(t, rep)
	if f.Name != "TCP connect" || !strings.Contains(f.Detail, "connection refused by "+closedTCP+" over tcp") {
		t.Errorf("closed TCP port:\n%s", out)
	}

	// A TCP listener that accepts and says nothing.
	mute, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	rep, out = run(t, Options{URL: "turn:" + mute.Addr().String() + "?transport=tcp", Secret: testSecret, Timeout: timeout})
	f = failed(t, rep)
	if f.Name != "STUN Binding" || !strings.Contains(f.Detail, "no answer from "+mute.Addr().String()+" over tcp within 400ms") {
		t.Errorf("mute TCP listener:\n%s", out)
	}
}

func TestCheckQuotaAndCapacity(t *testing.T) {
	s := startRelay(t, false, func(c *config.Config) { c.Limits.UserAllocations = 1 })
	rep, out := run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret, User: "quota-user"})
	f := failed(t, rep)
	if f.Name != "Allocate (second)" || f.Code != 486 || !strings.Contains(f.Detail, `486 Allocation Quota Reached: user id "quota-user"`) {
		t.Errorf("per-user quota:\n%s", out)
	}
	if !strings.Contains(out, "allocation deleted") {
		t.Errorf("the first allocation was not released:\n%s", out)
	}

	// Total cap 2: another user holds one allocation, so the check's second one is over.
	s = startRelay(t, false, func(c *config.Config) { c.Limits.UserAllocations, c.Limits.TotalAllocations = 2, 2 })
	u, err := parseServerURL("turn:" + s.addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(context.Background(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	creds, _ := s.auth.Mint("someone-else", time.Hour)
	other := &session{c: c, creds: credentials{creds.Username, creds.Password}}
	if err := other.allocate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, out = run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret})
	f = failed(t, rep)
	if f.Name != "Allocate (second)" || f.Code != 508 || !strings.Contains(f.Detail, "508 Insufficient Capacity: the server is at its allocation cap") {
		t.Errorf("total cap:\n%s", out)
	}
}

// TestCheckDraining: a relay that is draining refuses Allocate with 508 like a full one,
// but relay check must say it is draining, not blame the allocation cap or the ports.
func TestCheckDraining(t *testing.T) {
	s := startRelay(t, false, nil)
	s.Drain()
	rep, out := run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret})
	f := failed(t, rep)
	if f.Name != "Allocate" || f.Code != 508 || !strings.Contains(f.Detail, "508 Server Draining: the server is draining (shutting down or restarting)") {
		t.Errorf("draining server:\n%s", out)
	}
	if strings.Contains(f.Detail, "allocation cap") {
		t.Errorf("a drain reported as a full server:\n%s", out)
	}
}

func TestCheckPeer(t *testing.T) {
	// Default peer policy: loopback is denied, except the relay's own relay ports.
	s := startRelay(t, false, nil)
	rep, out := run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret, Peer: "127.0.0.1:9"})
	f := failed(t, rep)
	if f.Name != "CreatePermission" || f.Code != 403 ||
		f.Detail != "403 Forbidden: the server's peer policy refused 127.0.0.1:9 as a peer" {
		t.Errorf("denied peer: %q\n%s", f.Detail, out)
	}
	if !strings.Contains(out, "Release") {
		t.Errorf("no Release after the failure:\n%s", out)
	}

	s = startRelay(t, false, func(c *config.Config) { c.Peers.Allow = []string{"127.0.0.0/8"} })
	echo := testpeer.Echo(t).String()
	rep, out = run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret, Peer: echo})
	if !rep.OK() || !strings.Contains(out, "peer round trip") || !strings.Contains(out, "5/5 datagrams echoed by "+echo) {
		t.Errorf("echo peer:\n%s", out)
	}
	sink := testpeer.Sink(t).String()
	rep, out = run(t, Options{URL: "turn:" + s.addr("udp"), Secret: testSecret, Peer: sink, Timeout: 700 * time.Millisecond})
	f = failed(t, rep)
	if f.Name != "peer round trip" || !strings.Contains(f.Detail, "relayed data did not come back from "+sink) ||
		!strings.Contains(f.Detail, "relay port range blocked by a firewall") {
		t.Errorf("silent peer:\n%s", out)
	}
}

// iceServer answers like relay's {path}ice: fresh credentials for the in-process relay.
func iceServer(t *testing.T, s *server, token string, tls bool) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"missing or invalid API token: send Authorization: Bearer <token>"}`)
			return
		}
		c, err := s.auth.Mint("ice-user", time.Hour)
		if err != nil {
			t.Error(err)
		}
		turn := []string{"turn:" + s.addr("udp") + "?transport=udp", "turn:" + s.addr("tcp") + "?transport=tcp"}
		if tls {
			turn = append(turn, "turns:"+s.addr("tls")+"?transport=tcp")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"iceServers": []map[string]any{
				{"urls": "stun:" + s.addr("udp")},
				{"urls": turn, "username": c.Username, "credential": c.Password},
			},
			"ttl": 3600,
		})
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestCheckICE(t *testing.T) {
	s := startRelay(t, true, nil)
	ice := iceServer(t, s, "", true)
	rep, out := run(t, Options{URL: ice.URL + "/ice", CAFile: s.caFile})
	if !rep.OK() {
		t.Fatalf("ICE check failed:\n%s", out)
	}
	var urls []string
	for _, tg := range rep.Targets {
		urls = append(urls, tg.URL)
	}
	want := []string{ice.URL + "/ice", "stun:" + s.addr("udp"), "turn:" + s.addr("udp") + "?transport=udp",
		"turn:" + s.addr("tcp") + "?transport=tcp", "turns:" + s.addr("tls") + "?transport=tcp"}
	if strings.Join(urls, " ") != strings.Join(want, " ") {
		t.Errorf("checked %v, want %v", urls, want)
	}
	if !strings.Contains(out, "1 stun: and 3 turn:/turns: URLs, username ") || !strings.Contains(out, ":ice-user") {
		t.Errorf("ICE step detail:\n%s", out)
	}
	if n := strings.Count(out, "relay round trip"); n != 3 {
		t.Errorf("%d relay round trips, want 3 (udp, tcp, tls)", n)
	}
}

func TestCheckICEToken(t *testing.T) {
	s := startRelay(t, false, nil)
	ice := iceServer(t, s, "tok", false)
	rep, out := run(t, Options{URL: ice.URL + "/ice"})
	f := failed(t, rep)
	if f.Name != "ICE endpoint" || f.Code != 401 || !strings.Contains(f.Detail, "HTTP 401 Unauthorized: missing or invalid API token") ||
		!strings.Contains(f.Detail, "pass -token") {
		t.Errorf("no token:\n%s", out)
	}
	if rep, out = run(t, Options{URL: ice.URL + "/ice", Token: "tok"}); !rep.OK() {
		t.Errorf("with the token:\n%s", out)
	}
	// Credentials the relay does not accept (another secret signed them).
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := fmt.Sprintf("%d:x", time.Now().Add(time.Hour).Unix())
		_ = json.NewEncoder(w).Encode(map[string]any{"iceServers": []map[string]any{
			{"urls": []string{"turn:" + s.addr("udp")}, "username": user, "credential": auth.RESTPassword("other", user)}}})
	}))
	defer bad.Close()
	rep, out = run(t, Options{URL: bad.URL + "/ice"})
	if f := failed(t, rep); f.Code != 401 || !strings.Contains(out, "401 Unauthorized") {
		t.Errorf("ICE credentials refused:\n%s", out)
	}
	// Nothing listens.
	l, _ := net.Listen("tcp4", "127.0.0.1:0")
	addr := l.Addr().String()
	_ = l.Close()
	rep, out = run(t, Options{URL: "http://" + addr + "/ice"})
	if f := failed(t, rep); !strings.Contains(f.Detail, "connection refused by "+addr) {
		t.Errorf("ICE endpoint down:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, o := range []Options{
		{},
		{URL: "turn:127.0.0.1:3478"},
		{URL: "turn:127.0.0.1:3478", Secret: "s", Password: "p"},
		{URL: "turn:127.0.0.1:3478", User: "u"},
		{URL: "turn:127.0.0.1:3478", Secret: "s", User: "a:b"},
		{URL: "http://127.0.0.1:1/ice", Secret: "s"},
		{URL: "turn:127.0.0.1:3478", Secret: "s", Token: "t"},
		{URL: "turns:127.0.0.1:5349?transport=udp", Secret: "s"},
		{URL: "turn:127.0.0.1:99999", Secret: "s"},
		{URL: "turn:::1:3478", Secret: "s"},
		{URL: "turn:127.0.0.1?transport=sctp", Secret: "s"},
		{URL: "ftp://x", Secret: "s"},
		{URL: "turn:127.0.0.1", Secret: "s", Peer: "nope"},
		{URL: "turn:127.0.0.1", Secret: "s", CAFile: "/nonexistent"},
		{URL: "turn:127.0.0.1", Secret: "s", Count: -1},
	} {
		rep, err := Run(context.Background(), o)
		var ue *UsageError
		if !errors.As(err, &ue) || len(rep.Targets) != 0 {
			t.Errorf("%+v: err %v, want a UsageError before any check", o, err)
		}
	}
}

func TestParseServerURL(t *testing.T) {
	for _, tc := range []struct {
		in, addr, transport string
	}{
		{"turn:example.org", "example.org:3478", "udp"},
		{"turn:example.org:3479?transport=tcp", "example.org:3479", "tcp"},
		{"TURN:example.org?transport=UDP", "example.org:3478", "udp"},
		{"turns:example.org", "example.org:5349", "tls"},
		{"turns:example.org:443?transport=tcp", "example.org:443", "tls"},
		{"turn:[2001:db8::1]:3478?transport=udp", "[2001:db8::1]:3478", "udp"},
		{"turn:[2001:db8::1]", "[2001:db8::1]:3478", "udp"},
		{"stun:203.0.113.10", "203.0.113.10:3478", "udp"},
		{"stuns:203.0.113.10", "203.0.113.10:5349", "tls"},
	} {
		u, err := parseServerURL(tc.in)
		if err != nil || u.addr() != tc.addr || u.transport != tc.transport {
			t.Errorf("%s: %s %s %v, want %s %s", tc.in, u.addr(), u.transport, err, tc.addr, tc.transport)
		}
	}
}

// TestDiagnoses covers the answers an in-process relay cannot be made to give.
func TestDiagnoses(t *testing.T) {
	p := &probe{u: serverURL{host: "203.0.113.10", port: 3478, transport: "udp"}, timeout: 5 * time.Second,
		creds: credentials{username: "1795246460:alice"}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&stunError{Method: stun.MethodRefresh, Code: 437, Reason: "Allocation Mismatch"},
			"437 Allocation Mismatch: the server no longer has this allocation (expired or already deleted)"},
		{&stunError{Method: stun.MethodAllocate, Code: 437, Reason: "Allocation Mismatch"},
			"437 Allocation Mismatch: the server already has an allocation for this client address and port"},
		{&stunError{Method: stun.MethodAllocate, Code: 486, Reason: "Allocation Quota Reached"},
			`486 Allocation Quota Reached: user id "alice" already holds as many allocations as the server allows per user (relay: [limits] user_allocations); wait for them to expire or use another -user`},
		{&stunError{Method: stun.MethodAllocate, Code: 401, Reason: "Unauthorized"},
			`401 Unauthorized: the server rejected the credentials — wrong secret, expired, or username not in <expiry>:<user> form (username "1795246460:alice")`},
		{fmt.Errorf("%w: %w", &stunError{Method: stun.MethodAllocate, Code: 401, Reason: "Unauthorized"}, errNoChallenge),
			"401 Unauthorized without REALM and NONCE: the server does not speak TURN long-term credentials"},
		{&stunError{Method: stun.MethodAllocate, Code: 599, Reason: "Odd"}, "599 Odd: the server refused Allocate"},
		{errNoAnswer, "no answer from 203.0.113.10:3478 over udp within 5s: is the port open in the firewall?"},
		{&roundTripError{got: 0, want: 5, reached: 0, to: &net.UDPAddr{IP: net.IPv4(203, 0, 113, 10), Port: 50999}},
			"relayed data did not come back: relay port range blocked by a firewall? (0/5 datagrams within 5s; none reached the second allocation's relayed address 203.0.113.10:50999)"},
		{&roundTripError{got: 0, want: 5, reached: 5},
			"relayed data did not come back: relay port range blocked by a firewall? (0/5 datagrams within 5s; the second allocation received 5 and echoed them, none reached the first)"},
		{&roundTripError{got: 3, want: 5}, "only 3/5 datagrams came back within 5s: packet loss on the relay path"},
		{&whereError{"CreatePermission on the second allocation, for 203.0.113.10:50123", &stunError{Method: stun.MethodCreatePermission, Code: 403, Reason: "Forbidden"}},
			"403 Forbidden: the server's peer policy refused the address as a peer (CreatePermission on the second allocation, for 203.0.113.10:50123)"},
	} {
		if got := p.diagnose(tc.err); got != tc.want {
			t.Errorf("%v:\n got %s\nwant %s", tc.err, got, tc.want)
		}
	}
	if got := p.diagnosePermission("the relayed address")(&stunError{Method: stun.MethodCreatePermission, Code: 403, Reason: "Forbidden"}); got != "403 Forbidden: the server's peer policy refused the relayed address as a peer" {
		t.Errorf("403: %s", got)
	}
}

func TestPrint(t *testing.T) {
	rep := Report{Targets: []Target{{URL: "turn:203.0.113.10:3478?transport=udp", Steps: []Step{
		{Name: "STUN Binding", OK: true, Duration: 3100 * time.Microsecond, Detail: "reflexive address 198.51.100.7:53211"},
		{Name: "Allocate", OK: true, Duration: 4 * time.Millisecond, Detail: "relayed address 203.0.113.10:50123 (lifetime 600 s)"},
		{Name: "Allocate (second)", OK: true, Duration: 2200 * time.Microsecond, Detail: "relayed address 203.0.113.10:50999"},
		{Name: "CreatePermission", OK: true, Duration: 1900 * time.Microsecond},
		{Name: "relay round trip", OK: true, Duration: 1400 * time.Microsecond, Detail: "5/5 datagrams through two allocations"},
	}}}}
	want := `turn:203.0.113.10:3478?transport=udp
  ok    STUN Binding          3.1 ms   reflexive address 198.51.100.7:53211
  ok    Allocate              4.0 ms   relayed address 203.0.113.10:50123 (lifetime 600 s)
  ok    Allocate (second)     2.2 ms   relayed address 203.0.113.10:50999
  ok    CreatePermission      1.9 ms
  ok    relay round trip      1.4 ms   5/5 datagrams through two allocations
PASS
`
	if got := rep.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	rep.Targets[0].Steps[1].OK = false
	if !strings.HasSuffix(rep.String(), "\nFAIL\n") || !strings.Contains(rep.String(), "  FAIL  Allocate ") {
		t.Errorf("failure:\n%s", rep)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, cond)
}
