package signaling

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayproject/relay/config"
)

// revocations records what a server revokes.
type revocations struct {
	mu   sync.Mutex
	list []string
	at   []time.Time
}

func (r *revocations) revoke(user string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, user)
	r.at = append(r.at, until)
}

func (r *revocations) users() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.list, " ")
}

// TestBindCredentials: with bind_credentials, {path}ice answers only a connected peer
// (its id and token), with credentials in the peer's name; the peer's credentials are
// revoked when it sends LEAVE, and when its socket stays gone for credential_grace, but
// not when it comes back with the same token within it.
func TestBindCredentials(t *testing.T) {
	var r revocations
	s := startSignalRevoking(t, func(c *config.Signal) {
		c.BindCredentials = true
		c.CredentialGrace = 300 * time.Millisecond
		c.APITokens = nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), r.revoke)
	for _, q := range []string{"", "?peer=p1", "?peer=p1&token=t1", "?service=turn&username=root"} {
		if resp := iceGet(t, s.base+"ice"+q, nil, nil); resp.StatusCode != 403 {
			t.Errorf("ice%s without a live peer: %d, want 403", q, resp.StatusCode)
		}
	}
	if n := testutil.ToFloat64(s.metrics.ICERequestsDenied.WithLabelValues("no_peer")); n != 4 {
		t.Errorf("relay_ice_requests_denied_total{reason=no_peer} = %v", n)
	}
	p1 := s.dial(t, "p1", "t1")
	p1.expect("OPEN")
	if resp := iceGet(t, s.base+"ice?peer=p1&token=not-t1", nil, nil); resp.StatusCode != 403 {
		t.Errorf("another token: %d, want 403", resp.StatusCode)
	}
	var cfg rtcConfig
	if resp := iceGet(t, s.base+"ice?peer=p1&token=t1", nil, &cfg); resp.StatusCode != 200 || !strings.HasSuffix(cfg.ICEServers[1].Username, ":p1") {
		t.Fatalf("ice for p1: %d %+v", resp.StatusCode, cfg)
	}
	// The socket goes and the same token comes back within the grace: nothing revoked.
	_ = p1.ws.Close()
	<-p1.done
	p1 = s.dial(t, "p1", "t1")
	p1.expect("OPEN")
	time.Sleep(600 * time.Millisecond) // twice the grace: what is checked is that nothing happens
	if got := r.users(); got != "" {
		t.Fatalf("revoked %q although p1 came back within the grace", got)
	}
	// Gone for good: revoked after the grace.
	start := time.Now()
	_ = p1.ws.Close()
	waitFor(t, "p1's credentials revoked", func() bool { return r.users() == "p1" })
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("revoked %v after the socket went, before the grace of 300 ms", d)
	}
	if until := r.at[0]; until.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("revocation until %v: before the credentials (an hour) expire", until)
	}

	// LEAVE: at once.
	p2 := s.dial(t, "p2", "t2")
	p2.expect("OPEN")
	iceGet(t, s.base+"ice?peer=p2&token=t2", nil, nil)
	p2.send(map[string]any{"type": "LEAVE"})
	waitFor(t, "p2's credentials revoked", func() bool { return r.users() == "p1 p2" })

	// A peer that never asked for credentials has none to revoke; one whose socket is
	// open when the server closes is not revoked.
	p3 := s.dial(t, "p3", "t3")
	p3.expect("OPEN")
	_ = p3.ws.Close()
	p4 := s.dial(t, "p4", "t4")
	p4.expect("OPEN")
	iceGet(t, s.base+"ice?peer=p4&token=t4", nil, nil)
	time.Sleep(400 * time.Millisecond)
	if got := r.users(); got != "p1 p2" {
		t.Errorf("revoked %q, want p1 p2", got)
	}
}

// TestBindCredentialsTrustedCaller: a backend with an api_tokens token still names its
// users with bind_credentials on.
func TestBindCredentialsTrustedCaller(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) {
		c.BindCredentials = true
		c.APITokens = []string{"backend-token-0123456789"}
	})
	var rest struct{ Username string }
	resp := iceGet(t, s.base+"ice?service=turn&username=alice", map[string]string{"Authorization": "Bearer backend-token-0123456789"}, &rest)
	if resp.StatusCode != 200 || !strings.HasSuffix(rest.Username, ":alice") {
		t.Errorf("trusted caller: %d %+v", resp.StatusCode, rest)
	}
	if resp := iceGet(t, s.base+"ice", map[string]string{"Authorization": "Bearer backend-token-0123456789"}, nil); resp.StatusCode != 403 {
		t.Errorf("trusted caller naming nobody: %d, want 403", resp.StatusCode)
	}
}
