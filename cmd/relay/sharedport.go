package main

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/listen"
	"github.com/relayproject/relay/internal/portmux"
)

// openSharedPort opens the port signaling shares with a TURN listener, if the
// configuration has one ([signal] listen equal to a [turn] tls address, or to a [turn]
// tcp address for plain signaling), and returns the TURN listeners to hand relay. The
// port routes nothing until Serve, once both sides are up. getCert presents the
// certificate (signaling's, or ACME's); protos are ALPN protocols besides ours.
func openSharedPort(cfg *config.Config, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), protos []string, d *daemon) (*portmux.Mux, map[string]net.Listener, error) {
	addr := cfg.Signal.Listen
	var key string
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"turn.tls", cfg.TURN.TLS}, {"turn.tcp", cfg.TURN.TCP}} {
		for _, a := range l.addrs {
			if cfg.SharedPort(a) {
				key, addr = l.key, a
			}
		}
	}
	if key == "" {
		return nil, nil, nil
	}
	dropped := d.metrics.SharedPortDropped
	for _, r := range []string{portmux.DropPerSource, portmux.DropFull, portmux.DropEvicted, portmux.DropTimeout} {
		dropped.WithLabelValues(r) // zeros from the start
	}
	pc := portmux.Config{Logger: d.log, Dropped: func(reason string) { dropped.WithLabelValues(reason).Inc() }}
	if key == "turn.tls" {
		pc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, NextProtos: protos}
	}
	m, err := portmux.Listen(listen.Network("tcp", addr), addr, pc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s and signal.listen %q: %w", key, addr, err)
	}
	d.log.Info("shared port: TURN and signaling on one listener", "addr", m.Addr().String(), "tls", m.TLS())
	return m, map[string]net.Listener{addr: m.TURN()}, nil
}
