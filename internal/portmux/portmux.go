// Package portmux serves TURN and HTTP(S) on one TCP port: the listener behind a
// `[turn] tls` address equal to `[signal] listen` (TLS), or a `[turn] tcp` address equal
// to a plain `[signal] listen`. Networks that let only 443/TCP out reach both there.
//
// Each accepted connection is routed once, on a goroutine of its own, then handed to
// one of two listeners, TURN() for relay's TURN server and HTTP() for signaling:
//
//   - TLS: after the handshake, by ALPN when the client named a protocol we speak
//     ("http/1.1" → HTTP; "stun.turn", RFC 7443 → TURN); a client naming only others
//     (e.g. only "h2") gets no ALPN, as from a listener without protocols. Browsers send
//     no ALPN on turns: connections, so those are routed by their first bytes, read
//     through the tls.Conn and put back in front of it (wsconn.PeekedTLS).
//   - Plain TCP: by the first bytes, peeked (MSG_PEEK) so that the socket is handed
//     over untouched.
//
// The first bytes: an HTTP method and a space ("GET ", "POST ", ..., "PRI " of an h2
// preface) go to HTTP; anything else to TURN, whose gate answers STUN, relays
// ChannelData and counts the rest as malformed. A STUN header starts with two zero
// bits, which no method letter has, so one byte tells a STUN client apart at once.
//
// TLS connections are made with wsconn.ServerTLS, so that a wss socket routed to HTTP
// can still be taken over by signaling's pollers; one routed to TURN is left to its
// tls.Conn (wsconn.KeepTLS).
//
// Connections still being routed are capped in total and per source address; a client
// gets HandshakeTimeout to finish its handshake and send its first bytes. A full port
// makes room for a source holding fewer than the busiest by closing the busiest one's
// oldest: a few addresses holding every slot with silent connections cannot lock
// everyone else out of the port (and out of both TURN and HTTPS with it).
package portmux

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/relayproject/relay/internal/wsconn"
)

// ALPN protocol names (IANA "TLS Application-Layer Protocol Negotiation Protocol IDs").
const (
	ProtoHTTP11 = "http/1.1"
	ProtoTURN   = "stun.turn"     // RFC 7443
	ProtoACME   = "acme-tls/1"    // RFC 8737: a TLS-ALPN-01 validation; ends after the handshake
	maxPeek     = len("OPTIONS ") // the longest method we look for, with its space
)

// Defaults of Config's limits.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxPending       = 1024
	DefaultMaxPendingPerIP  = 64
)

// Config says how a Mux routes.
type Config struct {
	// TLS, when set, makes the port TLS: its GetCertificate (or Certificates) present
	// the certificate. NextProtos is the Mux's own ("http/1.1", "stun.turn"), plus
	// what TLS.NextProtos lists (ProtoACME when certificates come by ACME). nil: plain
	// TCP.
	TLS *tls.Config
	// HandshakeTimeout bounds the handshake and the wait for the first bytes.
	HandshakeTimeout time.Duration
	// MaxPending and MaxPendingPerIP cap the connections being routed at once, in total
	// and per source address (an IPv6 source counts per /64). A source at its cap gets
	// its new connections closed at once; so does one holding as many as any other
	// when the port is full. Otherwise a full port closes the oldest connection of the
	// source holding the most to take the new one.
	MaxPending, MaxPendingPerIP int
	// Dropped, if set, counts each connection closed before it was routed, by reason
	// (DropPerSource, DropFull, DropEvicted, DropTimeout).
	Dropped func(reason string)
	Logger  *slog.Logger
}

// Reasons a connection is closed before it is routed (Config.Dropped).
const (
	DropPerSource = "per_source" // refused: its source has MaxPendingPerIP being routed
	DropFull      = "full"       // refused: MaxPending being routed, none from a busier source
	DropEvicted   = "evicted"    // closed for a connection of a source holding fewer
	DropTimeout   = "timeout"    // no handshake and first bytes within HandshakeTimeout
)

