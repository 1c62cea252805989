package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

// probe is what a diagnosis needs to know about the URL being checked.
type probe struct {
	u       serverURL
	timeout time.Duration
	creds   credentials
}

// explained is an error whose text already says what is wrong.
type explained struct{ msg string }

func (e *explained) Error() string { return e.msg }

func explainedf(format string, a ...any) error { return &explained{fmt.Sprintf(format, a...)} }

// whereError says which of several similar requests failed.
type whereError struct {
	where string
	err   error
}

func (e *whereError) Error() string { return e.where + ": " + e.err.Error() }
func (e *whereError) Unwrap() error { return e.err }

// diagnose explains err in the operator's terms.
func (p *probe) diagnose(err error) string { return p.explain(err, "") }

// diagnosePermission is diagnose for CreatePermission, whose 403 names subject.
func (p *probe) diagnosePermission(subject string) func(error) string {
	return func(err error) string { return p.explain(err, subject) }
}

// diagnoseRelease explains each failed Refresh.
func (p *probe) diagnoseRelease(err error) string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var parts []string
		for _, e := range j.Unwrap() {
			parts = append(parts, p.explain(e, ""))
		}
		return strings.Join(parts, "; ")
	}
	return p.explain(err, "")
}

func (p *probe) explain(err error, peerSubject string) string {
	var where *whereError
	if errors.As(err, &where) {
		return p.explain(where.err, peerSubject) + " (" + where.where + ")"
	}
	var ex *explained
	if errors.As(err, &ex) {
		return ex.msg
	}
	var se *stunError
	if errors.As(err, &se) {
		return p.explainSTUN(se, err, peerSubject)
	}
	var rt *roundTripError
	if errors.As(err, &rt) {
		return p.explainRoundTrip(rt)
	}
	var he *httpError
	if errors.As(err, &he) {
		return he.explain()
	}
	return p.explainNet(err)
}

func (p *probe) explainSTUN(se *stunError, err error, peerSubject string) string {
	head := se.Error()
	user := p.creds.username
	userID := user
	if _, id, ok := strings.Cut(user, ":"); ok {
		userID = id
	}
	switch stun.ErrorCode(se.Code) {
	case stun.CodeTryAlternate:
		return head + ": the server redirects clients to " + se.Alternate + "; check that one"
	case stun.CodeBadRequest:
		return head + ": the server could not parse the " + se.Method.String() + " request"
	case stun.CodeUnauthorized:
		if errors.Is(err, errNoChallenge) {
			return head + " without REALM and NONCE: the server does not speak TURN long-term credentials"
		}
		if se.Method == stun.MethodAllocate {
			return fmt.Sprintf("%s: the server rejected the credentials — wrong secret, expired, or username not in <expiry>:<user> form (username %q)", head, user)
		}
		return fmt.Sprintf("%s: the server rejected the credentials on %s (username %q)", head, se.Method, user)
	case stun.CodeForbidden:
		if se.Method == stun.MethodCreatePermission {
			if peerSubject == "" {
				peerSubject = "the address"
			}
			return head + ": the server's peer policy refused " + peerSubject + " as a peer"
		}
		return head + ": the server refused " + se.Method.String() + " for these credentials"
	case stun.CodeUnknownAttribute:
		return head + ": the server does not understand an attribute of " + se.Method.String()
	case stun.CodeAllocMismatch:
		if se.Method == stun.MethodAllocate {
			return head + ": the server already has an allocation for this client address and port"
		}
		return head + ": the server no longer has this allocation (expired or already deleted)"
	case stun.CodeStaleNonce:
		return head + ": the server kept refusing the nonces it handed out"
	case stun.CodeWrongCredentials:
		return head + ": the credentials differ from those that created the allocation"
	case stun.CodeUnsupportedTransProto:
		return head + ": the server does not relay UDP"
	case stun.CodeAllocQuotaReached:
		return fmt.Sprintf("%s: user id %q already holds as many allocations as the server allows per user (relay: [limits] user_allocations); wait for them to expire or use another -user", head, userID)
	case stun.CodeInsufficientCapacity:
		// relay sends the same code while it drains; only the reason phrase tells them apart.
		if strings.Contains(strings.ToLower(se.Reason), "draining") {
			return head + ": the server is draining (shutting down or restarting) and takes no new allocations; try again once it is back, or check another server"
		}
		return head + ": the server is at its allocation cap or out of relay ports (relay: [limits] total_allocations, [turn] relay_ports)"
	case stun.CodeServerError:
		return head + ": the server failed on " + se.Method.String() + "; see its log"
	}
	return head + ": the server refused " + se.Method.String()
}

