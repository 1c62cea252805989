package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/testpeer"
)

const e2eSecret = "e2e-shared-secret-0123456789abcdef"

// baseConfig is a loopback relay on free ports whose peers may be on 127.0.0.1.
func baseConfig(extra string) string {
	return `realm = "e2e.relay"
[turn]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
relay_ip = "127.0.0.1"
relay_ports = "61000-61999"
drain_timeout = "1s"
[auth]
secrets = ["` + e2eSecret + `"]
[peers]
allow = ["127.0.0.0/8"]
[metrics]
listen = "127.0.0.1:0"
` + extra
}

// TestUclientInterop runs coturn's turnutils_uclient against relay: 10 sessions of 200
// paced messages each, through channels to turnutils_peer, over UDP and over TCP.
func TestUclientInterop(t *testing.T) {
	uclient := need(t, "turnutils_uclient", "coturn")
	// turnutils_uclient holds two allocations per session for a moment (an EVEN-PORT one
	// it then releases), so 10 sessions of one user id need a quota of 20.
	p := startRelay(t, baseConfig("[limits]\nuser_allocations = 20\n"))
	peerPort := startEchoPeer(t)

	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			m0 := p.metrics()
			before := m0[`relay_turn_relayed_packets_total{direction="client_to_peer"}`]
			args := []string{"-W", e2eSecret, "-u", "interop-" + transport, "-e", "127.0.0.1",
				"-r", strconv.Itoa(peerPort), "-m", "10", "-n", "200", "-l", "120", "-c",
				"-p", p.port(transport)}
			if transport == "tcp" {
				args = append(args, "-t")
			}
			uclientNoLoss(t, uclient, append(args, "127.0.0.1"), p)
			m1 := p.metrics()
			after := m1[`relay_turn_relayed_packets_total{direction="client_to_peer"}`]
			if after-before < 10*200 {
				t.Fatalf("relay counted %v datagrams to the peer, want at least 2000", after-before)
			}
			// As root the kernel data path is on (turn.offload = "auto") and carries the
			// UDP client's channel traffic.
			if transport == "udp" && os.Geteuid() == 0 {
				for _, d := range []string{"client_to_peer", "peer_to_client"} {
					k := `relay_turn_offloaded_packets_total{direction="` + d + `"}`
					if m1["relay_turn_offload_active"] != 1 || m1[k]-m0[k] < 10*200 {
						t.Errorf("the kernel data path relayed %v datagrams %s (active %v), want at least 2000\nrelay log:\n%s", m1[k]-m0[k], d, m1["relay_turn_offload_active"], p.log())
					}
				}
			}
		})
	}
}

