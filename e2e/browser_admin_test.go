package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"
)

// TestBrowserAdmin: the operator's hand on a browser call. Two Chromium pages in a
// relay-only PeerJS 1.5.5 call with [signal] bind_credentials (each page's TURN user id
// is its peer id), the caller sending ticks over the data channel:
//   - peerjs-revoke: revoking the caller's id through the admin API stops the ticks
//     within 2 s;
//   - peerjs-bind: the caller's page closes its signaling socket (PeerJS's
//     peer.disconnect(), which keeps the data connection): the ticks go on through the
//     grace, and stop within 2 s after it, when relay revokes the caller's credentials.
func TestBrowserAdmin(t *testing.T) {
	chromium, node, dir, artifacts := browserSetup(t)
	pages := newBrowserPages(t, dir)
	const grace = 2 * time.Second
	for _, scenario := range []string{"peerjs-revoke", "peerjs-bind"} {
		t.Run(scenario, func(t *testing.T) {
			p := startRelay(t, browserRelayConfig(t, true)+fmt.Sprintf("bind_credentials = true\ncredential_grace = %q\n", grace))
			env := []string{
				"SIGNAL_URL=http://" + p.addr("signal") + "/",
				"PAGES_URL=" + pages.url,
				"ARTIFACTS=" + artifacts,
				"CHROMIUM=" + chromium,
				"ADMIN_URL=http://" + p.addr("admin"),
				fmt.Sprintf("GRACE_MS=%d", grace.Milliseconds()),
			}
			res := runBrowserScenario(t, node, dir, scenario, env, p)
			if res.Pair.Local != "relay" || res.Pair.Remote != "relay" {
				t.Fatalf("nominated pair %+v, want relay/relay", res.Pair)
			}
			caller, callee := res.IDs.Caller, res.IDs.Callee
			// Each page's allocations are in its peer's name.
			if callee == "" || len(p.allocations(t, callee)) == 0 {
				t.Errorf("no allocation of the callee %q: %+v", callee, p.allocations(t, ""))
			}
			if n := len(p.allocations(t, caller)); n != 0 {
				t.Errorf("the caller %q still holds %d allocations", caller, n)
			}
			why := map[string]string{"peerjs-revoke": "revoked", "peerjs-bind": "revoked"}[scenario]
			if !regexp.MustCompile(`"msg":"allocation ended".*"user":"` + caller + `".*"reason":"` + why + `"`).MatchString(p.log()) {
				t.Errorf("no allocation of %s ended with reason %s:\n%s", caller, why, tail(p.log(), 20))
			}
			if scenario == "peerjs-bind" && !regexp.MustCompile(`"msg":"bind_credentials: the peer left; revoking the credentials issued to it","user":"`+caller+`"`).MatchString(p.log()) {
				t.Errorf("no bind_credentials revocation of %s in the log", caller)
			}
		})
	}
}
