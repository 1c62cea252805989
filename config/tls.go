package config

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// TLS is the [tls] section: certificates by ACME for every TLS listener.
type TLS struct {
	// ACMEDomains are the names of the certificate; non-empty turns ACME on. Every
	// TLS listener (TURN and signaling) then presents it, and signaling serves https.
	ACMEDomains []string
	// ACMEEmail is the account's contact address ("" = none).
	ACMEEmail string
	// ACMEDirectory is the ACME server's directory URL; "" is Let's Encrypt production.
	ACMEDirectory string
	// ACMECache is the directory holding the account key and the certificates, so that
	// a restart does not ask the CA again.
	ACMECache string
	// ACMECARoots is a PEM file of extra roots trusted for the ACME server itself (a
	// private CA, a test server); "" = the system's roots only.
	ACMECARoots string
	// ACMEHTTP is the address of a plain HTTP listener answering HTTP-01 challenges
	// (and redirecting anything else to https); "" = TLS-ALPN-01 only, on port 443.
	ACMEHTTP string
}

func defaultTLS() TLS {
	return TLS{ACMEDomains: []string{}, ACMECache: "/var/lib/relay/acme"}
}

// ACME reports whether certificates come by ACME.
func (t *TLS) ACME() bool { return len(t.ACMEDomains) > 0 }

func (t *TLS) decode(tb *table) {
	tb.strs("acme_domains", `an array of DNS names this server is reached at, e.g. ["turn.example.org"], or [] for no ACME`, &t.ACMEDomains)
	tb.str("acme_email", `a contact e-mail address for the ACME account, e.g. "admin@example.org", or ""`, &t.ACMEEmail)
	tb.str("acme_directory", `an https:// ACME directory URL, or "" for Let's Encrypt production`, &t.ACMEDirectory)
	tb.str("acme_cache", `a directory relay may write, e.g. "/var/lib/relay/acme"`, &t.ACMECache)
	tb.str("acme_ca_roots", `the path of a PEM file of CA certificates to trust for the ACME server, or ""`, &t.ACMECARoots)
	tb.str("acme_http", listenForm+` for HTTP-01 challenges, e.g. "0.0.0.0:80", or "" for TLS-ALPN-01 only`, &t.ACMEHTTP)
}

func (t *TLS) validate(ch *checker, turn *TURN, sig *Signal) {
	for _, d := range t.ACMEDomains {
		if !validDNSName(d) {
			ch.errorf("tls.acme_domains", d, `expected a DNS name this server is reached at, e.g. "turn.example.org" (no IP addresses, no wildcards: ACME's TLS-ALPN-01 and HTTP-01 challenges cannot prove them)`)
		}
	}
	if e := t.ACMEEmail; e != "" && (!strings.Contains(e, "@") || strings.ContainsAny(e, " ,;<>")) {
		ch.errorf("tls.acme_email", e, `expected one e-mail address, e.g. "admin@example.org", or ""`)
	}
	if d := t.ACMEDirectory; d != "" {
		if u, err := url.Parse(d); err != nil || u.Scheme != "https" || u.Host == "" {
			ch.errorf("tls.acme_directory", d, `expected an https:// URL such as "https://acme-staging-v02.api.letsencrypt.org/directory", or "" for Let's Encrypt production`)
		}
	}
	if t.ACMEHTTP != "" {
		if _, err := checkListen(t.ACMEHTTP); err != nil {
			ch.errorf("tls.acme_http", t.ACMEHTTP, "%s, or \"\" for TLS-ALPN-01 only", err)
		}
	}
	if !t.ACME() {
		return
	}
	if t.ACMECache == "" {
		ch.errorf("tls.acme_cache", t.ACMECache, `expected a directory relay may write, e.g. "/var/lib/relay/acme": without it every restart asks the CA again and soon meets its rate limits`)
	}
	// The managed certificate replaces the files: two sources for one listener would be
	// one too many.
	for _, f := range []struct{ section, cert, key string }{
		{"turn", turn.TLSCert, turn.TLSKey}, {"signal", sig.TLSCert, sig.TLSKey},
	} {
		key, value := f.section+".tls_cert", f.cert
		if value == "" {
			key, value = f.section+".tls_key", f.key
		}
		if value != "" {
			ch.errorf(key, value, `tls.acme_domains turns ACME on, and every TLS listener then presents the certificate ACME gets: set tls_cert = "" and tls_key = "" in [%s] (or acme_domains = [] to keep the files)`, f.section)
		}
	}
	if len(turn.TLS) == 0 && sig.Listen == "" {
		ch.errorf("tls.acme_domains", t.ACMEDomains, `ACME is on but there is no TLS listener to use its certificate: set turn.tls (e.g. ["0.0.0.0:443"]) or signal.listen, or acme_domains = []`)
	}
}

// validDNSName accepts a fully qualified name of letter-digit-hyphen labels, with at
// least one dot and no trailing dot.
func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkCARoots checks tls.acme_ca_roots at Load: readable, and holding a certificate.
func (t *TLS) checkCARoots(ch *checker) {
	if !t.ACME() || t.ACMECARoots == "" {
		return
	}
	b, err := os.ReadFile(t.ACMECARoots)
	if err != nil {
		ch.errorf("tls.acme_ca_roots", t.ACMECARoots, "cannot read the CA certificates: %s; %s, or set acme_ca_roots = \"\" to trust the system's roots only",
			fileProblem(err), fileFix(err, "the PEM CA certificate(s)"))
		return
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
			return
		}
	}
	ch.errorf("tls.acme_ca_roots", t.ACMECARoots, "holds no PEM certificate: expected the ACME server's CA certificate(s) (BEGIN CERTIFICATE), or \"\" to trust the system's roots only")
}
