package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayproject/relay/internal/skipnote"
	"github.com/relayproject/relay/internal/testcert"
)

// Browser end-to-end tests: Debian's chromium driven by e2e/browser/run.mjs
// (playwright-core), with PeerJS clients from npm (e2e/browser/package.json). Every
// WebRTC connection is made with iceTransportPolicy 'relay', so the data must cross
// relay's TURN server, with credentials from relay's {path}ice; each scenario asserts
// the alert('Hello World!') on the called page and a relay/relay nominated pair.
//
// RELAY_E2E_SIGNAL=peerjs-server swaps relay's signaling for the npm reference PeerJS
// server (peer 1.0.2, with its default 60 s alive_timeout since it drops clients that
// send no HEARTBEAT) and serves ICE credentials from `relay creds`: a comparison mode
// that runs the peerjs and legacy scenarios only.

const (
	browserAliveTimeout = 3 * time.Second
	browserRunTimeout   = 90 * time.Second
)

// browserScenarios are the run.mjs scenarios, in order: (a) PeerJS 1.5.x (and again
// with TURN over TCP only), (b) the legacy 0.3.x client idle past alive_timeout, (c)
// relay's demo page in two tabs, and again over https and wss (Chromium's TLS 1.3 through
// relay's own record layer on the pollers), (d) relay's diagnostics page.
var browserScenarios = []string{"peerjs", "peerjs-tcp", "legacy", "demo", "demo-wss", "diag"}

func TestBrowser(t *testing.T) {
	chromium, node, dir, artifacts := browserSetup(t)
	standIn := false
	switch mode := os.Getenv("RELAY_E2E_SIGNAL"); mode {
	case "", "relay":
	case "peerjs-server":
		standIn = true
	default:
		t.Fatalf("RELAY_E2E_SIGNAL=%q: want relay (the default) or peerjs-server", mode)
	}
	pages := newBrowserPages(t, dir)

	for _, scenario := range browserScenarios {
		t.Run(scenario, func(t *testing.T) {
			if standIn && (scenario == "demo" || scenario == "demo-wss" || scenario == "diag") {
				t.Skip("relay's own pages need relay's signaling (RELAY_E2E_SIGNAL is peerjs-server)")
			}
			var p *relayProc
			var signalURL, iceURL string
			if standIn {
				p = startRelay(t, browserRelayConfig(t, false))
				pages.setICE(standInICE(t, p))
				signalURL = startPeerServer(t, node, dir)
				iceURL = pages.url + "ice"
			} else if scenario == "demo-wss" {
				certFile, keyFile, _ := testcert.Write(t)
				p = startRelay(t, browserRelayConfig(t, true)+fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile))
				signalURL = "https://" + p.addr("signal") + "/"
			} else {
				p = startRelay(t, browserRelayConfig(t, true))
				signalURL = "http://" + p.addr("signal") + "/"
			}
			before := p.metrics()
			env := []string{
				"SIGNAL_URL=" + signalURL,
				"ICE_URL=" + iceURL,
				"PAGES_URL=" + pages.url,
				"ARTIFACTS=" + artifacts,
				"CHROMIUM=" + chromium,
				"IGNORE_CERT_ERRORS=1", // demo-wss: the test certificate
				// The legacy clients send no HEARTBEAT: idle for two alive_timeouts and more.
				fmt.Sprintf("IDLE_MS=%d", (2*browserAliveTimeout + time.Second).Milliseconds()),
			}
			res := runBrowserScenario(t, node, dir, scenario, env, p)
			after := p.metrics()
			delta := func(name string) float64 { return after[name] - before[name] }

			switch scenario {
			case "peerjs", "peerjs-tcp", "legacy", "demo", "demo-wss":
				if res.Pair.Local != "relay" || res.Pair.Remote != "relay" {
					t.Fatalf("nominated pair %+v, want relay/relay", res.Pair)
				}
				// Both browsers' data went through relay's relay sockets, peer to peer
				// being relay address to relay address, which no [peers] allow permits.
				if n := delta(`relay_turn_relayed_packets_total{direction="client_to_peer"}`); n < 4 {
					t.Errorf("relay counted %v datagrams from clients to peers during the scenario, want some", n)
				}
				for name := range after {
					if strings.HasPrefix(name, "relay_turn_peer_denied_total") && delta(name) != 0 {
						t.Errorf("%s rose by %v: relay refused a relay-to-relay peer", name, delta(name))
					}
				}
				if !standIn && delta(`relay_signal_messages_total{type="OFFER"}`) < 1 {
					t.Errorf("relay_signal_messages_total{type=\"OFFER\"} did not move: the offer did not go through relay's signaling")
				}
			case "diag":
				for _, tr := range []string{"udp", "tcp"} {
					r, ok := res.Results[tr]
					if !ok || !r.Relay {
						t.Errorf("diag: %s: %+v, want a relay candidate", tr, r)
					}
				}
			}
			for _, shot := range res.Screenshots {
				if fi, err := os.Stat(filepath.Join(artifacts, shot)); err != nil || fi.Size() == 0 {
					t.Errorf("screenshot %s: %v", shot, err)
				}
			}
		})
	}
}

