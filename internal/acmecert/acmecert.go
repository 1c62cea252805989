// Package acmecert gets and renews relay's TLS certificate by ACME ([tls] acme_domains)
// and presents it on every TLS listener.
//
// It is golang.org/x/crypto/acme/autocert, chosen over caddyserver/certmagic because it
// does what relay needs with nothing more: TLS-ALPN-01 answered inside
// tls.Config.GetCertificate (so the shared 443 port answers the CA with no port 80),
// HTTP-01 through an http.Handler, a directory cache, renewal when a third of the
// certificate's lifetime is left (so 6-day and 90-day certificates alike), and the
// renewed certificate served from the next handshake on while open connections keep
// theirs. It is maintained with Go itself, and x/crypto is already in relay's module
// graph; certmagic would bring zap, libdns, acmez and a dozen more modules for DNS-01,
// on-demand issuance and storage backends relay does not use.
//
// What this package adds around autocert: a client that sends no SNI (Firefox on
// turns:, a connection to an IP address) or another name gets the certificate of the
// first domain; until the first certificate is there, ordinary handshakes fail at once
// rather than each starting an order of its own (a CA that is down would otherwise
// get an order per connection), while Start gets it with a backoff; certificate changes
// (first issue, renewal) are logged.
package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/relayproject/relay/config"
)

// ALPN is the ALPN protocol of a TLS-ALPN-01 validation (RFC 8737): TLS listeners must
// accept it for the CA's handshake to be answered.
const ALPN = acme.ALPNProto

// Manager is the certificate source of every TLS listener when ACME is on.
type Manager struct {
	m       *autocert.Manager
	domains []string
	log     *slog.Logger
	ready   atomic.Bool
	leaf    atomic.Pointer[x509.Certificate] // the last one logged

	mu     sync.Mutex
	cancel context.CancelFunc
}

// errNotYet is a handshake's answer before the first certificate is in.
var errNotYet = errors.New("acmecert: no certificate yet (ACME in progress)")

// New makes the Manager for c ([tls]); nothing is asked of the CA before Start, nor
// before a handshake after it.
func New(c config.TLS, log *slog.Logger) (*Manager, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if c.ACMECARoots != "" {
		pem, err := os.ReadFile(c.ACMECARoots)
		if err != nil {
			return nil, fmt.Errorf("tls.acme_ca_roots %q: %w", c.ACMECARoots, err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.acme_ca_roots %q: no PEM certificate in it", c.ACMECARoots)
		}
	}
	client := &acme.Client{
		DirectoryURL: c.ACMEDirectory, // "" is Let's Encrypt production
		UserAgent:    "relay",
		HTTPClient: &http.Client{
			Timeout:   time.Minute,
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		},
	}
	domains := make([]string, len(c.ACMEDomains))
	for i, d := range c.ACMEDomains {
		domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	return &Manager{
		m: &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      autocert.DirCache(c.ACMECache),
			HostPolicy: autocert.HostWhitelist(domains...),
			Email:      c.ACMEEmail,
			Client:     client,
		},
		domains: domains,
		log:     log,
	}, nil
}

// GetCertificate is tls.Config.GetCertificate for every TLS listener.
func (m *Manager) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == ALPN {
		return m.m.GetCertificate(h) // the CA's validation: autocert's challenge certificate
	}
	if !m.ready.Load() {
		return nil, errNotYet
	}
	if name := strings.ToLower(strings.TrimSuffix(h.ServerName, ".")); !slices.Contains(m.domains, name) {
		// No SNI (Firefox on turns:, a client dialing an IP address) or another name:
		// the certificate there is; the client decides whether it will do.
		hc := *h
		hc.ServerName = m.domains[0]
		h = &hc
	}
	cert, err := m.m.GetCertificate(h)
	if err == nil {
		m.noteLeaf(cert)
	}
	return cert, err
}

// noteLeaf logs a certificate the first time it is served.
func (m *Manager) noteLeaf(cert *tls.Certificate) {
	leaf := cert.Leaf
	if leaf == nil {
		return
	}
	if old := m.leaf.Swap(leaf); old == leaf || (old != nil && old.SerialNumber.Cmp(leaf.SerialNumber) == 0) {
		return
	}
	m.log.Info("ACME certificate in use", "domains", leaf.DNSNames, "serial", leaf.SerialNumber.Text(16),
		"not_before", leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"issuer", leaf.Issuer.CommonName)
}

// HTTPHandler answers HTTP-01 challenges and redirects everything else to https: the
// handler of [tls] acme_http's listener. Having one makes autocert try HTTP-01 too.
// The port is taken off the Host header first: autocert checks the host against the
// domains as it is, and a CA validating through a port other than 80 (a test CA, a
// port forward) sends "name:port".
func (m *Manager) HTTPHandler() http.Handler {
	h := m.m.HTTPHandler(nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}

// firstTry and lastTry bound the wait between attempts at the first certificate:
// Let's Encrypt allows 5 failed validations per name per hour.
const (
	firstTry = time.Minute // autocert itself waits a minute after a failure
	lastTry  = time.Hour
)

// Start gets the certificates (from the cache, or from the CA) in the background, once
// the listeners that answer the CA are up, retrying with a growing wait until it has
// them. Renewals are autocert's, timed from each certificate.
func (m *Manager) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.mu.Lock()
	m.cancel = cancel
	m.mu.Unlock()
	go func() {
		wait := firstTry
		for {
			err := m.obtain()
			if err == nil {
				return
			}
			m.log.Error("ACME: no certificate yet; TLS handshakes fail until there is one", "domains", m.domains,
				"err", err, "retry_in", wait.String(),
				"hint", "the names must resolve to this host and the CA must reach it on port 443 (TLS-ALPN-01) or, with tls.acme_http, port 80")
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, lastTry)
		}
	}()
}

// obtain asks autocert for each domain's certificate as a modern client would (ECDSA).
func (m *Manager) obtain() error {
	for _, d := range m.domains {
		cert, err := m.m.GetCertificate(&tls.ClientHelloInfo{
			ServerName:        d,
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		})
		if err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
		if d == m.domains[0] {
			m.noteLeaf(cert)
		}
	}
	m.ready.Store(true)
	return nil
}

// Close stops Start's retries; an attempt under way ends on its own (autocert bounds
// it), and autocert's renewal timers end with the process.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
	}
}
