package signaling

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/listen"
	"github.com/relayproject/relay/internal/wsconn"
	"github.com/relayproject/relay/metrics"
)

// Options assembles a Server.
type Options struct {
	Config   config.Signal
	Registry Registry // nil: a single-node in-memory registry
	// Mint makes time-limited TURN credentials for a user id.
	Mint func(userID string, ttl time.Duration) (auth.Credentials, error)
	// URIs lists the server's stun: and turn:/turns: URIs for a host name.
	URIs    func(host string) (stun, turn []string)
	Pages   http.Handler // serves {path}demo, {path}diag and {path}assets/; nil: none
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Revoke revokes the credentials of user id userID expiring by until: with
	// bind_credentials, those issued to a peer that left (bind.go). nil: none.
	Revoke func(userID string, until time.Time)
	// Listener, when set, is served instead of listening on Config.Listen: a port shared
	// with TURN (internal/portmux), whose connections arrive with their TLS handshake
	// done when the server has TLS.
	Listener net.Listener
	// GetCertificate, when set, turns TLS on and presents its certificates instead of
	// Config.TLSCert (certificates by ACME); reloads then leave certificates to it.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NextProtos are ALPN protocols the TLS listener accepts besides HTTP/1.1 (an ACME
	// TLS-ALPN-01 validation's).
	NextProtos []string
}

// Server is the signaling endpoint, the ICE endpoint and the pages on one HTTP server.
type Server struct {
	cfg     config.Signal                 // as started: listener, path, key
	live    atomic.Pointer[config.Signal] // what Reload may change
	reg     Registry
	mint    func(string, time.Duration) (auth.Credentials, error)
	revoke  func(string, time.Time)
	bind    *binder // credentials bound to sessions (bind.go)
	uris    func(string) ([]string, []string)
	pages   http.Handler
	metrics *metrics.Metrics
	log     *slog.Logger
	ice     *rateLimiter
	cert    atomic.Pointer[tls.Certificate]
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error) // Options.GetCertificate
	premade net.Listener                                         // Options.Listener
	protos  []string                                             // Options.NextProtos
	epoch   time.Time                                            // now() counts from here, on the monotonic clock
	counts  map[string]prometheus.Counter                        // relay_signal_messages_total by type
	// relay_signal_rejected_total{reason="rate"}, counted per dropped frame of a flood
	rejectedRate prometheus.Counter

	pollers *wsconn.Pollers // read the sockets, ws and wss (Linux)

	outboxes  wsconn.Budget // bytes waiting in peers' outboxes, per address and in total
	originLog logLimiter    // refused origins are logged at most every refusedOriginEvery

	mu     sync.Mutex
	conns  map[*peer]struct{}
	perIP  map[netip.Addr]int
	closed bool

	httpSrv *http.Server
	ln      net.Listener
	cancel  context.CancelFunc
	loops   sync.WaitGroup
}

// New checks the options; Start listens.
func New(o Options) (*Server, error) {
	if o.Mint == nil || o.URIs == nil || o.Metrics == nil {
		return nil, errors.New("signaling: Options needs Mint, URIs and Metrics")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = NewMemoryRegistry(limitsOf(&o.Config))
	}
	s := &Server{
		cfg: o.Config, reg: o.Registry, mint: o.Mint, revoke: o.Revoke, bind: newBinder(), uris: o.URIs, pages: o.Pages,
		metrics: o.Metrics, log: o.Logger, ice: newRateLimiter(o.Config.ICERequestsPerMinute),
		conns: make(map[*peer]struct{}), perIP: make(map[netip.Addr]int),
		epoch: time.Now(), counts: make(map[string]prometheus.Counter),
		getCert: o.GetCertificate, premade: o.Listener, protos: o.NextProtos,
	}
	s.live.Store(&o.Config)
	for _, t := range []string{typeOffer, typeAnswer, typeCandidate, typeLeave, typeExpire, typeHeartbeat, "other"} {
		s.counts[t] = s.metrics.SignalMessages.WithLabelValues(t)
	}
	for _, r := range []string{"missing_params", "invalid_key", "invalid_id", "id_taken", "full", "per_ip_limit",
		"origin", "message_too_large", "queue_full", "slow_consumer", "rate"} {
		s.metrics.SignalRejected.WithLabelValues(r)
	}
	s.rejectedRate = s.metrics.SignalRejected.WithLabelValues("rate")
	for _, r := range []string{"origin", "token", "rate", "bad_request", "no_peer"} {
		s.metrics.ICERequestsDenied.WithLabelValues(r)
	}
	return s, nil
}

// conf is the current configuration (Reload swaps it).
func (s *Server) conf() *config.Signal { return s.live.Load() }