// browserSetup finds chromium, node and e2e/browser's npm dependencies (skipping, or
// failing in CI, without them) and makes the artifacts directory.
func browserSetup(t *testing.T) (chromium, node, dir, artifacts string) {
	t.Helper()
	chromium = need(t, "chromium", "chromium")
	node = need(t, "node", "nodejs")
	dir, err := filepath.Abs("browser")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"node_modules/playwright-core/package.json", "node_modules/peerjs/dist/peerjs.min.js",
		"node_modules/peerjs-legacy/dist/peer.min.js", "node_modules/peer/dist/bin/peerjs.js"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			skipnote.Skip(t, "e2e/browser/"+f+" missing", "(cd e2e/browser && npm ci)")
		}
	}
	artifacts = os.Getenv("ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(dir, "artifacts")
	}
	if artifacts, err = filepath.Abs(artifacts); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	return chromium, node, dir, artifacts
}

// browserRelayConfig is baseConfig without its [peers] allow: two browsers behind one
// TURN server reach each other relay address to relay address, which relay permits by
// itself. With signaling, the [signal] endpoint listens on a free loopback port.
func browserRelayConfig(t *testing.T, signaling bool) string {
	t.Helper()
	cfg := strings.Replace(baseConfig(""), "[peers]\nallow = [\"127.0.0.0/8\"]\n", "", 1)
	if strings.Contains(cfg, "[peers]") {
		t.Fatalf("baseConfig's [peers] section changed; browserRelayConfig must drop its allow list:\n%s", cfg)
	}
	if !signaling {
		return cfg + "[signal]\nlisten = \"\"\n"
	}
	return cfg + fmt.Sprintf(`[signal]
listen = "127.0.0.1:0"
path = "/"
key = "peerjs"
alive_timeout = "%s"
expire_timeout = "5s"
`, browserAliveTimeout)
}

// browserPages serves e2e/browser/pages at / and the PeerJS client builds at
// /lib/peerjs/ and /lib/peerjs-legacy/, on its own origin (so the pages' requests to
// the signaling server are cross-origin, as on a real site), plus, in the stand-in
// mode, the ICE servers JSON at /ice.
type browserPages struct {
	url string
	ice chan []byte // holds the current ICE JSON
}

