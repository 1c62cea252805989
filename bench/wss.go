//go:build linux

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The wss rounds (-mode wss): the signal phases again, with both servers serving
// https/wss from one self-signed certificate for 127.0.0.1 (ECDSA P-256, what an ACME
// certificate usually is), which the generator trusts. The generator's clients are
// crypto/tls's with its defaults, as browsers' are: TLS 1.3, X25519MLKEM768 key
// exchange (a ClientHello of about 1.8 kB).

// writeCert makes the certificate and key files in a temporary directory.
func (o *options) writeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "relay bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "relay-bench-cert-")
	if err != nil {
		return err
	}
	o.tmpDirs = append(o.tmpDirs, dir)
	o.certFile, o.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(o.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(o.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	o.clientTLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return nil
}

// signalURL is the signaling endpoint's base URL for scheme "http" or "ws", with the
// "s" of TLS when the server serves it.
func (s *server) signalURL(scheme string) string {
	if s.clientTLS != nil {
		scheme += "s"
	}
	return scheme + "://" + s.signal
}
