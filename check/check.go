package check

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relayproject/relay/auth"
)

// Defaults of Options.
const (
	DefaultTimeout = 5 * time.Second
	DefaultCount   = 5
	DefaultUser    = "relay-check"
	restTTL        = time.Hour
)

// Options says what to check and how.
type Options struct {
	// URL is turn:host[:port][?transport=udp|tcp], turns:host[:port][?transport=tcp],
	// stun:host[:port], or the http:// or https:// URL of an ICE endpoint.
	URL string

	// Secret mints TURN REST credentials: username "<now+1h>:<User>", password
	// base64(HMAC-SHA1(Secret, username)). User defaults to DefaultUser.
	Secret string
	// User is the user id after the ':' with Secret, else the static username.
	User string
	// Password is the static password (with User, without Secret).
	Password string

	// Token is sent to an ICE endpoint as Authorization: Bearer.
	Token string

	// CAFile is a PEM file of CA certificates trusted besides the system roots, for
	// turns: and https:. Insecure skips certificate verification altogether.
	CAFile   string
	Insecure bool

	// Timeout bounds each step (default DefaultTimeout).
	Timeout time.Duration
	// Peer, if set, is an external UDP echo peer (host:port): the round trip goes from the
	// allocation to it and back, instead of between two allocations.
	Peer string
	// Count is the number of datagrams of the round trip (default DefaultCount).
	Count int

	// Out, if set, receives each URL and each step as it completes, and the verdict: the
	// same text Report.Print writes afterwards.
	Out io.Writer
	// Now is the clock for minted credentials (nil: time.Now).
	Now func() time.Time
}

// Report is what Run found, URL by URL.
type Report struct {
	Targets []Target
}

// Target is one checked URL and its steps, in order. Steps after a failed one are not
// run; releasing what was allocated always is.
type Target struct {
	URL   string
	Steps []Step
}

// Step is one timed check.
type Step struct {
	Name     string
	OK       bool
	Duration time.Duration
	// Detail is what the step learned when it passed, or the diagnosis when it failed.
	Detail string
	// Code is the STUN ERROR-CODE (or HTTP status of an ICE endpoint) that failed the
	// step, 0 if none.
	Code int
}

// OK: the target has steps and all passed.
func (t Target) OK() bool {
	if len(t.Steps) == 0 {
		return false
	}
	for _, s := range t.Steps {
		if !s.OK {
			return false
		}
	}
	return true
}

// OK: there is at least one target and every step of every target passed.
func (r Report) OK() bool {
	if len(r.Targets) == 0 {
		return false
	}
	for _, t := range r.Targets {
		if !t.OK() {
			return false
		}
	}
	return true
}

// UsageError is an Options problem found before any network traffic.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// runner holds one Run's settings.
type runner struct {
	ctx     context.Context
	opts    Options
	timeout time.Duration
	count   int
	tls     *tls.Config
	peer    *net.UDPAddr
	out     *printer
	report  Report
}

// Run checks opts.URL. The error is non-nil (a *UsageError) only when the options are
// unusable, before anything is sent; failed checks are in the Report (Report.OK false).
func Run(ctx context.Context, opts Options) (Report, error) {
	r := &runner{ctx: ctx, opts: opts, timeout: opts.Timeout, count: opts.Count, out: &printer{w: opts.Out}}
	if r.timeout == 0 {
		r.timeout = DefaultTimeout
	}
	if r.timeout < 0 {
		return Report{}, usagef("timeout must be positive")
	}
	if r.count == 0 {
		r.count = DefaultCount
	}
	if r.count < 1 || r.count > 1000 {
		return Report{}, usagef("count must be 1-1000, not %d", opts.Count)
	}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	var err error
	if r.tls, err = tlsConfig(opts.CAFile, opts.Insecure); err != nil {
		return Report{}, err
	}
	if opts.Peer != "" {
		if r.peer, err = resolvePeer(ctx, opts.Peer); err != nil {
			return Report{}, err
		}
	}
	lower := strings.ToLower(opts.URL)
	switch {
	case opts.URL == "":
		return Report{}, usagef("no URL to check")
	case strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://"):
		if opts.Secret != "" || opts.User != "" || opts.Password != "" {
			return Report{}, usagef("-secret, -user and -pass do not apply to an ICE endpoint: it hands out its own credentials")
		}
		r.checkICE(opts.URL)
	default:
		u, err := parseServerURL(opts.URL)
		if err != nil {
			return Report{}, usagef("%v", err)
		}
		if opts.Token != "" {
			return Report{}, usagef("-token applies only to an http(s) ICE endpoint URL")
		}
		if !u.isTURN() {
			r.checkSTUN(u)
			break
		}
		creds, err := r.credentials()
		if err != nil {
			return Report{}, err
		}
		r.checkTURN(u, creds)
	}
	r.out.verdict(r.report.OK())
	return r.report, nil
}

