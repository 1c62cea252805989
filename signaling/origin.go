package signaling

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// originAllowed reports whether r's Origin may use the endpoints: no Origin (not a
// browser's cross-origin request), a page of this server itself, or an origin listed
// in allowed_origins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if s.sameOrigin(origin, r) {
		return true
	}
	for _, o := range s.conf().AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether origin is the origin r was sent to: relay's own demo and
// diagnostics pages, which must work whatever allowed_origins lists (it names the
// operator's application, and the pages are served here). That is the scheme of this
// listener (https with a certificate) and the host and port of the Host header.
//
// When public_host is set, a host name must be it: a Host header is the browser's
// word for the name it resolved, and a page of another site whose name is made to
// resolve to this server (DNS rebinding) would otherwise count as this server's own.
// An IP address cannot be rebound, so one is accepted as the server's too.
func (s *Server) sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if !strings.EqualFold(u.Scheme, scheme) {
		return false
	}
	oHost, oPort, ok1 := splitHostPort(u.Host, scheme)
	rHost, rPort, ok2 := splitHostPort(r.Host, scheme)
	if !ok1 || !ok2 || oPort != rPort || !strings.EqualFold(oHost, rHost) {
		return false
	}
	if ph := s.conf().PublicHost; ph != "" && !strings.EqualFold(oHost, ph) {
		if _, err := netip.ParseAddr(oHost); err != nil {
			return false
		}
	}
	return true
}

// splitHostPort splits "host[:port]" (IPv6 in brackets), giving the scheme's default
// port when there is none, as browsers leave it out of both Origin and Host.
func splitHostPort(hp, scheme string) (host, port string, ok bool) {
	if h, p, err := net.SplitHostPort(hp); err == nil {
		return strings.TrimSuffix(h, "."), p, h != "" && p != ""
	}
	if strings.HasPrefix(hp, "[") != strings.HasSuffix(hp, "]") || (!strings.HasPrefix(hp, "[") && strings.Contains(hp, ":")) {
		return "", "", false
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), ".")
	port = "80"
	if scheme == "https" {
		port = "443"
	}
	return host, port, host != ""
}

// refusedOriginEvery is how often at most a refused origin is logged: a page that
// retries, or a scanner, would otherwise fill the log.
const refusedOriginEvery = 5 * time.Second

// maxLoggedOrigin bounds how much of an Origin header (up to the 16 KiB of headers
// net/http allows) goes into the log.
const maxLoggedOrigin = 100

// logLimiter lets one line through per period and counts the ones it held back.
type logLimiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were held back since the last.
func (l *logLimiter) allow(now time.Time, every time.Duration) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	l.next = now.Add(every)
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logRefusedOrigin tells the operator, at info and rate-limited, that a browser page
// was refused for its origin: the page itself only sees its socket close (1006).
func (s *Server) logRefusedOrigin(r *http.Request, route string) {
	ok, suppressed := s.originLog.allow(time.Now(), refusedOriginEvery)
	if !ok {
		return
	}
	switch route {
	case "peerjs", "ice":
	default:
		route = "other" // the path is the client's to choose: not logged
	}
	s.log.Info("refused a request from an origin not in signal.allowed_origins; add it there if it is your application's",
		"origin", printable(r.Header.Get("Origin"), maxLoggedOrigin), "ip", clientIP(r).String(), "route", route,
		"suppressed", suppressed)
}

// printable is s cut to at most n bytes, with anything but printable ASCII as "?":
// what a client sends is logged only in a form that cannot forge or garble a line.
func printable(s string, n int) string {
	cut := len(s) > n
	if cut {
		s = s[:n]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if cut {
		return string(b) + "..."
	}
	return string(b)
}