// Mux is one shared port.
type Mux struct {
	ln        net.Listener
	cfg       Config
	tls       *tls.Config // with our NextProtos; nil: plain TCP
	log       *slog.Logger
	turn, web *sub

	mu      sync.Mutex
	pending map[netip.Prefix][]*pending // connections being routed, by source, oldest first
	total   int
	seq     uint64
	closed  bool
	lastLog time.Time
	wg      sync.WaitGroup
	started bool
}

// pending is a connection being routed.
type pending struct {
	c      net.Conn
	key    netip.Prefix // its source
	seq    uint64       // order of arrival
	routed bool         // on its way to a side: no longer closed to make room
	gone   bool         // closed to make room: no longer counted
}

// Route is where a connection goes.
type Route int

const (
	RouteNone Route = iota // not decided yet (more bytes needed)
	RouteTURN
	RouteHTTP
)

// Listen opens the shared port on addr (network "tcp", "tcp4" or "tcp6"). Nothing is
// accepted until Serve.
func Listen(network, addr string, cfg Config) (*Mux, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return New(ln, cfg), nil
}

// New routes the connections of ln (a TCP listener) once Serve is called.
func New(ln net.Listener, cfg Config) *Mux {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingPerIP <= 0 {
		cfg.MaxPendingPerIP = DefaultMaxPendingPerIP
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mux{ln: ln, cfg: cfg, log: cfg.Logger, pending: map[netip.Prefix][]*pending{}}
	m.turn = newSub(ln.Addr())
	m.web = newSub(ln.Addr())
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		// Ours first, in this order: crypto/tls picks the first of ours the client
		// offers, and a TURN client may offer HTTP/1.1 as well (coturn's turnutils
		// sends "http/1.1" and "stun.turn"); a browser never offers stun.turn.
		protos := []string{ProtoTURN, ProtoHTTP11}
		for _, p := range t.NextProtos {
			if !slices.Contains(protos, p) {
				protos = append(protos, p)
			}
		}
		t.NextProtos = protos
		// A client naming none of our protocols is served as by a listener with none:
		// crypto/tls would refuse it (no_application_protocol).
		t.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			for _, p := range h.SupportedProtos {
				if slices.Contains(protos, p) {
					return nil, nil
				}
			}
			if len(h.SupportedProtos) == 0 {
				return nil, nil
			}
			c := t.Clone()
			c.NextProtos, c.GetConfigForClient = nil, nil
			return c, nil
		}
		if t.MinVersion == 0 {
			t.MinVersion = tls.VersionTLS12
		}
		m.tls = t
	}
	return m
}

// Addr is the shared port's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// TLS reports whether the port is TLS.
func (m *Mux) TLS() bool { return m.tls != nil }

// TURN is the listener of the connections routed to TURN: handshaken already when the
// port is TLS (a tls.Conn, or a wsconn.PeekedTLS), a *net.TCPConn otherwise.
func (m *Mux) TURN() net.Listener { return m.turn }

// HTTP is the listener of the connections routed to HTTP(S), in the same forms.
func (m *Mux) HTTP() net.Listener { return m.web }

// Serve starts accepting; it returns at once.
func (m *Mux) Serve() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	m.wg.Add(1)
	go m.acceptLoop()
}

// Close stops accepting, closes both listeners and waits for the connections being
// routed (each within HandshakeTimeout; closing the port ends their waits sooner).
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	for _, ps := range m.pending {
		for _, p := range ps {
			_ = p.c.Close()
		}
	}
	m.mu.Unlock()
	err := m.ln.Close()
	m.turn.Close()
	m.web.Close()
	m.wg.Wait()
	return err
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors (EMFILE) and the like: pause, as net/http does.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		p := m.admit(c)
		if p == nil {
			_ = c.Close()
			continue
		}
		go func() {
			defer m.wg.Done()
			defer m.release(p)
			m.route(p)
		}()
	}
}