func (p *probe) explainRoundTrip(e *roundTripError) string {
	within := fmt.Sprintf("within %s", p.timeout)
	if e.got > 0 {
		return fmt.Sprintf("only %d/%d datagrams came back %s: packet loss on the relay path", e.got, e.want, within)
	}
	switch {
	case e.reached < 0:
		return fmt.Sprintf("relayed data did not come back from %s %s: relay port range blocked by a firewall, or is %s not a UDP echo peer?", e.to, within, e.to)
	case e.reached == 0:
		return fmt.Sprintf("relayed data did not come back: relay port range blocked by a firewall? (0/%d datagrams %s; none reached the second allocation's relayed address %s)", e.want, within, e.to)
	default:
		return fmt.Sprintf("relayed data did not come back: relay port range blocked by a firewall? (0/%d datagrams %s; the second allocation received %d and echoed them, none reached the first)", e.want, within, e.reached)
	}
}

// explainNet explains socket, DNS and TLS errors.
func (p *probe) explainNet(err error) string {
	addr, tr := p.u.addr(), p.u.transport
	over := tr
	if tr == "tls" {
		over = "tcp"
	}
	var tlsErr *tlsError
	inTLS := errors.As(err, &tlsErr)
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, errNoAnswer):
		if tr == "udp" {
			return fmt.Sprintf("no answer from %s over udp within %s: is the port open in the firewall?", addr, p.timeout)
		}
		return fmt.Sprintf("no answer from %s over %s within %s: is a STUN/TURN server listening there (turns: needs the TLS port, turn: the plain one)?", addr, tr, p.timeout)
	}
	if d := explainTLS(err, addr, p.u.host); d != "" {
		return d
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s: %v", p.u.host, dnsErr)
	case errors.Is(err, syscall.ECONNREFUSED):
		if over == "udp" {
			return fmt.Sprintf("connection refused by %s over udp (ICMP port unreachable): nothing listens there — is the server running, and is the port right?", addr)
		}
		return fmt.Sprintf("connection refused by %s over tcp: nothing listens there — is the server running, and is the port right?", addr)
	case isTimeout(err):
		if inTLS {
			return fmt.Sprintf("the TLS handshake with %s got no answer within %s: is it the TLS port (turns:, usually 5349)?", addr, p.timeout)
		}
		return fmt.Sprintf("no answer from %s over %s within %s: is the port open in the firewall?", addr, over, p.timeout)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("no route to %s: %v", addr, err)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		if inTLS {
			return fmt.Sprintf("%s closed the connection during the TLS handshake: is it the TLS port (turns:, usually 5349)?", addr)
		}
		return fmt.Sprintf("%s closed the %s connection: is it the plain port (turns: needs TLS)? (%v)", addr, tr, err)
	}
	if inTLS {
		return fmt.Sprintf("the TLS handshake with %s failed: %v", addr, tlsErr.err)
	}
	return fmt.Sprintf("%s over %s: %v", addr, tr, err)
}

// explainTLS explains certificate and handshake errors, "" if err is neither.
func explainTLS(err error, addr, host string) string {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("TLS: the certificate of %s is signed by an unknown authority (self-signed, or a private CA?): pass -ca FILE with the CA certificate, or -insecure to skip verification (%v)", addr, unknown)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("TLS: the certificate of %s is not valid for %q: %v", addr, host, hostErr)
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return fmt.Sprintf("TLS: the certificate of %s has expired or is not yet valid: %v", addr, invalid)
		}
		return fmt.Sprintf("TLS: the certificate of %s is invalid: %v", addr, invalid)
	case errors.As(err, &record):
		return fmt.Sprintf("TLS: %s did not answer with TLS: is it the TLS port (turns:, usually 5349)? (%v)", addr, record)
	case errors.As(err, &alert):
		return fmt.Sprintf("TLS: %s refused the handshake: %v", addr, alert)
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