// credentials from the options: minted from Secret, or static.
func (r *runner) credentials() (credentials, error) {
	o := r.opts
	switch {
	case o.Secret != "" && o.Password != "":
		return credentials{}, usagef("give either -secret (TURN REST credentials are minted from it) or -user and -pass, not both")
	case o.Secret != "":
		id := o.User
		if id == "" {
			id = DefaultUser
		}
		if strings.ContainsRune(id, ':') {
			return credentials{}, usagef("with -secret, -user is the user id after the ':' and cannot contain ':' (%q)", id)
		}
		username := fmt.Sprintf("%d:%s", o.Now().Add(restTTL).Unix(), id)
		return credentials{username, auth.RESTPassword(o.Secret, username)}, nil
	case o.User != "" && o.Password != "":
		return credentials{o.User, o.Password}, nil
	default:
		return credentials{}, usagef("a turn: URL needs credentials: -secret S (and optionally -user ID), or -user U -pass P")
	}
}

func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // -insecure is the operator's explicit choice
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, usagef("-ca: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usagef("-ca %s: no PEM certificate in it", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

func resolvePeer(ctx context.Context, peer string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(peer)
	if err != nil {
		return nil, usagef("-peer %q: want host:port", peer)
	}
	rctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return nil, usagef("-peer %q: cannot resolve %s: %v", peer, host, err)
	}
	a, err := net.ResolveUDPAddr("udp", net.JoinHostPort(ips[0].Unmap().String(), port))
	if err != nil {
		return nil, usagef("-peer %q: %v", peer, err)
	}
	return a, nil
}

// target starts reporting a URL.
func (r *runner) target(url string) *Target {
	r.report.Targets = append(r.report.Targets, Target{URL: url})
	r.out.target(url)
	return &r.report.Targets[len(r.report.Targets)-1]
}

// step runs fn with the step timeout, times it and records the outcome; diagnose turns
// an error into the failure's text.
func (r *runner) step(ctx context.Context, t *Target, name string, fn func(context.Context) (string, error), diagnose func(error) string) bool {
	sctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	detail, err := fn(sctx)
	s := Step{Name: name, OK: err == nil, Duration: time.Since(start), Detail: detail}
	if err != nil {
		s.Detail = diagnose(err)
		if errors.Is(sctx.Err(), context.Canceled) {
			s.Detail = "interrupted"
		}
		var se *stunError
		if errors.As(err, &se) {
			s.Code = se.Code
		}
		var he *httpError
		if errors.As(err, &he) {
			s.Code = he.status
		}
	}
	t.Steps = append(t.Steps, s)
	r.out.step(s)
	return s.OK
}

// checkSTUN: a Binding over the URL's transport.
func (r *runner) checkSTUN(u serverURL) {
	t := r.target(u.raw)
	p := &probe{u: u, timeout: r.timeout}
	c := r.connect(t, p)
	if c == nil {
		return
	}
	defer c.close()
	r.step(r.ctx, t, "STUN Binding", func(ctx context.Context) (string, error) {
		refl, err := c.binding(ctx)
		if err != nil {
			return "", err
		}
		return "reflexive address " + refl.String(), nil
	}, p.diagnose)
}

// connect opens the first connection. Over TCP and TLS that is a step of its own, so a
// refused port or a bad certificate is reported as such; over UDP there is nothing to
// connect and the Binding that follows is the first sign of life.
func (r *runner) connect(t *Target, p *probe) *stunConn {
	var c *stunConn
	name := map[string]string{"udp": "", "tcp": "TCP connect", "tls": "TLS handshake"}[p.u.transport]
	if name == "" {
		ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
		defer cancel()
		var err error
		if c, err = dial(ctx, p.u, r.tls); err != nil {
			// No packet was sent yet: local trouble (resolution, no route); report it on the
			// Binding line where the operator looks.
			r.step(r.ctx, t, "STUN Binding", func(context.Context) (string, error) { return "", err }, p.diagnose)
			return nil
		}
		return c
	}
	ok := r.step(r.ctx, t, name, func(ctx context.Context) (string, error) {
		var err error
		if c, err = dial(ctx, p.u, r.tls); err != nil {
			return "", err
		}
		if tc, isTLS := c.nc.(*tls.Conn); isTLS {
			return describeTLS(tc.ConnectionState(), r.opts.Insecure), nil
		}
		return "connected from " + c.localAddr().String(), nil
	}, p.diagnose)
	if !ok {
		return nil
	}
	return c
}

