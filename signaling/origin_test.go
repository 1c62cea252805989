package signaling

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/testcert"
)

func TestSameOrigin(t *testing.T) {
	cases := []struct {
		origin, host string
		tls          bool
		publicHost   string
		want         bool
	}{
		{"http://127.0.0.1:9001", "127.0.0.1:9001", false, "", true},
		{"http://127.0.0.1:9001", "127.0.0.1:9002", false, "", false},
		{"https://127.0.0.1:9001", "127.0.0.1:9001", false, "", false}, // scheme is the listener's
		{"http://127.0.0.1:9001", "127.0.0.1:9001", true, "", false},
		{"https://127.0.0.1:9001", "127.0.0.1:9001", true, "", true},
		{"https://relay.example.org", "relay.example.org:443", true, "", true}, // default ports
		{"http://Relay.Example.org", "relay.example.org", false, "", true},
		{"http://relay.example.org.", "relay.example.org", false, "", true},
		{"http://[::1]:9001", "[::1]:9001", false, "", true},
		{"http://[::1]", "[::1]", false, "", true},
		{"http://localhost:9001", "127.0.0.1:9001", false, "", false},
		// With public_host set, another name is not this server's (DNS rebinding); an
		// address cannot be rebound.
		{"http://evil.example:9001", "evil.example:9001", false, "relay.example.org", false},
		{"http://relay.example.org:9001", "relay.example.org:9001", false, "relay.example.org", true},
		{"http://203.0.113.5:9001", "203.0.113.5:9001", false, "relay.example.org", true},
		// Not an origin.
		{"null", "null", false, "", false},
		{"http://u@h:1", "h:1", false, "", false},
		{"http://h:1/", "h:1", false, "", false},
		{"http://h:1", "h:1:2", false, "", false},
		{"http://h:", "h:", false, "", false},
	}
	for _, tc := range cases {
		cfg := config.Default().Signal
		cfg.PublicHost = tc.publicHost
		s := &Server{}
		s.live.Store(&cfg)
		r := httptest.NewRequest(http.MethodGet, "/peerjs", nil)
		r.Host = tc.host
		if !tc.tls {
			r.TLS = nil
		} else if r.TLS == nil {
			r.TLS = &tls.ConnectionState{}
		}
		if got := s.sameOrigin(tc.origin, r); got != tc.want {
			t.Errorf("sameOrigin(%q, Host %q, tls %v, public_host %q) = %v, want %v", tc.origin, tc.host, tc.tls, tc.publicHost, got, tc.want)
		}
	}
}

// postProbe is what the demo page sends when its socket closed before it was open: a
// POST carries the page's Origin like the WebSocket did, and its answer is readable.
func postProbe(t *testing.T, client *http.Client, url, origin string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Origin", origin)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e["error"]
}

// TestOwnPagesAllowedWhateverAllowedOrigins is the deploy guide's case: allowed_origins
// names the application, and relay's own demo page must still connect.
func TestOwnPagesAllowedWhateverAllowedOrigins(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.AllowedOrigins = []string{"https://app.example.org"} })
	own := "http://" + s.Addr().String()
	c := s.dialURL(t, s.wsURL("key=peerjs&id=demo&token=t"), http.Header{"Origin": {own}})
	c.expect("OPEN")
	if resp := iceGet(t, s.base+"ice", map[string]string{"Origin": own}, nil); resp.StatusCode != 200 {
		t.Errorf("ICE from the server's own page: %d", resp.StatusCode)
	}
	// Another origin is still refused, on the socket and on the probe the page makes.
	other := "http://localhost:" + strings.Split(s.Addr().String(), ":")[1]
	if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=x&token=t"), http.Header{"Origin": {other}}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade from another origin: %v %v", resp, err)
	}
	if code, msg := postProbe(t, http.DefaultClient, s.base+"peerjs", other); code != 403 || msg != "origin not allowed" {
		t.Errorf("probe from another origin: %d %q, want 403 origin not allowed", code, msg)
	}
	if code, _ := postProbe(t, http.DefaultClient, s.base+"peerjs", own); code == 403 {
		t.Errorf("probe from the server's own page: 403")
	}

	// Over TLS the page's origin is https.
	certFile, keyFile, clientTLS := testcert.Write(t)
	st := startSignal(t, func(c *config.Signal) {
		c.AllowedOrigins = []string{"https://app.example.org"}
		c.TLSCert, c.TLSKey = certFile, keyFile
	})
	d := &websocket.Dialer{TLSClientConfig: clientTLS}
	wss := "wss://" + st.Addr().String() + "/peerjs?key=peerjs&id=demo&token=t"
	cs := st.dialWith(t, wss, http.Header{"Origin": {"https://" + st.Addr().String()}}, nil, d)
	cs.expect("OPEN")
	if _, resp, err := d.Dial(wss, http.Header{"Origin": {"http://" + st.Addr().String()}}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade from the http origin of a TLS listener: %v %v", resp, err)
	}
}

// syncBuffer is a log sink that handlers write to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRefusedOriginLogged: a refused origin is logged at info, once per few seconds
// however many requests, with the origin cut short and made printable.
func TestRefusedOriginLogged(t *testing.T) {
	var logs syncBuffer
	s := startSignalLog(t, func(c *config.Signal) { c.AllowedOrigins = []string{"https://app.example.org"} },
		slog.New(slog.NewTextHandler(&logs, nil)))
	origin := "https://\xc3\xa9vil.example" + strings.Repeat("a", 500)
	for range 5 {
		if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL("key=peerjs&id=x&token=t"), http.Header{"Origin": {origin}}); err == nil || resp.StatusCode != 403 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		if resp := iceGet(t, s.base+"ice", map[string]string{"Origin": origin}, nil); resp.StatusCode != 403 {
			t.Fatalf("ice: %d", resp.StatusCode)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "refused a request from an origin"); n != 1 {
		t.Fatalf("%d lines for 10 refusals within %v, want 1:\n%s", n, refusedOriginEvery, out)
	}
	want := `origin=https://??vil.example` + strings.Repeat("a", maxLoggedOrigin-len("https://\xc3\xa9vil.example")) + `... ip=127.0.0.1 route=peerjs suppressed=0`
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, "signal.allowed_origins") || !strings.Contains(out, want) {
		t.Errorf("log line %q, want INFO, the key to change and %q", out, want)
	}
	if got := testutil.ToFloat64(s.metrics.SignalRejected.WithLabelValues("origin")); got != 5 {
		t.Errorf("relay_signal_rejected_total{reason=origin} = %v, want 5", got)
	}
}

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1000, 0)
	if ok, n := l.allow(t0, 5*time.Second); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 7 {
		if ok, _ := l.allow(t0.Add(time.Duration(i)*time.Second/2), 5*time.Second); ok {
			t.Fatalf("line %d within the period let through", i)
		}
	}
	if ok, n := l.allow(t0.Add(5*time.Second), 5*time.Second); !ok || n != 7 {
		t.Errorf("after the period: %v, %d suppressed; want true, 7", ok, n)
	}
	if ok, n := l.allow(t0.Add(11*time.Second), 5*time.Second); !ok || n != 0 {
		t.Errorf("next: %v %d", ok, n)
	}
}