func newBrowserPages(t *testing.T, dir string) *browserPages {
	t.Helper()
	bp := &browserPages{ice: make(chan []byte, 1)}
	bp.ice <- nil
	mux := http.NewServeMux()
	mux.Handle("/lib/peerjs/", http.StripPrefix("/lib/peerjs/", http.FileServer(http.Dir(filepath.Join(dir, "node_modules/peerjs/dist")))))
	mux.Handle("/lib/peerjs-legacy/", http.StripPrefix("/lib/peerjs-legacy/", http.FileServer(http.Dir(filepath.Join(dir, "node_modules/peerjs-legacy/dist")))))
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(dir, "pages"))))
	mux.HandleFunc("/ice", func(w http.ResponseWriter, r *http.Request) {
		body := <-bp.ice
		bp.ice <- body
		if body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	bp.url = srv.URL + "/"
	return bp
}

func (bp *browserPages) setICE(body []byte) {
	<-bp.ice
	bp.ice <- body
}

// standInICE mints TURN credentials with `relay creds` for the stand-in mode, in the
// shape of relay's {path}ice answer.
func standInICE(t *testing.T, p *relayProc) []byte {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "creds.toml")
	if err := os.WriteFile(cfgPath, []byte(browserRelayConfig(t, false)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(relayBin, "creds", "-config", cfgPath, "-user", "browser", "-ttl", "1h").Output()
	if err != nil {
		t.Fatalf("relay creds: %v", err)
	}
	var creds struct{ Username, Password string }
	if err := json.Unmarshal(out, &creds); err != nil {
		t.Fatalf("relay creds printed %q: %v", out, err)
	}
	body, err := json.Marshal(map[string]any{
		"iceServers": []map[string]any{
			{"urls": []string{"stun:" + p.addr("udp")}},
			{"urls": []string{"turn:" + p.addr("udp") + "?transport=udp", "turn:" + p.addr("tcp") + "?transport=tcp"},
				"username": creds.Username, "credential": creds.Password},
		},
		"ttl": 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// startPeerServer runs the npm reference PeerJS server on a free loopback port and
// returns its base URL.
func startPeerServer(t *testing.T, node, dir string) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	cmd := exec.Command(node, filepath.Join(dir, "node_modules/peer/dist/bin/peerjs.js"),
		"--host", "127.0.0.1", "--port", port, "--path", "/", "--key", "peerjs", "--expire_timeout", "5000")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://127.0.0.1:" + port + "/"
	waitFor(t, "the reference PeerJS server", func() bool {
		resp, err := http.Get(base)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

// browserResult is run.mjs's JSON line.
type browserResult struct {
	Scenario string `json:"scenario"`
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	Pair     struct {
		Local  string `json:"local"`
		Remote string `json:"remote"`
	} `json:"pair"`
	// Caller and Callee are the peerjs scenarios' pairs in full: which TURN URL each used.
	Caller, Callee struct {
		URL           string `json:"url"`
		RelayProtocol string `json:"relayProtocol"`
	}
	IDs     struct{ Caller, Callee string } `json:"ids"` // the peerjs scenarios' peer ids
	Dialog  string                          `json:"dialog"`
	Results map[string]struct {
		Relay        bool     `json:"relay"`
		RelayAddress string   `json:"relayAddress"`
		Errors       []string `json:"errors"`
	} `json:"results"`
	Screenshots []string `json:"screenshots"`
	MS          int64    `json:"ms"`
}

// runBrowserScenario runs `node run.mjs scenario` (with the browser it starts, in a
// process group killed at the deadline) and returns its JSON line, failing the test
// unless it exited 0 with ok true.
func runBrowserScenario(t *testing.T, node, dir, scenario string, env []string, p *relayProc) browserResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "run.mjs"), scenario)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	var res browserResult
	var line string
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, `{"scenario"`) {
			line = l
		}
	}
	report := func() string {
		return fmt.Sprintf("run.mjs stderr:\n%s\nrelay log (tail):\n%s", tail(stderr.String(), 80), tail(p.log(), 40))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("node run.mjs %s did not finish in %v\n%s", scenario, browserRunTimeout, report())
	}
	if line == "" {
		t.Fatalf("node run.mjs %s printed no result line (%v); stdout:\n%s\n%s", scenario, runErr, stdout.String(), report())
	}
	t.Log(line)
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("result line %q: %v", line, err)
	}
	if runErr != nil || !res.OK {
		t.Fatalf("%s failed (%v): %s\n%s", scenario, runErr, res.Error, report())
	}
	if res.Scenario != scenario {
		t.Fatalf("result is for scenario %q, want %q", res.Scenario, scenario)
	}
	if scenario != "diag" && res.Dialog != "Hello World!" {
		t.Fatalf("dialog %q, want Hello World!", res.Dialog)
	}
	return res
}