func describeTLS(st tls.ConnectionState, insecure bool) string {
	s := tls.VersionName(st.Version)
	if len(st.PeerCertificates) > 0 {
		cert := st.PeerCertificates[0]
		names := append([]string(nil), cert.DNSNames...)
		for _, ip := range cert.IPAddresses {
			names = append(names, ip.String())
		}
		s += fmt.Sprintf(", certificate for %s valid until %s", strings.Join(names, " "), cert.NotAfter.UTC().Format("2006-01-02"))
	}
	if insecure {
		s += " (NOT verified: -insecure)"
	} else {
		s += ", verified"
	}
	return s
}

// checkTURN runs every step on a turn:/turns: URL.
func (r *runner) checkTURN(u serverURL, creds credentials) {
	t := r.target(u.raw)
	p := &probe{u: u, timeout: r.timeout, creds: creds}
	if creds.username == "" {
		r.step(r.ctx, t, "Allocate", func(context.Context) (string, error) {
			return "", explainedf("no credentials: the ICE endpoint listed this URL without username and credential")
		}, p.diagnose)
		return
	}
	c := r.connect(t, p)
	if c == nil {
		return
	}
	var sessions []*session
	defer func() {
		r.releaseAll(t, p, sessions)
		for _, s := range sessions {
			s.c.close()
		}
	}()
	a := &session{c: c, creds: creds}
	sessions = append(sessions, a)

	if !r.step(r.ctx, t, "STUN Binding", func(ctx context.Context) (string, error) {
		refl, err := c.binding(ctx)
		if err != nil {
			return "", err
		}
		return "reflexive address " + refl.String(), nil
	}, p.diagnose) {
		return
	}
	allocate := func(s *session) func(context.Context) (string, error) {
		return func(ctx context.Context) (string, error) {
			if s.c == nil {
				c, err := dial(ctx, u, r.tls)
				if err != nil {
					return "", err
				}
				s.c = c
				sessions = append(sessions, s)
			}
			if err := s.allocate(ctx); err != nil {
				return "", err
			}
			d := "relayed address " + s.relayed.String()
			if s.lifetime > 0 && s == a {
				d += fmt.Sprintf(" (lifetime %d s)", int(s.lifetime/time.Second))
			}
			if s.anonymous {
				d += " (the server asked for no credentials)"
			}
			return d, nil
		}
	}
	if !r.step(r.ctx, t, "Allocate", allocate(a), p.diagnose) {
		return
	}
	if r.peer != nil {
		if !r.step(r.ctx, t, "CreatePermission", func(ctx context.Context) (string, error) {
			return "for peer " + r.peer.String(), a.createPermission(ctx, r.peer)
		}, p.diagnosePermission(r.peer.String())) {
			return
		}
		r.step(r.ctx, t, "peer round trip", func(ctx context.Context) (string, error) {
			return r.roundTrip(ctx, a, r.peer, nil)
		}, p.diagnose)
		return
	}
	b := &session{creds: creds}
	if !r.step(r.ctx, t, "Allocate (second)", allocate(b), p.diagnose) {
		return
	}
	if !r.step(r.ctx, t, "CreatePermission", func(ctx context.Context) (string, error) {
		if err := a.createPermission(ctx, b.relayed); err != nil {
			return "", &whereError{"CreatePermission on the first allocation, for " + b.relayed.String(), err}
		}
		if err := b.createPermission(ctx, a.relayed); err != nil {
			return "", &whereError{"CreatePermission on the second allocation, for " + a.relayed.String(), err}
		}
		return "", nil
	}, p.diagnosePermission("the relayed address")) {
		return
	}
	r.step(r.ctx, t, "relay round trip", func(ctx context.Context) (string, error) {
		return r.roundTrip(ctx, a, b.relayed, b)
	}, p.diagnose)
}