// uclientLoss matches turnutils_uclient's loss summary.
var uclientLoss = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\), total send dropped (\d+)`)

// uclientNoLoss runs turnutils_uclient with args (at most 2 minutes) and fails the test
// unless it finished and lost nothing; it returns the loss summary line.
func uclientNoLoss(t *testing.T, uclient string, args []string, p *relayProc) string {
	t.Helper()
	out, err := runFor(t, 2*time.Minute, uclient, args...)
	if err != nil {
		t.Fatalf("turnutils_uclient: %v\n%s\nrelay log:\n%s", err, tail(out, 30), p.log())
	}
	m := uclientLoss.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no loss summary in turnutils_uclient output:\n%s", tail(out, 30))
	}
	t.Logf("turnutils_uclient %s: %s", strings.Join(args, " "), m[0])
	if m[1] != "0" || m[3] != "0" {
		t.Fatalf("lost %s packets, %s send dropped; want 0", m[1], m[3])
	}
	return m[0]
}

// waitForEcho polls a UDP echo peer until it answers.
func waitForEcho(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	waitFor(t, "the echo peer at "+addr, func() bool {
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		return err == nil && string(buf[:n]) == "ping"
	})
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// TestCredsThenRelay: credentials printed by `relay creds` allocate on a running relay,
// and traffic through it moves the live counters on /metrics.
func TestCredsThenRelay(t *testing.T) {
	p := startRelay(t, baseConfig(""))
	cfgPath := filepath.Join(t.TempDir(), "creds.toml")
	// The same secret with fixed ports: creds mints from the file and opens nothing.
	credsCfg := strings.NewReplacer(`udp = ["127.0.0.1:0"]`, `udp = ["127.0.0.1:3478"]`, `tcp = ["127.0.0.1:0"]`, `tcp = ["127.0.0.1:3478"]`).Replace(baseConfig(""))
	if err := os.WriteFile(cfgPath, []byte(credsCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(relayBin, "creds", "-config", cfgPath, "-user", "bob", "-ttl", "30m").Output()
	if err != nil {
		t.Fatalf("relay creds: %v", err)
	}
	var creds struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		TTL      int64    `json:"ttl"`
		URIs     []string `json:"uris"`
	}
	if err := json.Unmarshal(out, &creds); err != nil {
		t.Fatalf("relay creds printed %q: %v", out, err)
	}
	if creds.TTL != 1800 || !strings.HasSuffix(creds.Username, ":bob") || creds.Password == "" {
		t.Fatalf("relay creds: %+v", creds)
	}
	wantURIs := []string{"turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"}
	if strings.Join(creds.URIs, " ") != strings.Join(wantURIs, " ") {
		t.Errorf("uris %v, want %v", creds.URIs, wantURIs)
	}

	echo := testpeer.Echo(t)
	sess, err := dialTURN(t, p.addr("udp"), creds.Username, creds.Password)
	if err != nil {
		t.Fatalf("allocate with relay creds output: %v", err)
	}
	relayConn := sess.relay
	buf := make([]byte, 100)
	for i := 0; i < 5; i++ {
		if _, err := relayConn.WriteTo([]byte("hello"), echo); err != nil {
			t.Fatal(err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, _, err := relayConn.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("echo %d: %q %v", i, buf[:n], err)
		}
	}
	// The counters move as packets pass; poll rather than race the last one.
	waitFor(t, "the relayed counters", func() bool {
		return p.metrics()[`relay_turn_relayed_packets_total{direction="client_to_peer"}`] == 5
	})
	m := p.metrics()
	for name, want := range map[string]float64{
		`relay_turn_allocations_active{transport="udp"}`:               1,
		`relay_turn_allocations_total{result="success"}`:               1,
		`relay_turn_relayed_packets_total{direction="client_to_peer"}`: 5,
		`relay_turn_relayed_packets_total{direction="peer_to_client"}`: 5,
		`relay_turn_relayed_bytes_total{direction="client_to_peer"}`:   25,
		`relay_turn_relayed_bytes_total{direction="peer_to_client"}`:   25,
		`relay_turn_permissions_active`:                                1,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
	for _, name := range []string{
		`relay_stun_binding_requests_total{transport="udp"}`, `relay_turn_auth_failures_total{reason="expired"}`,
		`relay_turn_peer_denied_total{reason="loopback"}`, `relay_turn_channels_active`, `process_resident_memory_bytes`,
		`go_goroutines`,
	} {
		if _, ok := m[name]; !ok {
			t.Errorf("metric %s missing from /metrics", name)
		}
	}
	build := false
	for k := range m {
		build = build || strings.HasPrefix(k, "relay_build_info{")
	}
	if !build {
		t.Errorf("relay_build_info missing from /metrics")
	}
	for k := range m {
		if strings.Contains(k, "bob") || strings.Contains(k, "127.0.0.1") {
			t.Errorf("a username or address leaked into a metric: %s", k)
		}
	}
}

// TestConfigErrorsStopBeforeSockets: a bad config exits non-zero naming the key and line,
// and no socket was opened.
func TestConfigErrorsStopBeforeSockets(t *testing.T) {
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cfg := fmt.Sprintf("[turn]\ntcp = [\"127.0.0.1:%d\"]\nudp = []\nrelay_portz = \"1-2\"\n[limits]\nuser_allocations = \"ten\"\n", port)
	path := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(relayBin, "-config", path)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("relay accepted a bad config:\n%s", out)
	}
	for _, want := range []string{"bad.toml:4", "relay_portz", "bad.toml:6", "user_allocations"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error output lacks %q:\n%s", want, out)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("something listens on the configured port after a config error")
	}
}

// TestSignalsStopCleanly: SIGINT and SIGTERM with live allocations exit 0.
func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startRelay(t, baseConfig(""))
			c, err := net.Dial("tcp", p.addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p.stop(sig)
			if !strings.Contains(p.log(), `"msg":"stopped"`) {
				t.Errorf("no clean stop logged:\n%s", p.log())
			}
		})
	}
}

// TestVersion prints something useful.
func TestVersion(t *testing.T) {
	out, err := exec.Command(relayBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "relay ") {
		t.Fatalf("relay version: %q %v", out, err)
	}
}

// TestICEEndpointAllocates: the ICE endpoint of a running relay hands out URLs with the
// ports actually bound and credentials that allocate.
func TestICEEndpointAllocates(t *testing.T) {
	p := startRelay(t, baseConfig(""))
	ice := fetchICE(t, p)
	if len(ice.ICEServers) != 2 || ice.TTL != 3600 {
		t.Fatalf("ice: %+v", ice)
	}
	wantTURN := "turn:127.0.0.1:" + p.port("udp") + "?transport=udp turn:127.0.0.1:" + p.port("tcp") + "?transport=tcp"
	if got := strings.Join(ice.ICEServers[1].URLs, " "); got != wantTURN {
		t.Fatalf("turn urls %q, want %q", got, wantTURN)
	}
	if got := ice.ICEServers[0].URLs[0]; got != "stun:127.0.0.1:"+p.port("udp") {
		t.Fatalf("stun url %q", got)
	}
	if _, err := dialTURN(t, p.addr("udp"), ice.ICEServers[1].Username, ice.ICEServers[1].Credential); err != nil {
		t.Fatalf("allocate with ICE endpoint credentials: %v", err)
	}
	if m := p.metrics(); m["relay_ice_credentials_issued_total"] != 1 {
		t.Errorf("relay_ice_credentials_issued_total = %v", m["relay_ice_credentials_issued_total"])
	}
}

// iceAnswer is {path}ice's answer in the RTCConfiguration form.
type iceAnswer struct {
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
	TTL int `json:"ttl"`
}

// fetchICE asks p's {path}ice for ICE servers.
func fetchICE(t *testing.T, p *relayProc) iceAnswer {
	t.Helper()
	resp, err := http.Get("http://" + p.addr("signal") + "/ice")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ice iceAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ice); err != nil {
		t.Fatal(err)
	}
	return ice
}
