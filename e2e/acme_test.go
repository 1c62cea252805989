package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/relayproject/relay/internal/testcert"
	"github.com/relayproject/relay/internal/testpeer"
)

// Certificates by ACME against a real ACME server run here: Pebble, Let's Encrypt's
// test CA (github.com/letsencrypt/pebble/v2, a tool dependency in go.mod), with
// pebble-challtestsrv as its DNS server answering 127.0.0.1 for every name. Pebble's
// validation authority really connects to relay: TLS-ALPN-01 to the shared TURN+HTTPS
// port, or HTTP-01 to [tls] acme_http. Its certificates live 30 s here, so that relay
// renews one within the test.

const acmeDomain = "turn.relay-e2e.test"

var (
	toolsOnce sync.Once
	toolsDir  string
	toolsErr  error
)

// pebbleTools builds pebble and pebble-challtestsrv once per test binary.
func pebbleTools(t *testing.T) (pebble, challtestsrv string) {
	t.Helper()
	toolsOnce.Do(func() {
		toolsDir, toolsErr = os.MkdirTemp("", "relay-e2e-pebble-")
		if toolsErr != nil {
			return
		}
		for _, pkg := range []string{"github.com/letsencrypt/pebble/v2/cmd/pebble", "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"} {
			out, err := exec.Command("go", "build", "-o", toolsDir, pkg).CombinedOutput()
			if err != nil {
				toolsErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
	return filepath.Join(toolsDir, "pebble"), filepath.Join(toolsDir, "pebble-challtestsrv")
}

// pebbleCA is a running Pebble with its DNS server.
type pebbleCA struct {
	dir   string         // the ACME directory URL
	apiCA string         // PEM file of the certificate Pebble's own https presents
	roots *x509.CertPool // Pebble's issuing root, for clients of relay
	log   *lockedWriter  // both processes' output
}

// startPebble runs pebble-challtestsrv (DNS only) and pebble, whose validation
// authority connects to tlsPort for TLS-ALPN-01 and httpPort for HTTP-01, issuing
// certificates valid for validity.
func startPebble(t *testing.T, tlsPort, httpPort int, validity time.Duration) *pebbleCA {
	t.Helper()
	pebbleBin, challBin := pebbleTools(t)
	dir := t.TempDir()
	certFile, keyFile, apiClient := testcert.WriteFor(t, dir, net.IPv4(127, 0, 0, 1))
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPortPair(t))
	logs := &lockedWriter{}
	run := func(name string, env []string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	run(challBin, nil, "-dnsserver", dnsAddr, "-management", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	api, mgmt := freeTCPPort(t), freeTCPPort(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", api),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"profiles": map[string]any{"default": map[string]any{"description": "short-lived, for renewal tests",
			"validityPeriod": int(validity / time.Second)}},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validating, no nonces refused on purpose: the test is about
	// relay, not about clients surviving Pebble's chaos.
	run(pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"-config", confFile, "-dnsserver", dnsAddr)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: apiClient}, Timeout: 5 * time.Second}
	ca := &pebbleCA{dir: fmt.Sprintf("https://127.0.0.1:%d/dir", api), apiCA: certFile, log: logs}
	var rootPEM []byte
	waitFor(t, "Pebble to serve its directory and its root", func() bool {
		r, err := hc.Get(ca.dir)
		if err != nil {
			return false
		}
		_ = r.Body.Close()
		r, err = hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
		if err != nil {
			return false
		}
		defer r.Body.Close()
		rootPEM, _ = io.ReadAll(r.Body)
		return r.StatusCode == http.StatusOK
	})
	ca.roots = x509.NewCertPool()
	if !ca.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("Pebble's root: %q", rootPEM)
	}
	return ca
}

func (ca *pebbleCA) logText() string { return ca.log.String() }

// clientFor trusts Pebble's certificates for acmeDomain.
func (ca *pebbleCA) clientFor() *tls.Config {
	return &tls.Config{RootCAs: ca.roots, ServerName: acmeDomain}
}

// servedCert dials addr with conf and returns the leaf certificate, verified.
func servedCert(t *testing.T, addr string, conf *tls.Config) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// acmeRelayConfig is a relay with TURN over TLS and https signaling on one port and a
// certificate for acmeDomain from ca; extra goes into [tls].
func acmeRelayConfig(t *testing.T, addr string, ca *pebbleCA, extra string) string {
	t.Helper()
	cfg := baseConfig(fmt.Sprintf(`[signal]
listen = %q
public_host = %q
[tls]
acme_domains = [%q]
acme_email = "ops@relay-e2e.test"
acme_directory = %q
acme_ca_roots = %q
acme_cache = %q
`, addr, acmeDomain, acmeDomain, ca.dir, ca.apiCA, filepath.Join(t.TempDir(), "acme")) + extra)
	return strings.Replace(cfg, "[turn]\n", "[turn]\ntls = [\""+addr+"\"]\n", 1)
}

// TestACMEPebble: relay gets its certificate from Pebble by TLS-ALPN-01 on the shared
// TURN+HTTPS port (Pebble's validation authority connects there), serves it to
// https, wss and TURN-over-TLS clients (with SNI, and without, as Firefox on turns:),
// renews it when a third of its 30 s lifetime is left, and swaps it in while a TURN
// allocation over TLS and two wss peers stay connected, and keep working past the
// first certificate's expiry. New connections get the new certificate.
func TestACMEPebble(t *testing.T) {
	port := freeTCPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ca := startPebble(t, port, freeTCPPort(t), 30*time.Second)
	p := startRelay(t, acmeRelayConfig(t, addr, ca, ""))
	p.waitLogWithin(`"msg":"ACME certificate in use"`, time.Minute) // an order takes seconds on a loaded machine

	client := ca.clientFor()
	first := servedCert(t, addr, client)
	if first.Subject.CommonName != acmeDomain && !strings.Contains(strings.Join(first.DNSNames, " "), acmeDomain) {
		t.Fatalf("served a certificate for %v", first.DNSNames)
	}
	t.Logf("first certificate %x, valid %s to %s", first.SerialNumber, first.NotBefore.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
	// Pebble's validation authority connected to the shared port (its tlsPort; nothing
	// listens on its httpPort) and relay answered with the challenge certificate.
	if !strings.Contains(p.log(), `"msg":"ACME TLS-ALPN-01 validation answered"`) || !strings.Contains(ca.logText(), "set VALID by completed challenge") {
		t.Errorf("no TLS-ALPN-01 validation answered on the shared port:\nPebble:\n%s\nrelay:\n%s", tail(ca.logText(), 20), tail(p.log(), 20))
	}
	// No SNI (Firefox on turns:): the same certificate, which verifies for the name.
	noSNI := client.Clone()
	noSNI.ServerName, noSNI.InsecureSkipVerify = "", true
	noSNI.VerifyConnection = func(cs tls.ConnectionState) error {
		opts := x509.VerifyOptions{DNSName: acmeDomain, Roots: ca.roots, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
	if c := servedCert(t, addr, noSNI); c.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("without SNI: certificate %x, want %x", c.SerialNumber, first.SerialNumber)
	}

	// https: the ICE endpoint, through the certificate.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: client,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	resp, err := hc.Get("https://" + acmeDomain + ":" + fmt.Sprint(port) + "/ice")
	if err != nil {
		t.Fatal(err)
	}
	var ice iceAnswer
	_ = json.NewDecoder(resp.Body).Decode(&ice)
	_ = resp.Body.Close()
	if want := fmt.Sprintf("turns:%s:%d?transport=tcp", acmeDomain, port); !strings.Contains(strings.Join(ice.turnURLs(), " "), want) {
		t.Fatalf("ICE TURN URLs %q, want %s", ice.turnURLs(), want)
	}

	// Connections that must outlive the certificate: a TURN allocation over TLS relaying
	// to an echo peer, and two wss peers.
	alloc := dialTURNTLS(t, addr, client, ice)
	echo := testpeer.Echo(t)
	roundTripVia(t, alloc, echo, "before renewal")
	wsDialer := websocket.Dialer{TLSClientConfig: client, HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	base := fmt.Sprintf("wss://%s:%d/peerjs?key=peerjs&version=1.5.5&token=t&id=", acmeDomain, port)
	a := dialWS(t, wsDialer, base+"acme-a")
	b := dialWS(t, wsDialer, base+"acme-b")
	offerBetween(t, a, b, "acme-b", "before renewal")

	var renewed *x509.Certificate
	deadline := time.Now().Add(2 * time.Minute)
	for renewed == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no renewed certificate in 2 minutes (first valid until %s)\nrelay log:\n%s", first.NotAfter, tail(p.log(), 20))
		}
		// Keep the old connections busy meanwhile: they must never notice.
		roundTripVia(t, alloc, echo, "during renewal")
		if c := servedCert(t, addr, client); c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
		}
		time.Sleep(500 * time.Millisecond) // the pace of the probes, not a synchronisation
	}
	t.Logf("renewed certificate %x at %s (first expires %s), valid to %s", renewed.SerialNumber,
		time.Now().Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly), renewed.NotAfter.Format(time.TimeOnly))
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %s, not after the first's %s", renewed.NotAfter, first.NotAfter)
	}
	if time.Now().After(first.NotAfter) {
		t.Errorf("renewed only after the first certificate expired (%s)", first.NotAfter)
	}
	// Past the first certificate's expiry the old connections still work.
	for time.Now().Before(first.NotAfter.Add(time.Second)) {
		roundTripVia(t, alloc, echo, "until the first certificate expires")
		time.Sleep(500 * time.Millisecond)
	}
	roundTripVia(t, alloc, echo, "after the first certificate expired")
	offerBetween(t, b, a, "acme-a", "after the first certificate expired")
	c := dialWS(t, wsDialer, base+"acme-c")
	offerBetween(t, c, a, "acme-a", "new socket, new certificate")
	if n := strings.Count(p.log(), `"msg":"ACME certificate in use"`); n < 2 {
		t.Errorf("relay logged %d certificates in use, want the first and the renewed one", n)
	}
}