// releaseAll deletes every allocation (Refresh, LIFETIME 0), even when the run was
// interrupted: leftovers would count against the user's quota until they expire.
func (r *runner) releaseAll(t *Target, p *probe, sessions []*session) {
	var live []*session
	for _, s := range sessions {
		if s.allocated {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return
	}
	r.step(context.WithoutCancel(r.ctx), t, "Release", func(ctx context.Context) (string, error) {
		var errs []error
		for i, s := range live {
			if err := s.release(ctx); err != nil {
				if len(live) > 1 {
					err = &whereError{fmt.Sprintf("allocation %d of %d, %s", i+1, len(live), s.relayed), err}
				}
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return "", errors.Join(errs...)
		}
		if len(live) == 1 {
			return "allocation deleted (Refresh, lifetime 0)", nil
		}
		return fmt.Sprintf("%d allocations deleted (Refresh, lifetime 0)", len(live)), nil
	}, p.diagnoseRelease)
}

// roundTripError: relayed datagrams did not all come back.
type roundTripError struct {
	got, want int
	reached   int // datagrams that reached the second allocation (-1: external peer)
	to        *net.UDPAddr
}

func (e *roundTripError) Error() string {
	return fmt.Sprintf("%d/%d datagrams came back", e.got, e.want)
}

// roundTrip sends r.count datagrams from a to peer through the relay and waits for each
// to come back. echo, if set, is the second allocation, which echoes what it receives
// from a back to a's relayed address; otherwise peer echoes by itself. Datagrams that do
// not come back are sent again, with a doubling wait, until the step's deadline.
func (r *runner) roundTrip(ctx context.Context, a *session, peer *net.UDPAddr, echo *session) (string, error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	prefix := "relay-check " + hex.EncodeToString(tok[:]) + " "

	var reached atomic.Int64 // datagrams that reached the second allocation
	if echo != nil {
		echoCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		defer func() { stop(); <-done }()
		go func() {
			defer close(done)
			for {
				select {
				case d := <-echo.c.data:
					if strings.HasPrefix(string(d.payload), prefix) {
						reached.Add(1)
						_ = echo.send(a.relayed, d.payload)
					}
				case <-echoCtx.Done():
					return
				case <-echo.c.done:
					return
				}
			}
		}()
	}

	sent := make([]time.Time, r.count)
	rtt := make([]time.Duration, r.count)
	got, resent := 0, 0
	wait := 250 * time.Millisecond
	fail := func(err error) (string, error) {
		if err != nil {
			return "", err
		}
		e := &roundTripError{got: got, want: r.count, to: peer, reached: -1}
		if echo != nil {
			e.reached = int(reached.Load())
		}
		return "", e
	}
	for got < r.count {
		for i := range r.count {
			if rtt[i] != 0 {
				continue
			}
			if !sent[i].IsZero() {
				resent++
			}
			sent[i] = time.Now()
			if err := a.send(peer, []byte(fmt.Sprintf("%s%d", prefix, i))); err != nil {
				return fail(err)
			}
		}
		timer := time.NewTimer(wait)
	collect:
		for got < r.count {
			select {
			case d := <-a.c.data:
				rest, ok := strings.CutPrefix(string(d.payload), prefix)
				var i int
				if _, err := fmt.Sscan(rest, &i); !ok || err != nil || i < 0 || i >= r.count || rtt[i] != 0 {
					continue
				}
				rtt[i] = max(time.Since(sent[i]), time.Nanosecond)
				got++
			case <-timer.C:
				break collect
			case <-ctx.Done():
				timer.Stop()
				return fail(nil)
			case <-a.c.done:
				timer.Stop()
				return fail(a.c.connErr())
			}
		}
		timer.Stop()
		wait = min(2*wait, 2*time.Second)
	}
	var sum time.Duration
	for _, d := range rtt {
		sum += d
	}
	detail := fmt.Sprintf("%d/%d datagrams", got, r.count)
	if echo != nil {
		detail += " through two allocations"
	} else {
		detail += " echoed by " + peer.String()
	}
	detail += fmt.Sprintf(", %.1f ms average", float64(sum)/float64(r.count)/float64(time.Millisecond))
	if resent > 0 {
		detail += fmt.Sprintf(", %d sent again", resent)
	}
	return detail, nil
}
