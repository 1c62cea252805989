package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// needIPv6 skips a test on a host without IPv6 loopback (a container started with IPv6
// off); CI machines have it.
func needIPv6(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	_ = c.Close()
}

// TestIPv6Uclient: relay with listeners on 127.0.0.1 and ::1 and IPv6 relayed addresses
// on ::1 ([turn] relay_ip6). coturn's turnutils_uclient asks for an IPv6 relayed address
// (-x, REQUESTED-ADDRESS-FAMILY) over UDP and TCP on ::1 and relays 10 x 200 messages to
// turnutils_peer on ::1 with no loss; {path}ice adds the IPv6 URLs; relay check passes
// by the IPv6 URLs.
func TestIPv6Uclient(t *testing.T) {
	needIPv6(t)
	uclient := need(t, "turnutils_uclient", "coturn")
	cfg := strings.Replace(baseConfig("[limits]\nuser_allocations = 20\n"), "udp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n",
		"udp = [\"127.0.0.1:0\", \"[::1]:0\"]\ntcp = [\"127.0.0.1:0\", \"[::1]:0\"]\nrelay_ip6 = \"::1\"\n", 1)
	cfg = strings.Replace(cfg, "allow = [\"127.0.0.0/8\"]", "allow = [\"127.0.0.0/8\", \"::1\"]", 1)
	p := startRelay(t, cfg)
	p.waitLog(`"family":"ipv6","bind":"::1"`)

	// The ICE answer: the IPv4 URLs of the first listeners, then IPv6 ones.
	ice := fetchICE(t, p)
	port6 := func(transport string) string {
		for _, l := range strings.Split(p.log(), "\n") {
			if strings.Contains(l, `"msg":"listening","transport":"`+transport+`","addr":"[::1]:`) {
				a := l[strings.Index(l, `"addr":"`)+len(`"addr":"`):]
				_, port, _ := net.SplitHostPort(a[:strings.IndexByte(a, '"')])
				return port
			}
		}
		t.Fatalf("no %s listener on ::1 in the log", transport)
		return ""
	}
	udp6, tcp6 := port6("udp"), port6("tcp")
	urls := strings.Join(ice.turnURLs(), " ")
	for _, want := range []string{"turn:[::1]:" + udp6 + "?transport=udp", "turn:[::1]:" + tcp6 + "?transport=tcp"} {
		if !strings.Contains(urls, want) {
			t.Errorf("ICE TURN URLs %q lack %s", urls, want)
		}
	}
	if stun := strings.Join(ice.ICEServers[0].URLs, " "); !strings.Contains(stun, "stun:[::1]:"+udp6) {
		t.Errorf("STUN URLs %q lack stun:[::1]:%s", stun, udp6)
	}

	peerPort := startEchoPeerOn(t, "::1")
	for _, c := range []struct{ transport, port string }{{"udp", udp6}, {"tcp", tcp6}} {
		t.Run(c.transport, func(t *testing.T) {
			args := []string{"-x", "-W", e2eSecret, "-u", "v6-" + c.transport, "-e", "::1", "-r", strconv.Itoa(peerPort),
				"-m", "10", "-n", "200", "-l", "120", "-c", "-p", c.port}
			if c.transport == "tcp" {
				args = append(args, "-t")
			}
			before := p.metrics()[`relay_turn_relayed_packets_total{direction="client_to_peer"}`]
			uclientNoLoss(t, uclient, append(args, "::1"), p)
			if n := p.metrics()[`relay_turn_relayed_packets_total{direction="client_to_peer"}`] - before; n < 2000 {
				t.Fatalf("relay counted %v datagrams to the IPv6 peer, want at least 2000", n)
			}
		})
	}
	for _, u := range []string{"turn:[::1]:" + udp6 + "?transport=udp", "turn:[::1]:" + tcp6 + "?transport=tcp"} {
		out, code := runCheck(t, u, "-secret", e2eSecret)
		wantPass(t, out, code, u)
	}
}