// TestACMEHTTP01: with [tls] acme_http set, relay answers HTTP-01 there (Pebble's
// TLS-ALPN-01 attempt goes to a port nobody listens on and fails, so autocert falls
// back to HTTP-01); the certificate is then served on the TLS port, and acme_http
// redirects anything else to https.
func TestACMEHTTP01(t *testing.T) {
	port, httpPort := freeTCPPort(t), freeTCPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ca := startPebble(t, freeTCPPort(t), httpPort, time.Hour)
	p := startRelay(t, acmeRelayConfig(t, addr, ca, fmt.Sprintf("acme_http = \"127.0.0.1:%d\"\n", httpPort)))
	deadline := time.Now().Add(time.Minute) // the failed TLS-ALPN-01 attempt comes first
	for !strings.Contains(p.log(), `"msg":"ACME certificate in use"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate in a minute\nrelay:\n%s\nPebble:\n%s", tail(p.log(), 20), tail(ca.logText(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	servedCert(t, addr, ca.clientFor())
	// TLS-ALPN-01 went to a port nobody listens on: the certificate came by HTTP-01.
	if strings.Contains(p.log(), "TLS-ALPN-01 validation answered") || !strings.Contains(ca.logText(), "set VALID by completed challenge") {
		t.Errorf("want one validation, by HTTP-01:\nPebble:\n%s\nrelay:\n%s", tail(ca.logText(), 20), tail(p.log(), 20))
	}
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/demo", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if loc := r.Header.Get("Location"); r.StatusCode/100 != 3 || !strings.HasPrefix(loc, "https://") {
		t.Errorf("GET /demo on acme_http: %d Location %q, want a redirect to https", r.StatusCode, loc)
	}
	// The port open to everyone has signaling's HTTP limits: 16 KiB of headers.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/demo", httpPort), nil)
	req.Header.Set("X-Pad", strings.Repeat("x", 64<<10))
	if r, err := noFollow.Do(req); err != nil || r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers on acme_http: %v %v, want 431", r, err)
	} else {
		_ = r.Body.Close()
	}
}

func dialWS(t *testing.T, d websocket.Dialer, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if m := readPeer(t, ws); m.Type != "OPEN" {
		t.Fatalf("%s: first message %+v", url, m)
	}
	return ws
}

// dialTURNTLS allocates with pion's TURN client over TLS to addr, with the ICE
// endpoint's credentials.
func dialTURNTLS(t *testing.T, addr string, conf *tls.Config, ice iceAnswer) net.PacketConn {
	t.Helper()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	srv := ice.ICEServers[len(ice.ICEServers)-1]
	client, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: addr, STUNServerAddr: addr, Conn: turn.NewSTUNConn(tc),
		Username: srv.Username, Password: srv.Credential, Realm: "e2e.relay", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relayed.Close(); client.Close(); _ = tc.Close() })
	return relayed
}

// roundTripVia sends msg through the allocation to an echo peer and waits for it back.
func roundTripVia(t *testing.T, relayed net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	if _, err := relayed.WriteTo([]byte(msg), peer); err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
	buf := make([]byte, 1500)
	_ = relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := relayed.ReadFrom(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("round trip %q through the TLS allocation: got %q, %v", msg, buf[:n], err)
	}
}
