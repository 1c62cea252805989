package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/testcert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const domain = "turn.example.org"

// fakeCA is an https server standing for the ACME server: it counts what it is asked
// and answers 503 to everything.
type fakeCA struct {
	srv   *httptest.Server
	roots string // PEM file of its certificate
	hits  atomic.Int32
}

func startFakeCA(t *testing.T) *fakeCA {
	t.Helper()
	ca := &fakeCA{}
	ca.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ca.hits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ca.srv.Close)
	ca.roots = filepath.Join(t.TempDir(), "ca.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.srv.Certificate().Raw})
	if err := os.WriteFile(ca.roots, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// cacheECDSA writes, in autocert's cache format (the key, then the chain), an ECDSA
// certificate for domain as if an earlier run had obtained it, and returns it.
func cacheECDSA(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM := testcert.PEM(t, 365*24*time.Hour, domain)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, domain), append(keyPEM, certPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// errorLog is a slog handler keeping the messages and attributes of Error records.
type errorLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l *errorLog) WithGroup(string) slog.Handler                 { return l }

func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

func (l *errorLog) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return ""
	}
	return l.lines[0]
}

func start(t *testing.T, ca *fakeCA, cache string) *Manager {
	t.Helper()
	m, err := New(config.TLS{ACMEDomains: []string{domain}, ACMEDirectory: ca.srv.URL + "/directory",
		ACMECache: cache, ACMECARoots: ca.roots}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Close)
	return m
}

// TestHandshakesNeverOrder: once the certificate is in (here from the cache), no
// ClientHello makes relay ask the CA for anything: not one offering no ECDSA (autocert
// would order an RSA certificate for it, from inside the handshake), not one naming
// another host or none; each gets the certificate there is, or fails at once.
func TestHandshakesNeverOrder(t *testing.T) {
	ca := startFakeCA(t)
	cache := filepath.Join(t.TempDir(), "acme")
	serial := cacheECDSA(t, cache).SerialNumber
	m := start(t, ca, cache)
	deadline := time.Now().Add(5 * time.Second)
	for !m.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the cached certificate was not taken")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, h := range []struct {
		name  string
		hello *tls.ClientHelloInfo
	}{
		{"rsa only", &tls.ClientHelloInfo{ServerName: domain, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			SignatureSchemes: []tls.SignatureScheme{tls.PKCS1WithSHA256}, SupportedCurves: []tls.CurveID{tls.X25519},
			SupportedVersions: []uint16{tls.VersionTLS12}}},
		{"other name", &tls.ClientHelloInfo{ServerName: "victim.example.net"}},
		{"no SNI", &tls.ClientHelloInfo{}},
		{"case and dot", &tls.ClientHelloInfo{ServerName: "TURN.example.org."}},
	} {
		cert, err := m.GetCertificate(h.hello)
		if err == nil && cert.Leaf != nil && cert.Leaf.SerialNumber.Cmp(serial) != 0 {
			t.Errorf("%s: served serial %v, want the cached %v", h.name, cert.Leaf.SerialNumber, serial)
		}
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
	}
	if n := ca.hits.Load(); n != 0 {
		t.Fatalf("the CA was asked %d times by handshakes", n)
	}
}

// TestCADownAtStart: with nothing listening at the CA's address, Start fails, logs why
// and when it retries; handshakes fail at once (none starts an order of its own) until
// a certificate is in; Close ends the retries (goleak).
func TestCADownAtStart(t *testing.T) {
	ca := startFakeCA(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + l.Addr().String() + "/directory"
	_ = l.Close()
	logs := &errorLog{}
	m, err := New(config.TLS{ACMEDomains: []string{domain}, ACMEDirectory: down, ACMECache: filepath.Join(t.TempDir(), "acme"),
		ACMECARoots: ca.roots}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()
	deadline := time.Now().Add(10 * time.Second)
	for logs.first() == "" {
		if time.Now().After(deadline) {
			t.Fatal("no failure logged")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if l := logs.first(); !strings.Contains(l, "ACME: no certificate yet") || !strings.Contains(l, "retry_in=1m0s") || !strings.Contains(l, "connection refused") {
		t.Errorf("the failure does not say why, or the retry is not a minute away: %s", l)
	}
	for range 20 {
		start := time.Now()
		if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: domain}); !errors.Is(err, errNotYet) || time.Since(start) > time.Second {
			t.Fatalf("handshake before the first certificate: %v after %v, want errNotYet at once", err, time.Since(start))
		}
	}
}

// TestCloseEndsAttempt: a CA that takes a request and never answers does not keep an
// attempt (nor relay's shutdown) waiting: Close ends the request under way.
func TestCloseEndsAttempt(t *testing.T) {
	ca := &fakeCA{}
	canceled := make(chan struct{}, 16)
	release := make(chan struct{})
	ca.srv = httptest.NewTLSServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		ca.hits.Add(1)
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-release:
		}
	}))
	defer ca.srv.Close()
	defer close(release)
	ca.roots = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(config.TLS{ACMEDomains: []string{domain}, ACMEDirectory: ca.srv.URL + "/directory",
		ACMECache: filepath.Join(t.TempDir(), "acme"), ACMECARoots: ca.roots}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	deadline := time.Now().Add(5 * time.Second)
	for ca.hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Start asked the CA nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	m.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request to the CA went on after Close")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v", took)
	}
}

// TestCacheDirectory: New makes acme_cache (0700) or takes the group's and others'
// permissions off it and off the files in it; a path relay cannot make a directory
// of fails at start, naming the key.
func TestCacheDirectory(t *testing.T) {
	ca := startFakeCA(t)
	newIn := func(dir string) error {
		_, err := New(config.TLS{ACMEDomains: []string{domain}, ACMEDirectory: ca.srv.URL, ACMECache: dir, ACMECARoots: ca.roots},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	}
	fresh := filepath.Join(t.TempDir(), "a", "acme")
	if err := newIn(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new cache directory: %v %v, want 0700", fi.Mode(), err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(open, "acme_account+key")
	if err := os.WriteFile(key, []byte("key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := newIn(open); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{open: 0o700, key: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newIn(file); err == nil || !strings.Contains(err.Error(), "tls.acme_cache") || !strings.Contains(err.Error(), "relay user may write") {
		t.Fatalf("acme_cache naming a file: %v, want an error naming tls.acme_cache and the fix", err)
	}
}