// now is a monotonic clock in nanoseconds, for liveness and rates.
func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// countMessage counts a received message by type.
func (s *Server) countMessage(typ string) { s.counts[metricType(typ)].Inc() }

// Reload applies a new [signal] section: origins, tokens, timeouts, limits, credential
// lifetime, public host and the TLS certificate. Open sockets stay. It returns the
// changed keys that need a restart (listen, path, key, TLS on or off); an error (an
// unreadable certificate) changes nothing.
func (s *Server) Reload(c config.Signal) (needRestart []string, err error) {
	if c.TLSCert != "" && s.cfg.TLSCert != "" && s.getCert == nil {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("signal.tls_cert %q / signal.tls_key %q: %w", c.TLSCert, c.TLSKey, err)
		}
		s.cert.Store(&cert)
	}
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"signal.listen", c.Listen != s.cfg.Listen},
		{"signal.path", c.Path != s.cfg.Path},
		{"signal.key", c.Key != s.cfg.Key},
		{"signal.tls_cert", s.getCert == nil && (c.TLSCert == "") != (s.cfg.TLSCert == "")},
	} {
		if k.changed {
			needRestart = append(needRestart, k.key)
		}
	}
	if r, ok := s.reg.(interface{ setLimits(Limits) }); ok {
		r.setLimits(limitsOf(&c))
	} else if r, ok := s.reg.(interface{ SetLimits(Limits) }); ok { // a Registry from another package (a fleet's)
		r.SetLimits(limitsOf(&c))
	}
	s.ice.setRate(c.ICERequestsPerMinute)
	s.live.Store(&c)
	return needRestart, nil
}

// Start listens on the configured address (https/wss when a certificate is set) and
// starts the expiry sweep and the pings.
func (s *Server) Start() error {
	if s.cfg.TLSCert != "" && s.getCert == nil {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("signal.tls_cert %q / signal.tls_key %q: %w", s.cfg.TLSCert, s.cfg.TLSKey, err)
		}
		s.cert.Store(&cert)
	}
	ln := s.premade
	if ln == nil {
		var err error
		if ln, err = net.Listen(listen.Network("tcp", s.cfg.Listen), s.cfg.Listen); err != nil {
			return fmt.Errorf("signal.listen %q: %w", s.cfg.Listen, err)
		}
		if s.TLS() {
			// wsconn's listener, so that wss sockets can move to the pollers as plain ones do.
			ln = wsconn.NewTLSListener(ln, &tls.Config{
				MinVersion:     tls.VersionTLS12,
				GetCertificate: s.GetCertificate,
				NextProtos:     s.protos,
			})
		}
	}
	ps, err := wsconn.StartPollers(0, s.log)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("signaling: epoll: %w", err)
	}
	s.pollers = ps
	s.ln = ln
	s.httpSrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext:       peekedTLSContext,
		// HTTP/1.1 only: a WebSocket is an HTTP/1.1 upgrade (its socket goes to a poller),
		// and an ALPN protocol other than HTTP/1.1 (an ACME validation's) ends at once.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.loops.Add(3)
	go func() {
		defer s.loops.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("signaling server stopped", "err", err)
		}
	}()
	go s.sweep(ctx)
	go s.pings(ctx)
	return nil
}

// Addr is the bound listener address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Scheme is "https" with a certificate, else "http".
func (s *Server) Scheme() string {
	if s.TLS() {
		return "https"
	}
	return "http"
}

// TLS reports whether the server serves https and wss: a certificate file, or
// certificates by ACME (Options.GetCertificate).
func (s *Server) TLS() bool { return s.cfg.TLSCert != "" || s.getCert != nil }

// GetCertificate presents the server's certificate (the current one: reloads and ACME
// renewals swap it), for its own listener and for a port it shares with TURN.
func (s *Server) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.getCert != nil {
		return s.getCert(h)
	}
	return s.cert.Load(), nil
}

type tlsStateKey struct{}

// peekedTLSContext remembers the TLS state of a connection a shared port's router
// read the first bytes of (wsconn.PeekedTLS): net/http fills Request.TLS only for a
// *tls.Conn, and ServeHTTP puts it there from the context.
func peekedTLSContext(ctx context.Context, c net.Conn) context.Context {
	if p, ok := c.(*wsconn.PeekedTLS); ok {
		cs := p.ConnectionState()
		return context.WithValue(ctx, tlsStateKey{}, &cs)
	}
	return ctx
}

