package config

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"strings"
)

// checkFiles checks the certificate and key files that the server will load when it
// starts with this configuration: each must be readable and the two must form a valid
// pair. Load runs it, so that a missing or wrong file stops relay with the key's line
// before any socket is opened, and a reload that names one is refused the same way.
// Parse does not: it reads no files (documents checked in memory, tests, fuzzing).
func (c *Config) checkFiles(loc locator) Errors {
	ch := &checker{loc: loc}
	if len(c.TURN.TLS) > 0 && c.TURN.TLSCert != "" && c.TURN.TLSKey != "" {
		checkKeyPair(ch, "turn", c.TURN.TLSCert, c.TURN.TLSKey, `or set tls = [] to serve TURN without TLS`)
	}
	if c.Signal.Listen != "" && c.Signal.TLSCert != "" && c.Signal.TLSKey != "" {
		checkKeyPair(ch, "signal", c.Signal.TLSCert, c.Signal.TLSKey, `or set tls_cert = "" and tls_key = "" for plain http/ws`)
	}
	c.Cluster.readPassword(ch)
	c.TLS.checkCARoots(ch)
	return ch.errs
}

// checkKeyPair checks section.tls_cert and section.tls_key; orElse is the other way out
// of the error, for the operator who has no certificate yet.
func checkKeyPair(ch *checker, section, certFile, keyFile, orElse string) {
	certKey, keyKey := section+".tls_cert", section+".tls_key"
	certPEM, certErr := os.ReadFile(certFile)
	if certErr != nil {
		ch.errorf(certKey, certFile, "cannot read the certificate: %s; %s, %s", fileProblem(certErr), fileFix(certErr, "the PEM certificate chain (fullchain.pem)"), orElse)
	}
	keyPEM, keyErr := os.ReadFile(keyFile)
	if keyErr != nil {
		ch.errorf(keyKey, keyFile, "cannot read the private key: %s; %s, %s", fileProblem(keyErr), fileFix(keyErr, "the PEM private key (privkey.pem)"), orElse)
	}
	if certErr != nil || keyErr != nil {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		// The tls package's messages say which input it choked on; none quotes key material.
		msg := err.Error()
		if strings.Contains(msg, "certificate input") || strings.HasPrefix(msg, "x509:") {
			ch.errorf(certKey, certFile, "not a usable PEM certificate (%s): expected the certificate chain your ACME client wrote (fullchain.pem), %s", msg, orElse)
			return
		}
		if strings.Contains(msg, "does not match") {
			ch.errorf(keyKey, keyFile, "is not the private key of %s = %q (%s): give the key issued with that certificate, %s", certKey, certFile, msg, orElse)
			return
		}
		ch.errorf(keyKey, keyFile, "not a usable PEM private key (%s): expected the key your ACME client wrote (privkey.pem), %s", msg, orElse)
	}
}

// fileProblem is what went wrong reading a file, without repeating its path (the error
// already shows the value).
func fileProblem(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func fileFix(err error, what string) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "put " + what + " there or fix the path"
	case errors.Is(err, fs.ErrPermission):
		return "make it readable by the user relay runs as (group relay, mode 0640)"
	}
	return "point the key at " + what
}