// admit counts c as pending, making room for it if need be, or refuses it (nil). The
// WaitGroup is taken under the lock, so Close's Wait never races a new Add.
func (m *Mux) admit(c net.Conn) *pending {
	key := sourceKey(c.RemoteAddr())
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	mine := len(m.pending[key])
	if mine >= m.cfg.MaxPendingPerIP {
		m.refused(DropPerSource, key, mine)
		return nil
	}
	if m.total >= m.cfg.MaxPending {
		victim := m.busiest(mine)
		if victim == nil {
			m.refused(DropFull, key, mine)
			return nil
		}
		m.forget(victim)
		victim.gone = true
		_ = victim.c.Close() // its router ends at once, and does not count it again
		m.drop(DropEvicted)
	}
	m.seq++
	p := &pending{c: c, key: key, seq: m.seq}
	m.pending[key] = append(m.pending[key], p)
	m.total++
	m.wg.Add(1)
	return p
}

// busiest is the oldest connection not yet routed of the source holding the most (of
// sources holding as many, the one whose connection is oldest), if that source holds
// more than mine; nil otherwise. It looks at every source: only when the port is full.
func (m *Mux) busiest(mine int) *pending {
	var victim *pending
	most := 0
	for _, ps := range m.pending {
		n := len(ps)
		if n <= mine || n < most {
			continue
		}
		i := slices.IndexFunc(ps, func(p *pending) bool { return !p.routed })
		if i < 0 {
			continue
		}
		if n > most || ps[i].seq < victim.seq {
			victim, most = ps[i], n
		}
	}
	return victim
}

// forget stops counting p.
func (m *Mux) forget(p *pending) {
	ps := m.pending[p.key]
	if i := slices.Index(ps, p); i >= 0 {
		ps = slices.Delete(ps, i, i+1)
	}
	if len(ps) == 0 {
		delete(m.pending, p.key)
	} else {
		m.pending[p.key] = ps
	}
	m.total--
}

// refused logs refusals at most every 5 s and counts each.
func (m *Mux) refused(reason string, key netip.Prefix, fromSource int) {
	if now := time.Now(); now.Sub(m.lastLog) > 5*time.Second {
		m.lastLog = now
		m.log.Warn("shared port: refusing connections while too many are in their handshake",
			"addr", m.ln.Addr().String(), "reason", reason, "pending", m.total, "from_source", fromSource, "source", key.String())
	}
	m.drop(reason)
}

func (m *Mux) drop(reason string) {
	if m.cfg.Dropped != nil {
		m.cfg.Dropped(reason)
	}
}

func (m *Mux) release(p *pending) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !p.gone {
		m.forget(p)
	}
}