// Close stops accepting, closes every peer socket and waits for the loops.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*peer, 0, len(s.conns))
	for p := range s.conns {
		conns = append(conns, p)
	}
	s.mu.Unlock()
	var err error
	if s.httpSrv != nil {
		err = s.httpSrv.Shutdown(ctx) // hijacked WebSockets are not its business
	}
	for _, p := range conns {
		p.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.pollers.Stop()
	s.loops.Wait()
	s.bind.close()
	return err
}

// sweep expires queued messages and tells their senders, as the PeerJS server does
// every second (faster when expire_timeout is short).
func (s *Server) sweep(ctx context.Context) {
	defer s.loops.Done()
	for {
		every := min(time.Second, max(s.conf().ExpireTimeout/5, 20*time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case now := <-time.After(every):
			s.expire(now)
			s.ice.prune(now)
		}
	}
}

func (s *Server) expire(now time.Time) {
	gone := s.reg.Expire(now.Add(-s.conf().ExpireTimeout))
	if len(gone) == 0 {
		return
	}
	s.metrics.SignalExpired.Add(float64(len(gone)))
	told := make(map[[2]string]bool)
	for _, q := range gone {
		k := [2]string{q.Src, q.Dst}
		if told[k] {
			continue
		}
		told[k] = true
		if sender := s.reg.Lookup(q.Src); sender != nil {
			sender.Send(encode(outbound{Type: typeExpire, Src: q.Dst, Dst: q.Src}))
		}
	}
}

// pings sends every socket a WebSocket ping three times per alive_timeout. Browsers
// answer on their own, so clients that never send HEARTBEAT (PeerJS 0.3.x) stay alive.
// It also closes sockets silent for alive_timeout, and those whose writes have made no
// progress for wsconn.WriteTimeout.
func (s *Server) pings(ctx context.Context) {
	defer s.loops.Done()
	var conns []*peer
	lastPing := s.now()
	for {
		alive := s.conf().AliveTimeout
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second, max(alive/8, 10*time.Millisecond))):
		}
		now := s.now()
		ping := time.Duration(now-lastPing) >= max(alive/3, 50*time.Millisecond)
		if ping {
			lastPing = now
		}
		s.mu.Lock()
		for p := range s.conns {
			conns = append(conns, p)
		}
		s.mu.Unlock()
		for i, p := range conns {
			conns[i] = nil
			p.c.Check(alive, ping)
		}
		conns = conns[:0]
	}
}

// ServeHTTP routes everything under the configured path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		if cs, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
			r.TLS = cs
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, s.cfg.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	origin := r.Header.Get("Origin")
	if origin != "" {
		if !s.originAllowed(r) {
			s.logRefusedOrigin(r, rest)
			if rest == "ice" {
				s.metrics.ICERequestsDenied.WithLabelValues("origin").Inc()
			} else {
				s.metrics.SignalRejected.WithLabelValues("origin").Inc()
			}
			jsonError(w, http.StatusForbidden, "origin not allowed")
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	switch {
	case rest == "peerjs":
		s.serveWebSocket(w, r)
	case wsconn.IsUpgrade(r):
		jsonError(w, http.StatusBadRequest, "the WebSocket endpoint is "+s.cfg.Path+"peerjs")
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		jsonError(w, http.StatusNotFound, "not found") // e.g. the legacy XHR stream POSTs
	case rest == "":
		writeJSON(w, http.StatusOK, map[string]string{
			"name":        "PeerJS Server",
			"description": "relay: PeerJS-compatible signaling with STUN/TURN and ICE credentials",
			"website":     "https://peerjs.com/",
		})
	case rest == "ice":
		s.serveICE(w, r)
	case rest == "demo" || rest == "diag" || strings.HasPrefix(rest, "assets/"):
		if s.pages == nil {
			http.NotFound(w, r)
			return
		}
		s.pages.ServeHTTP(w, r)
	default:
		key, what, ok := strings.Cut(rest, "/")
		switch {
		case ok && key != "" && what == "id":
			s.serveID(w)
		case ok && key != "" && what == "peers":
			if !s.conf().AllowDiscovery {
				jsonError(w, http.StatusUnauthorized, "peer discovery is disabled (signal.allow_discovery)")
				return
			}
			ids := s.reg.IDs()
			writeJSON(w, http.StatusOK, ids)
		default:
			http.NotFound(w, r)
		}
	}
}

// serveID answers GET {path}{key}/id with a fresh id nobody holds.
func (s *Server) serveID(w http.ResponseWriter) {
	id := newUUID()
	for s.reg.Taken(id) {
		id = newUUID()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(id))
}

// clientSource is what the per-source limits count r's client as (max_peers_per_ip,
// ice_requests_per_minute, the queues and outboxes): its address, or an IPv6
// address's /64, which one host may send from any address of.
func clientSource(r *http.Request) netip.Addr { return sourceKey(clientIP(r)) }

func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
