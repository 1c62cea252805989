package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBrowserFleet: the peerjs-fleet scenario across two relay nodes sharing one
// redis-server. Chromium with the PeerJS 1.5.5 client: page A (the callee) on node 1's
// signaling, page B (the caller) on node 2's, both relay-only with the credentials of
// node 1's {path}ice (which carries both nodes' TURN URLs). The caller's click must
// arrive as alert('Hello World!') on page A over a relay/relay pair, and the OFFER must
// have gone from node 2 to node 1 through the cluster.
func TestBrowserFleet(t *testing.T) {
	chromium, node, dir, artifacts := browserSetup(t)
	// The issue names the client: the pages load node_modules/peerjs (pinned in package.json).
	var pkg struct{ Version string }
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules/peerjs/package.json")); err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version != "1.5.5" {
		t.Fatalf("node_modules/peerjs is version %q (%v), want 1.5.5", pkg.Version, err)
	}
	url := startRedisServer(t)
	pages := newBrowserPages(t, dir)
	// The test polls node 1's {path}ice below: lift the per-IP ICE rate limit.
	cfg := func(name string) string {
		return browserRelayConfig(t, true) + "ice_requests_per_minute = 100000\n" +
			fmt.Sprintf("[cluster]\nredis = %q\nnode = %q\n", url, name)
	}
	n1 := startRelay(t, cfg("n1"))
	n2 := startRelay(t, cfg("n2"))
	// runBrowserScenario reports node 1's log on failure; node 2's is here.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node 2 log (tail):\n%s", tail(n2.log(), 40))
		}
	})
	n1TURN := "turn:" + n1.addr("udp") + "?transport=udp"
	n2TURN := "turn:" + n2.addr("udp") + "?transport=udp"
	waitFor(t, "both nodes' TURN URLs in node 1's ICE answer", func() bool {
		urls, _, _ := iceTURN(t, n1)
		return slices.Contains(urls, n1TURN) && slices.Contains(urls, n2TURN)
	})

	b1, b2 := n1.metrics(), n2.metrics()
	env := []string{
		"SIGNAL_URL=http://" + n1.addr("signal") + "/",
		"SIGNAL_URL_B=http://" + n2.addr("signal") + "/",
		"ICE_URL=http://" + n1.addr("signal") + "/ice",
		"PAGES_URL=" + pages.url,
		"ARTIFACTS=" + artifacts,
		"CHROMIUM=" + chromium,
	}
	res := runBrowserScenario(t, node, dir, "peerjs-fleet", env, n1)
	a1, a2 := n1.metrics(), n2.metrics()
	d1 := func(name string) float64 { return a1[name] - b1[name] }
	d2 := func(name string) float64 { return a2[name] - b2[name] }

	if res.Pair.Local != "relay" || res.Pair.Remote != "relay" {
		t.Fatalf("nominated pair %+v, want relay/relay", res.Pair)
	}
	nodeOf := map[string]string{}
	for _, tr := range []string{"udp", "tcp"} {
		nodeOf["turn:"+n1.addr(tr)+"?transport="+tr] = "node 1"
		nodeOf["turn:"+n2.addr(tr)+"?transport="+tr] = "node 2"
	}
	t.Logf("caller (page B) relayed through %s (%s), callee (page A) through %s (%s)",
		nodeOf[res.Caller.URL], res.Caller.URL, nodeOf[res.Callee.URL], res.Callee.URL)
	if nodeOf[res.Caller.URL] == "" || nodeOf[res.Callee.URL] == "" {
		t.Errorf("a page relayed through a TURN URL of neither node: caller %q, callee %q", res.Caller.URL, res.Callee.URL)
	}
	// The caller's OFFER entered node 2's signaling and left it for node 1 through Redis.
	if d2(`relay_signal_messages_total{type="OFFER"}`) < 1 {
		t.Errorf("node 2's relay_signal_messages_total{type=\"OFFER\"} did not move: the caller's offer did not reach node 2")
	}
	if d2("relay_cluster_messages_sent_total") < 1 || d1("relay_cluster_messages_received_total") < 1 {
		t.Errorf("no message crossed from node 2 to node 1: node 1 %v, node 2 %v", pick(a1, "relay_cluster_"), pick(a2, "relay_cluster_"))
	}
	// The answer and node 1's candidates went back the other way.
	if d1("relay_cluster_messages_sent_total") < 1 || d2("relay_cluster_messages_received_total") < 1 {
		t.Errorf("no message crossed from node 1 to node 2: node 1 %v, node 2 %v", pick(a1, "relay_cluster_"), pick(a2, "relay_cluster_"))
	}
	// The data crossed the fleet's TURN servers (either node's, by the browsers' choice).
	relayed := d1(`relay_turn_relayed_packets_total{direction="client_to_peer"}`) +
		d2(`relay_turn_relayed_packets_total{direction="client_to_peer"}`)
	if relayed < 4 {
		t.Errorf("the fleet relayed %v datagrams from clients to peers during the scenario, want some", relayed)
	}
	for _, m := range []map[string]float64{a1, a2} {
		for name := range m {
			if strings.HasPrefix(name, "relay_turn_peer_denied_total") && (d1(name) != 0 || d2(name) != 0) {
				t.Errorf("%s rose (node 1 %v, node 2 %v): a node refused a relay-to-relay peer", name, d1(name), d2(name))
			}
		}
	}
}
