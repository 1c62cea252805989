package signaling

import (
	"strings"
	"testing"

	"github.com/relayproject/relay/config"
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
