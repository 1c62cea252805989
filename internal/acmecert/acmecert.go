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
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

	ctx     context.Context // ended by Close: every request to the CA with it
	cancel  context.CancelFunc
	done    chan struct{} // closed when Start's loop has ended
	started atomic.Bool
	once    sync.Once
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
	if err := prepareCache(c.ACMECache); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	client := &acme.Client{
		DirectoryURL: c.ACMEDirectory, // "" is Let's Encrypt production
		UserAgent:    "relay",
		HTTPClient: &http.Client{
			Timeout: time.Minute,
			Transport: ctxTransport{ctx: ctx, rt: &http.Transport{Proxy: http.ProxyFromEnvironment,
				TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}},
		},
		RetryBackoff: func(n int, _ *http.Request, _ *http.Response) time.Duration {
			// A CA answering 5xx (or badNonce) is asked again a few times, a second or
			// two apart; Start's loop waits minutes to hours between attempts. acme's
			// default retries for as long as autocert waits (5 minutes), every 10 s.
			if n > maxTries || ctx.Err() != nil {
				return 0
			}
			return min(time.Duration(n)*time.Second, 2*time.Second)
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
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}, nil
}

// maxTries bounds the requests one attempt makes of a CA that answers 5xx or badNonce.
const maxTries = 5

// ctxTransport ends every request when ctx ends (Manager.Close), so that an attempt at
// a certificate, or one of autocert's renewals, stops at once instead of waiting for
// a CA that does not answer.
type ctxTransport struct {
	ctx context.Context
	rt  http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(t.ctx, cancel)
	end := func() { stop(); cancel() }
	res, err := t.rt.RoundTrip(r.WithContext(ctx))
	if err != nil {
		end()
		return nil, err
	}
	res.Body = &endBody{ReadCloser: res.Body, end: end}
	return res, nil
}

// endBody lets go of its request's context once the body is closed.
type endBody struct {
	io.ReadCloser
	end func()
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// prepareCache makes the cache directory (mode 0700) at start, so that a path relay
// cannot write fails now, naming the key, not in the first order's retries; and takes
// the group's and others' permissions off it and its files, which hold the ACME account
// key and the certificates' keys (autocert writes new files 0600, but keeps what it
// finds).
func prepareCache(dir string) error {
	fail := func(err error, fix string) error {
		return fmt.Errorf("tls.acme_cache %q: %w; %s", dir, err, fix)
	}
	const writable = "make it a directory the relay user may write (the systemd unit's StateDirectory gives it /var/lib/relay), or set acme_cache to one"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err, writable)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fail(err, writable)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fail(err, "it holds private keys: chmod 700 it, as the relay user")
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fail(err, writable)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), 0o600); err != nil {
			return fail(err, "its files hold private keys: chmod 600 them, as the relay user")
		}
	}
	f, err := os.CreateTemp(dir, ".write-check-")
	if err != nil {
		return fail(err, writable)
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// GetCertificate is tls.Config.GetCertificate for every TLS listener.
func (m *Manager) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == ALPN {
		return m.m.GetCertificate(h) // the CA's validation: autocert's challenge certificate
	}
	if !m.ready.Load() {
		return nil, errNotYet
	}
	name := strings.ToLower(strings.TrimSuffix(h.ServerName, "."))
	if !slices.Contains(m.domains, name) {
		// No SNI (Firefox on turns:, a client dialing an IP address) or another name:
		// the certificate there is; the client decides whether it will do.
		name = m.domains[0]
	}
	// Asked as Start asked, whatever the client offered: autocert keeps an RSA
	// certificate apart and orders one, from inside the handshake, for a client that
	// offers no ECDSA; any client could so make relay order certificates (one a minute
	// while orders fail, against the CA's limits). A client without ECDSA P-256 fails
	// its handshake instead; every browser has it.
	cert, err := m.m.GetCertificate(ecdsaHello(name))
	if err == nil {
		m.noteLeaf(cert)
	}
	return cert, err
}

// ecdsaHello is the ClientHelloInfo autocert is asked with for name's certificate: one
// of a client that takes ECDSA P-256, the kind Start obtains. autocert reads nothing else.
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        name,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
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
	ctx := m.ctx
	if m.started.Swap(true) {
		return
	}
	go func() {
		defer close(m.done)
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
		cert, err := m.m.GetCertificate(ecdsaHello(d))
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

// Close stops Start's retries and any request to the CA under way, and waits for
// Start's loop to end (at most a retry's pause of 2 s). autocert's renewal timers end
// with the process; a renewal that fires after Close fails at once.
func (m *Manager) Close() {
	m.once.Do(m.cancel)
	if !m.started.Load() {
		return
	}
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
	}
}
