package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/acmecert"
	"github.com/relayproject/relay/internal/listen"
)

// certSource is where the TLS listeners' certificates come from when [tls]
// acme_domains is set: ACME, and the HTTP-01 listener if tls.acme_http is set.
type certSource struct {
	acme *acmecert.Manager
	http *http.Server
}

// newCertSource makes the ACME certificate source (nil when ACME is off).
func newCertSource(cfg *config.Config, log *slog.Logger) (*certSource, error) {
	if !cfg.TLS.ACME() {
		return nil, nil
	}
	m, err := acmecert.New(cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	return &certSource{acme: m}, nil
}

// getCert is the certificate function for every TLS listener; nil without ACME.
func (c *certSource) getCert() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c == nil {
		return nil
	}
	return c.acme.GetCertificate
}

// protos are the ALPN protocols TLS listeners accept besides their own: an ACME
// TLS-ALPN-01 validation's.
func (c *certSource) protos() []string {
	if c == nil {
		return nil
	}
	return []string{acmecert.ALPN}
}

// start opens tls.acme_http's listener (HTTP-01) and starts getting the certificate,
// once every TLS listener is up to answer the CA.
func (c *certSource) start(cfg *config.Config, log *slog.Logger) error {
	if c == nil {
		return nil
	}
	if addr := cfg.TLS.ACMEHTTP; addr != "" {
		ln, err := net.Listen(listen.Network("tcp", addr), addr)
		if err != nil {
			return fmt.Errorf("tls.acme_http %q: %w", addr, err)
		}
		// Open to everyone on port 80: signaling's HTTP limits (slowloris, idle
		// keep-alive connections, big headers).
		c.http = &http.Server{Handler: c.acme.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
			MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		go func() {
			if err := c.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ACME HTTP-01 listener stopped", "err", err)
			}
		}()
		log.Info("listening", "transport", "acme-http", "addr", ln.Addr().String(), "serves", "ACME HTTP-01 challenges, redirects to https")
	}
	dir := cfg.TLS.ACMEDirectory
	if dir == "" {
		dir = "Let's Encrypt"
	}
	log.Info("ACME: getting the certificate", "domains", cfg.TLS.ACMEDomains, "directory", dir, "cache", cfg.TLS.ACMECache)
	c.acme.Start()
	return nil
}

func (c *certSource) stop(ctx context.Context) {
	if c == nil {
		return
	}
	c.acme.Close()
	if c.http != nil {
		_ = c.http.Shutdown(ctx)
	}
}

// tlsRestart names the changed [tls] keys: the certificate source is made at start.
func tlsRestart(old, cur *config.TLS) []string {
	var keys []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"tls.acme_domains", !slices.Equal(old.ACMEDomains, cur.ACMEDomains)},
		{"tls.acme_email", old.ACMEEmail != cur.ACMEEmail},
		{"tls.acme_directory", old.ACMEDirectory != cur.ACMEDirectory},
		{"tls.acme_cache", old.ACMECache != cur.ACMECache},
		{"tls.acme_ca_roots", old.ACMECARoots != cur.ACMECARoots},
		{"tls.acme_http", old.ACMEHTTP != cur.ACMEHTTP},
	} {
		if k.changed {
			keys = append(keys, k.key)
		}
	}
	return keys
}
