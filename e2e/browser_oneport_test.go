package e2e

import (
	"testing"
)

// TestBrowserOnePort: Chromium against relay with TURN over TLS and https/wss signaling
// on one port (a free high port here, 443 in deploy/README.md), and no other TURN
// listener: the page, the WebSocket, {path}ice and the turns: URL all name that port.
//   - peerjs-oneport: PeerJS 1.5.5 with secure: true, relay-only, the test page served
//     under the port's origin; the nominated pair is relay/relay over TLS on both sides.
//   - demo-oneport: relay's demo page from that port, "Relay only": relay/relay over TLS.
func TestBrowserOnePort(t *testing.T) {
	chromium, node, dir, artifacts := browserSetup(t)
	for _, scenario := range []string{"peerjs-oneport", "demo-oneport"} {
		t.Run(scenario, func(t *testing.T) {
			p, addr := startOnePortBrowserRelay(t)
			before := p.metrics()
			env := []string{
				"SIGNAL_URL=https://" + addr + "/",
				"ARTIFACTS=" + artifacts,
				"CHROMIUM=" + chromium,
				"IGNORE_CERT_ERRORS=1", // the test certificate, for the page, wss and turns:
			}
			res := runBrowserScenario(t, node, dir, scenario, env, p)
			wantRelayedCall(t, res, before, p.metrics())
			if scenario == "peerjs-oneport" {
				want := "turns:" + addr + "?transport=tcp"
				for _, side := range [][2]string{{res.Caller.URL, res.Caller.RelayProtocol}, {res.Callee.URL, res.Callee.RelayProtocol}} {
					if side != [2]string{want, "tls"} {
						t.Errorf("a page relays through %s over %s, want %s over tls", side[0], side[1], want)
					}
				}
			}
		})
	}
}

// wantRelayedCall checks a browser scenario's call through relay: a relay/relay pair,
// an allocation per page, datagrams relayed, the OFFER through relay's signaling
// (metrics before and after the scenario).
func wantRelayedCall(t *testing.T, res browserResult, before, after map[string]float64) {
	t.Helper()
	if res.Pair.Local != "relay" || res.Pair.Remote != "relay" {
		t.Fatalf("nominated pair %+v, want relay/relay", res.Pair)
	}
	delta := func(name string) float64 { return after[name] - before[name] }
	if n := delta(`relay_turn_allocations_total{result="success"}`); n < 2 {
		t.Errorf("%v allocations during the scenario, want one per page at least", n)
	}
	if n := delta(`relay_turn_relayed_packets_total{direction="client_to_peer"}`); n < 4 {
		t.Errorf("relay counted %v datagrams from clients to peers, want some", n)
	}
	if delta(`relay_signal_messages_total{type="OFFER"}`) < 1 {
		t.Errorf("no OFFER went through relay's signaling")
	}
}
