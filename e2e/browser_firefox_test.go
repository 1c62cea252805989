package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
	"github.com/relayproject/relay/internal/testcert"
)

// TestBrowserFirefox: Debian's firefox-esr, driven by puppeteer-core over WebDriver BiDi
// (e2e/browser/browsers.mjs), against relay, relay-only:
//   - PeerJS 1.5.5 and relay's demo page with one Chromium page calling one Firefox page,
//     and one Firefox page calling one Chromium page: relay/relay on both sides;
//   - the one-port test (https page, wss, {path}ice and turns: on one port) with Firefox
//     on both sides. Firefox checks the turns: certificate (without WebDriver's
//     acceptInsecureCerts it refuses the test certificate with bad_certificate, and
//     gathers no candidate) and ignores turns: URLs with an IP address, so the pages are
//     loaded from https://localhost:PORT and {path}ice hands out turns:localhost:PORT.
func TestBrowserFirefox(t *testing.T) {
	chromium, node, dir, artifacts := browserSetup(t)
	firefox := need(t, "firefox-esr", "firefox-esr")
	if _, err := os.Stat(filepath.Join(dir, "node_modules/puppeteer-core/package.json")); err != nil {
		skipnote.Skip(t, "e2e/browser/node_modules/puppeteer-core missing", "(cd e2e/browser && npm ci)")
	}
	for _, c := range []struct {
		scenario, callee, caller string
	}{
		{"peerjs", "firefox", "chromium"},
		{"peerjs", "chromium", "firefox"},
		{"demo", "firefox", "chromium"},
		{"demo", "chromium", "firefox"},
		{"peerjs-oneport", "firefox", "firefox"},
		{"demo-oneport", "firefox", "firefox"},
	} {
		t.Run(fmt.Sprintf("%s/%s-calls-%s", c.scenario, c.caller, c.callee), func(t *testing.T) {
			var p *relayProc
			var signalURL string
			if strings.HasSuffix(c.scenario, "-oneport") {
				var addr string
				p, addr = startOnePortBrowserRelay(t)
				// By name: Firefox ignores a turns: URL whose host is an IP address (it has
				// no name to check the certificate against), and {path}ice names the host
				// the page was loaded from. The test certificate is for localhost too.
				_, port, _ := net.SplitHostPort(addr)
				signalURL = "https://localhost:" + port + "/"
			} else {
				p = startRelay(t, browserRelayConfig(t, true))
				signalURL = "http://" + p.addr("signal") + "/"
			}
			before := p.metrics()
			env := []string{
				"SIGNAL_URL=" + signalURL,
				"ARTIFACTS=" + artifacts,
				"CHROMIUM=" + chromium,
				"FIREFOX=" + firefox,
				"CALLEE_BROWSER=" + c.callee,
				"CALLER_BROWSER=" + c.caller,
				"IGNORE_CERT_ERRORS=1",
			}
			res := runBrowserScenario(t, node, dir, c.scenario, env, p)
			wantRelayedCall(t, res, before, p.metrics())
		})
	}
}

// startOnePortBrowserRelay runs relay as TestBrowserOnePort does: TURN over TLS and
// https signaling on one free port, no other TURN listener.
func startOnePortBrowserRelay(t *testing.T) (*relayProc, string) {
	t.Helper()
	certFile, keyFile, _ := testcert.Write(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfg := browserRelayConfig(t, true) + fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile)
	cfg = strings.Replace(cfg, "listen = \"127.0.0.1:0\"\npath", "listen = \""+addr+"\"\npath", 1)
	cfg = strings.Replace(cfg, "udp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n", "udp = []\ntcp = []\ntls = [\""+addr+"\"]\n", 1)
	p := startRelay(t, cfg)
	if p.addr("tls") != addr || p.addr("signal") != addr {
		t.Fatalf("TURN TLS on %s and signaling on %s, want both on %s:\n%s", p.addr("tls"), p.addr("signal"), addr, cfg)
	}
	return p, addr
}
