//go:build linux

package main

import (
	"net"
	"os"
	"time"

	"github.com/relayproject/relay/internal/testcert"
)

// The wss rounds (-mode wss): the signal phases again, with both servers serving
// https/wss from one self-signed certificate for 127.0.0.1 (ECDSA P-256, what an ACME
// certificate usually is), which the generator trusts. The generator's clients are
// crypto/tls's with its defaults, as browsers' are: TLS 1.3, X25519MLKEM768 key
// exchange (a ClientHello of about 1.8 kB).

// writeCert makes the certificate and key files in a temporary directory.
func (o *options) writeCert() error {
	dir, err := os.MkdirTemp("", "relay-bench-cert-")
	if err != nil {
		return err
	}
	o.tmpDirs = append(o.tmpDirs, dir)
	o.certFile, o.keyFile, o.clientTLS, err = testcert.Generate(dir, net.IPv4(127, 0, 0, 1), 48*time.Hour)
	return err
}

// signalURL is the signaling endpoint's base URL for scheme "http" or "ws", with the
// "s" of TLS when the server serves it.
func (s *server) signalURL(scheme string) string {
	if s.clientTLS != nil {
		scheme += "s"
	}
	return scheme + "://" + s.signal
}