// sourceKey is the source address a connection counts against: the address itself for
// IPv4, its /64 for IPv6 (one host usually holds a whole /64).
func sourceKey(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// route decides where p's connection goes and hands it over (or closes it).
func (m *Mux) route(p *pending) {
	c := p.c
	deadline := time.Now().Add(m.cfg.HandshakeTimeout)
	var (
		conn net.Conn
		to   Route
		err  error
	)
	if m.tls != nil {
		conn, to, err = m.routeTLS(c, deadline)
	} else {
		conn = c
		to, err = routeTCP(c, deadline)
	}
	if err == nil && to != RouteNone && !m.markRouted(p) {
		err = net.ErrClosed // closed to make room meanwhile
	}
	if err != nil || to == RouteNone {
		if conn != nil {
			_ = conn.Close()
		} else {
			_ = c.Close()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			m.drop(DropTimeout)
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if m.log.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{"from", c.RemoteAddr().String(), "to", map[Route]string{RouteTURN: "turn", RouteHTTP: "http"}[to]}
		if tc := tlsConnOf(conn); tc != nil {
			cs := tc.ConnectionState()
			attrs = append(attrs, "sni", cs.ServerName, "alpn", cs.NegotiatedProtocol)
		}
		m.log.Debug("shared port: routed", attrs...)
	}
	target := m.web
	if to == RouteTURN {
		target = m.turn
		if tc := tlsConnOf(conn); tc != nil {
			wsconn.KeepTLS(tc)
		}
	}
	target.deliver(conn)
}

// markRouted keeps p from being closed to make room, now that it has a side; false if
// it was closed for that already.
func (m *Mux) markRouted(p *pending) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.routed = !p.gone
	return p.routed
}

func tlsConnOf(c net.Conn) *tls.Conn {
	switch c := c.(type) {
	case *tls.Conn:
		return c
	case *wsconn.PeekedTLS:
		return c.Conn
	}
	return nil
}

func (m *Mux) routeTLS(c net.Conn, deadline time.Time) (net.Conn, Route, error) {
	tc := wsconn.ServerTLS(c, m.tls)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		// A client that refuses the certificate ends here (bad_certificate alert).
		m.log.Debug("shared port: TLS handshake failed", "from", c.RemoteAddr().String(), "err", err)
		return tc, RouteNone, err
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case ProtoHTTP11:
		return tc, RouteHTTP, nil
	case ProtoTURN:
		return tc, RouteTURN, nil
	case ProtoACME:
		// The certificate was the answer (RFC 8737 §3): the validator closes now.
		m.log.Info("ACME TLS-ALPN-01 validation answered", "from", c.RemoteAddr().String(), "name", tc.ConnectionState().ServerName)
		return tc, RouteNone, nil
	}
	_ = tc.SetReadDeadline(deadline)
	buf := make([]byte, 0, maxPeek)
	for {
		n, err := tc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if to := Classify(buf); to != RouteNone {
			return wsconn.NewPeekedTLS(tc, buf), to, nil
		}
		if err != nil {
			return tc, RouteNone, err
		}
	}
}

// routeTCP peeks at c's first bytes without taking them from the socket, waiting for
// more (in Go's poller) until they decide or the deadline passes.
func routeTCP(c net.Conn, deadline time.Time) (Route, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return RouteNone, errors.New("portmux: not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return RouteNone, err
	}
	_ = c.SetReadDeadline(deadline)
	var (
		buf  [maxPeek]byte
		seen int
		to   Route
		perr error
	)
	err = rc.Read(func(fd uintptr) bool {
		n, err := peek(fd, buf[:])
		switch {
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			perr = err
			return true
		case n == 0:
			perr = io.EOF
			return true
		}
		if to = Classify(buf[:n]); to != RouteNone {
			return true
		}
		if n == seen {
			return false // nothing new: wait for more (the poller's next edge)
		}
		seen = n
		return false
	})
	if err != nil {
		return RouteNone, err
	}
	return to, perr
}

// httpMethods are the request methods that send a connection to HTTP (RFC 9110, PATCH,
// and the "PRI" of an HTTP/2 connection preface), with the space after them.
var httpMethods = []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "TRACE ", "PATCH ", "PRI "}

// Classify routes a connection by its first bytes: RouteHTTP for an HTTP method and a
// space, RouteTURN for anything else, RouteNone while b is too short to tell (a prefix
// of a method).
func Classify(b []byte) Route {
	if len(b) == 0 {
		return RouteNone
	}
	if b[0]>>6 == 0 {
		return RouteTURN // a STUN message: the first two bits are zero
	}
	for _, m := range httpMethods {
		k := min(len(b), len(m))
		if string(b[:k]) == m[:k] {
			if k == len(m) {
				return RouteHTTP
			}
			return RouteNone // so far a method: read on
		}
	}
	return RouteTURN
}

// sub is one side of the port: a net.Listener fed by the routers.
type sub struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newSub(addr net.Addr) *sub {
	return &sub{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (s *sub) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// deliver waits for the consumer's Accept, or closes c if the listener is closed.
func (s *sub) deliver(c net.Conn) {
	select {
	case s.ch <- c:
	case <-s.done:
		_ = c.Close()
	}
}

func (s *sub) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *sub) Addr() net.Addr { return s.addr }
