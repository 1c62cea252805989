package signaling

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
)

func iceGet(t *testing.T, url string, hdr map[string]string, out any) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decoding %s: %v", url, err)
		}
	}
	return resp
}

type rtcConfig struct {
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
	TTL int64 `json:"ttl"`
}

func TestICEConfiguration(t *testing.T) {
	s := startSignal(t, nil)
	var cfg rtcConfig
	resp := iceGet(t, s.base+"ice", map[string]string{"Host": "turn.example.org:9001", "Origin": "https://app.test"}, &cfg)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET ice: %d %v", resp.StatusCode, resp.Header)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.test" {
		t.Errorf("CORS not reflected on the ICE endpoint")
	}
	if len(cfg.ICEServers) != 2 || cfg.TTL != 3600 {
		t.Fatalf("iceServers %+v ttl %d", cfg.ICEServers, cfg.TTL)
	}
	if got := strings.Join(cfg.ICEServers[0].URLs, " "); got != "stun:turn.example.org:3478" {
		t.Errorf("stun urls %q: HOST must come from the request's Host", got)
	}
	turn := cfg.ICEServers[1]
	if got := strings.Join(turn.URLs, " "); got != "turn:turn.example.org:3478?transport=udp turn:turn.example.org:3478?transport=tcp" {
		t.Errorf("turn urls %q", got)
	}
	a, _ := auth.New(auth.Options{Secrets: []string{"signal-test-secret"}, MaxTTL: time.Hour * 24})
	if _, _, _, ok := a.Candidates(turn.Username, "relay"); !ok || turn.Credential != auth.RESTPassword("signal-test-secret", turn.Username) {
		t.Errorf("credentials %q/%q do not verify", turn.Username, turn.Credential)
	}
	if got := testutil.ToFloat64(s.metrics.ICECredentials); got != 1 {
		t.Errorf("relay_ice_credentials_issued_total = %v", got)
	}

	// The TURN REST draft form.
	var rest struct {
		Username, Password string
		TTL                int64
		URIs               []string
	}
	iceGet(t, s.base+"ice?service=turn", nil, &rest)
	if !strings.Contains(rest.Username, ":web-") || rest.Password != auth.RESTPassword("signal-test-secret", rest.Username) || rest.TTL != 3600 || len(rest.URIs) != 2 {
		t.Errorf("REST form: %+v", rest)
	}
	if resp := iceGet(t, s.base+"ice?service=stun", nil, nil); resp.StatusCode != 400 {
		t.Errorf("service=stun: %d, want 400", resp.StatusCode)
	}
}

func TestICEPublicHostAndTTL(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) {
		c.PublicHost = "relay.example.net"
		c.CredentialTTL = 10 * time.Minute
	})
	var cfg rtcConfig
	iceGet(t, s.base+"ice", map[string]string{"Host": "internal:9001"}, &cfg)
	if cfg.ICEServers[0].URLs[0] != "stun:relay.example.net:3478" || cfg.TTL != 600 {
		t.Errorf("public_host and credential_ttl not applied: %+v", cfg)
	}
}

func TestICETokens(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.APITokens = []string{"tok-one", "tok-two"} })
	var e map[string]string
	resp := iceGet(t, s.base+"ice", nil, &e)
	if resp.StatusCode != 401 || e["error"] == "" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: %d %v %v", resp.StatusCode, e, resp.Header)
	}
	if resp := iceGet(t, s.base+"ice", map[string]string{"Authorization": "Bearer wrong"}, nil); resp.StatusCode != 401 {
		t.Errorf("wrong token: %d", resp.StatusCode)
	}
	if resp := iceGet(t, s.base+"ice", map[string]string{"Authorization": "Bearer tok-two"}, nil); resp.StatusCode != 200 {
		t.Errorf("right token: %d", resp.StatusCode)
	}
	// With a token the caller names the user, and a bad name is refused.
	var rest struct{ Username string }
	iceGet(t, s.base+"ice?service=turn&username=alice", map[string]string{"Authorization": "Bearer tok-one"}, &rest)
	if !strings.HasSuffix(rest.Username, ":alice") {
		t.Errorf("username with a token: %q, want <expiry>:alice", rest.Username)
	}
	for _, bad := range []string{"ice?username=a%20b", "ice?username=" + strings.Repeat("x", 65)} {
		if resp := iceGet(t, s.base+bad, map[string]string{"Authorization": "Bearer tok-one"}, nil); resp.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", bad, resp.StatusCode)
		}
	}
	if got := testutil.ToFloat64(s.metrics.ICERequestsDenied.WithLabelValues("token")); got != 2 {
		t.Errorf("relay_ice_requests_denied_total{reason=token} = %v", got)
	}
	// Preflight for the Authorization header.
	req, _ := http.NewRequest(http.MethodOptions, s.base+"ice", nil)
	req.Header.Set("Origin", "https://app.test")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	pre, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.StatusCode != 204 || !strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
}

func TestICERateLimit(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.ICERequestsPerMinute = 5 })
	for i := 0; i < 5; i++ {
		if resp := iceGet(t, s.base+"ice", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	var e map[string]string
	resp := iceGet(t, s.base+"ice", nil, &e)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || e["error"] == "" {
		t.Errorf("past the rate: %d %v %v", resp.StatusCode, resp.Header, e)
	}
	if got := testutil.ToFloat64(s.metrics.ICECredentials); got != 5 {
		t.Errorf("credentials issued %v, want 5", got)
	}
}

func TestRateLimiterRefills(t *testing.T) {
	l := newRateLimiter(60) // one a second
	ip := clientIPFrom("192.0.2.1:1")
	now := time.Unix(1000, 0)
	for i := 0; i < 60; i++ {
		if ok, _ := l.allow(ip, now); !ok {
			t.Fatalf("burst request %d refused", i)
		}
	}
	if ok, wait := l.allow(ip, now); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("61st: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.allow(ip, now.Add(1100*time.Millisecond)); !ok {
		t.Fatal("no refill after a second")
	}
	l.prune(now.Add(2 * time.Minute))
	if len(l.buckets) != 0 {
		t.Errorf("full buckets not pruned")
	}
}

// TestPerSourceIPv6Prefix: signaling's per-source limits count an IPv6 client by its
// /64 (signaling listens on IPv6 by default, and a host may send from any address of
// its /64): the ICE endpoint's rate, and the peers per source (the same key).
func TestPerSourceIPv6Prefix(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.ICERequestsPerMinute = 5 })
	get := func(remote string) int {
		r := httptest.NewRequest("GET", "/ice", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		s.Server.serveICE(w, r)
		return w.Code
	}
	for i := range 5 {
		if code := get(fmt.Sprintf("[2001:db8:1:1::%x]:40000", i+1)); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	if code := get("[2001:db8:1:1:ffff::1]:40000"); code != 429 {
		t.Errorf("a sixth request from another address of the same /64: %d, want 429", code)
	}
	if code := get("[2001:db8:1:2::1]:40000"); code != 200 {
		t.Errorf("another /64: %d, want 200", code)
	}
	for _, c := range []struct{ remote, want string }{
		{"[2001:db8:1:1:2:3:4:5]:1", "2001:db8:1:1::"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7"},
		{"192.0.2.7:1", "192.0.2.7"},
	} {
		if got := clientSource(&http.Request{RemoteAddr: c.remote}); got.String() != c.want {
			t.Errorf("clientSource(%s) = %s, want %s", c.remote, got, c.want)
		}
	}
}
