package main

import (
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/metrics"
	"github.com/relayproject/relay/relay"
	"github.com/relayproject/relay/signaling"
	"github.com/relayproject/relay/web"
)

// startSignal serves the signaling endpoint, the ICE endpoint and the pages, handing
// out credentials for the TURN listeners srv actually bound.
func startSignal(cfg *config.Config, mint func(string, time.Duration) (auth.Credentials, error), revoke func(string, time.Time), m *metrics.Metrics, srv *relay.Server, fleet *cluster.Registry, live *atomic.Pointer[config.Cluster], log *slog.Logger, ln net.Listener, certs *certSource) (*signaling.Server, error) {
	own := func(host string) ([]string, []string) {
		p := srv.Ports()
		stun, turn := p.STUN(host), p.TURN(host)
		if h6 := relay.AdvertisedHost6(cfg); h6.IsValid() && host != h6.String() {
			// IPv6 URLs for networks with IPv6 only. turns: keeps the name, which a
			// certificate carries and an IPv6 literal does not.
			p6 := srv.Ports6()
			p6.TLS = 0
			stun, turn = append(stun, p6.STUN(h6.String())...), append(turn, p6.TURN(h6.String())...)
		}
		return stun, turn
	}
	uris := own
	var reg signaling.Registry // nil: signaling's in-process registry
	if fleet != nil {
		reg, uris = fleet, steeredURIs(fleet, live, own)
	}
	sig, err := signaling.New(signaling.Options{
		Config:   cfg.Signal,
		Registry: reg,
		Mint:     mint,
		Revoke:   revoke,
		URIs:     uris,
		Pages:    web.Pages{Path: cfg.Signal.Path, Key: cfg.Signal.Key}.Handler(),
		Metrics:  m,
		Logger:   log,
		Listener: ln, // nil, or the port shared with TURN
		// With ACME: https, its certificate, and its TLS-ALPN-01 validations answered.
		GetCertificate: certs.getCert(),
		NextProtos:     certs.protos(),
	})
	if err != nil {
		return nil, err
	}
	if err := sig.Start(); err != nil {
		return nil, err
	}
	log.Info("listening", "transport", "signal", "addr", sig.Addr().String(), "serves", "PeerJS signaling, "+cfg.Signal.Path+"ice, "+cfg.Signal.Path+"demo, "+cfg.Signal.Path+"diag")
	host, port, _ := net.SplitHostPort(sig.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = relay.AdvertisedHost(cfg)
	}
	if cfg.Signal.PublicHost != "" {
		host = cfg.Signal.PublicHost
	}
	demo := url.URL{Scheme: sig.Scheme(), Host: net.JoinHostPort(host, port), Path: cfg.Signal.Path + "demo"}
	log.Info("demo page: open it in two browser tabs", "url", demo.String())
	return sig, nil
}
