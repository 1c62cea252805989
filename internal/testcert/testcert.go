// Package testcert makes throwaway TLS certificates for tests and the benchmark: a
// self-signed ECDSA certificate for 127.0.0.1 (or another address) and localhost,
// written as PEM files.
package testcert

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
	"testing"
	"time"
)

// Write creates a certificate for 127.0.0.1 and localhost, valid for an hour, in t's
// temporary directory and returns the PEM file paths and a client configuration that
// trusts it.
func Write(t testing.TB) (certFile, keyFile string, client *tls.Config) {
	t.Helper()
	return WriteFor(t, t.TempDir(), net.IPv4(127, 0, 0, 1))
}

// Configs is Write with the certificate loaded: a server configuration that presents
// it and a client configuration that trusts it, for tests that need no files.
func Configs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	certFile, keyFile, client := Write(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, client
}

// WriteFor is Write for a server at ip (and localhost), with the files in dir.
func WriteFor(t testing.TB, dir string, ip net.IP) (certFile, keyFile string, client *tls.Config) {
	t.Helper()
	certFile, keyFile, client, err := Generate(dir, ip, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, client
}

// Generate writes cert.pem and key.pem into dir: a self-signed ECDSA P-256 certificate
// (what an ACME certificate usually is) for ip and localhost, valid for validity from
// an hour ago. client is a configuration that trusts it. The benchmark's wss rounds use
// it too.
func Generate(dir string, ip net.IP, validity time.Duration) (certFile, keyFile string, client *tls.Config, err error) {
	der, keyDER, err := generate([]net.IP{ip}, []string{"localhost"}, validity)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, &tls.Config{RootCAs: pool, ServerName: ip.String(), MinVersion: tls.VersionTLS12}, nil
}

// PEM is a self-signed ECDSA P-256 certificate for the DNS names, valid for validity
// from an hour ago, and its key, as PEM blocks.
func PEM(t testing.TB, validity time.Duration, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	der, keyDER, err := generate(nil, names, validity)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// generate makes a self-signed ECDSA P-256 server certificate for ips and names: its DER
// and its key's.
func generate(ips []net.IP, names []string, validity time.Duration) (der, keyDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "relay test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		IPAddresses:  ips,
		DNSNames:     names,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key); err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	return der, keyDER, err
}
