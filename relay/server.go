package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/relayproject/relay/auth"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/internal/listen"
	"github.com/relayproject/relay/internal/rawudp"
	"github.com/relayproject/relay/metrics"
)

// Options assembles a Server from parts made elsewhere.
type Options struct {
	Config  *config.Config
	Auth    *auth.Authenticator
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Listeners are listeners made elsewhere for some `[turn] tcp` and `tls` addresses
	// (keyed as the configuration writes them): a port shared with signaling
	// (internal/portmux), whose connections arrive with their TLS handshake done.
	Listeners map[string]net.Listener
	// GetCertificate, when set, serves every TURN TLS listener instead of turn.tls_cert
	// (certificates by ACME); reloads then leave certificates to it.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// settings is what a request is checked against; swapped whole, so a reload never shows
// a request half of the old and half of the new configuration.
type settings struct {
	alternate        netip.AddrPort // ALTERNATE-SERVER while draining; zero: none
	realm            string
	software         string
	auth             *auth.Authenticator
	policy           *PeerPolicy
	userAllocations  int
	totalAllocations int
	limits           config.Limits
	maxLifetime      time.Duration
	strictChannels   bool

	keys *keyCache // keys verified under these credentials (a reload starts afresh)

	unauth *hashedBuckets // replies to unauthenticated requests, per source IP
	failIP *hashedBuckets // wrong passwords, per source IP
	// Wrong passwords per static user: the only users whose password can be guessed
	// (a REST password is an HMAC). A fixed set, so an exact map of plain token buckets.
	failUser map[string]*rate.Limiter
}

// Server is relay's STUN/TURN server: pion/turn behind relay's own sockets and gate.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	premade  map[string]net.Listener                              // Options.Listeners
	getCert  func(*tls.ClientHelloInfo) (*tls.Certificate, error) // Options.GetCertificate
	metrics  *metrics.Metrics
	settings atomic.Pointer[settings]
	draining atomic.Bool
	allocs   *allocations
	relay    *relayPorts
	nonces   *nonceBook // the nonces pion handed out (nonces.go)

	relayBind, relayAdvertise netip.Addr
	relaySource               string      // how relayBind was chosen, for the startup log
	relay6                    *relayPorts // IPv6 relayed addresses (relay_ip6); nil: none, 440

	mu       sync.Mutex
	pion     *turn.Server
	udp      []*packetConn
	streams  []*streamListener
	tlsCert  atomic.Pointer[tls.Certificate]
	udpLoops sync.WaitGroup
	addrs    map[string][]net.Addr // transport -> bound listener addresses
	closed   bool

	requests [len(responseMethods)][4]prometheus.Counter // pre-resolved relay_turn_requests_total
	counters *counters                                   // the data path's (counters.go)

	ctl       Control       // operator control (control.go); nil: none
	stopRates chan struct{} // ends the rate sampler (control.go) when there is a Control
	ratesDone sync.WaitGroup
}

// udpReadBufSize fits any datagram worth reading: pion drops STUN of pionReadBufSize
// bytes or more (pioncontract.go) and ChannelData is never larger on a sane path; a
// bigger datagram is cut and then dropped.
const udpReadBufSize = 2048

// New checks the options and works out the relay address; Start opens the sockets.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Auth == nil || o.Metrics == nil {
		return nil, errors.New("relay: Options needs Config, Auth and Metrics")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	cfg := o.Config
	s := &Server{cfg: cfg, log: o.Logger, metrics: o.Metrics, allocs: newAllocations(o.Metrics, o.Logger), nonces: newNonceBook(), addrs: map[string][]net.Addr{},
		premade: o.Listeners, getCert: o.GetCertificate}

	switch {
	case cfg.TURN.RelayIP.IsValid():
		s.relayBind, s.relaySource = cfg.TURN.RelayIP, "turn.relay_ip"
	default:
		ip, err := DetectRelayIP()
		if err != nil {
			return nil, err
		}
		s.relayBind, s.relaySource = ip, "first non-loopback interface (set turn.relay_ip to choose)"
	}
	s.relayAdvertise = s.relayBind
	if cfg.TURN.PublicIP.IsValid() {
		s.relayAdvertise = cfg.TURN.PublicIP
	}
	// Every label value exists from the start, so dashboards and alerts see zeros.
	for _, r := range []string{string(auth.ReasonMalformed), string(auth.ReasonExpired), string(auth.ReasonTooFarFuture),
		string(auth.ReasonUnknownUser), string(auth.ReasonBadPassword), reasonWrongRealm, ReasonRevoked} {
		o.Metrics.AuthFailures.WithLabelValues(r)
	}
	s.counters = newCounters(o.Metrics)
	pollers := newRelayPollers()
	s.relay = newRelayPorts(s, s.relayBind, s.relayAdvertise, cfg.TURN.RelayPorts.Min, cfg.TURN.RelayPorts.Max, pollers)
	if err := s.relay.Validate(); err != nil {
		return nil, err
	}
	if ip6 := cfg.TURN.RelayIP6; ip6.IsValid() {
		adv := ip6
		if cfg.TURN.PublicIP6.IsValid() {
			adv = cfg.TURN.PublicIP6
		}
		s.relay6 = newRelayPorts(s, ip6, adv, cfg.TURN.RelayPorts.Min, cfg.TURN.RelayPorts.Max, pollers)
	}
	s.allocs.ports, s.allocs.ports6 = s.relay, s.relay6
	for i, m := range responseMethods {
		for j, c := range responseClasses {
			s.requests[i][j] = o.Metrics.Requests.WithLabelValues(m.name, c)
		}
	}
	o.Metrics.RelayPorts.Set(float64(cfg.TURN.RelayPorts.Size()))
	o.Metrics.AllocationsLimit.Set(float64(cfg.Limits.TotalAllocations))
	s.settings.Store(s.newSettings(cfg, o.Auth, cfg.Realm))
	return s, nil
}

// newSettings derives what requests are checked against from a configuration. realm
// is the one the server started with: pion challenges with it, so it cannot change.
func (s *Server) newSettings(cfg *config.Config, a *auth.Authenticator, realm string) *settings {
	return &settings{
		alternate: cfg.TURN.AlternateServer,
		realm:     realm,
		software:  cfg.Software,
		auth:      a,
		policy: NewPeerPolicy(PeerPolicyConfig{
			DenyDefault: cfg.Peers.DenyDefault,
			Deny:        cfg.Peers.DenyPrefixes,
			Allow:       cfg.Peers.AllowPrefixes,
			Self:        s.selfAddrs(),
			SelfPorts:   [2]uint16{s.cfg.TURN.RelayPorts.Min, s.cfg.TURN.RelayPorts.Max},
		}),
		userAllocations:  cfg.Limits.UserAllocations,
		totalAllocations: cfg.Limits.TotalAllocations,
		limits:           cfg.Limits,
		maxLifetime:      cfg.TURN.MaxLifetime,
		strictChannels:   cfg.TURN.StrictChannelNumbers,
		keys:             &keyCache{},
		unauth:           newHashedBuckets(float64(cfg.Limits.UnauthPerIP), 2*float64(cfg.Limits.UnauthPerIP)),
		failIP:           newHashedBuckets(float64(cfg.Limits.AuthFailuresPerIP)/60, float64(cfg.Limits.AuthFailuresPerIP)),
		failUser:         staticUserLimits(cfg),
	}
}

// selfAddrs are the server's own relay addresses, bound and advertised, of both families.
func (s *Server) selfAddrs() []netip.Addr {
	self := []netip.Addr{s.relayBind, s.relayAdvertise}
	if s.relay6 != nil {
		self = append(self, s.relay6.bind, s.relay6.advertise)
	}
	return self
}

// staticUserLimits gives each static user a budget of auth_failures_per_user wrong
// passwords per minute.
func staticUserLimits(cfg *config.Config) map[string]*rate.Limiter {
	m := make(map[string]*rate.Limiter, len(cfg.Auth.Users))
	for name := range cfg.Auth.Users {
		n := cfg.Limits.AuthFailuresPerUser
		m[name] = rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n)
	}
	return m
}

// Reload applies a new configuration to the running server: credentials (secrets and
// static users, through a), the TLS certificate, the peer policy, quotas, SOFTWARE and
// the alternate server. Open allocations and connections are untouched. It returns the
// changed keys that only a restart applies (listeners, relay addresses, realm); an error
// (an unreadable certificate) leaves the running configuration as it was.
func (s *Server) Reload(cfg *config.Config, a *auth.Authenticator) (needRestart []string, err error) {
	if s.ownCertificate() && cfg.TURN.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TURN.TLSCert, cfg.TURN.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("turn.tls_cert %q / turn.tls_key %q: %w", cfg.TURN.TLSCert, cfg.TURN.TLSKey, err)
		}
		s.tlsCert.Store(&cert)
	}
	old := s.cfg
	for _, c := range []struct {
		key     string
		changed bool
	}{
		{"realm", cfg.Realm != old.Realm},
		{"turn.udp", !slices.Equal(cfg.TURN.UDP, old.TURN.UDP)},
		{"turn.tcp", !slices.Equal(cfg.TURN.TCP, old.TURN.TCP)},
		{"turn.tls", !slices.Equal(cfg.TURN.TLS, old.TURN.TLS)},
		{"turn.relay_ip", cfg.TURN.RelayIP != old.TURN.RelayIP},
		{"turn.public_ip", cfg.TURN.PublicIP != old.TURN.PublicIP},
		{"turn.relay_ip6", cfg.TURN.RelayIP6 != old.TURN.RelayIP6},
		{"turn.public_ip6", cfg.TURN.PublicIP6 != old.TURN.PublicIP6},
		{"turn.relay_ports", cfg.TURN.RelayPorts != old.TURN.RelayPorts},
		{"turn.udp_sockets", cfg.TURN.UDPSockets != old.TURN.UDPSockets},
	} {
		if c.changed {
			needRestart = append(needRestart, c.key)
		}
	}
	s.settings.Store(s.newSettings(cfg, a, old.Realm))
	s.metrics.AllocationsLimit.Set(float64(cfg.Limits.TotalAllocations))
	return needRestart, nil
}

// Drain stops new allocations (they get 300 with the alternate server, or 508); open
// ones keep relaying until they end or Close.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.metrics.Draining.Set(1)
}

// AllocationCount is the number of open allocations.
func (s *Server) AllocationCount() int { return s.allocs.count() }

// DetectRelayIP returns the first IPv4 address of an up, non-loopback interface.
func DetectRelayIP() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("relay: listing interfaces to choose a relay address: %w (set turn.relay_ip)", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Is4() && !pfx.Addr().IsLinkLocalUnicast() {
				return pfx.Addr(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("relay: no non-loopback IPv4 interface address to relay on: set turn.relay_ip (e.g. \"127.0.0.1\" for a laptop-only test)")
}

// RelayAddr is the address clients are told to send to (XOR-RELAYED-ADDRESS).
func (s *Server) RelayAddr() netip.Addr { return s.relayAdvertise }

// Addrs returns the bound addresses of the listeners of one transport ("udp", "tcp",
// "tls"), in configuration order; useful when the configuration asked for port 0.
func (s *Server) Addrs(transport string) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs[transport]...)
}

// Start opens every listener and starts serving. On error nothing stays open.
func (s *Server) Start() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pcs []turn.PacketConnConfig
	var lcs []turn.ListenerConfig
	defer func() {
		if err != nil {
			for _, pc := range pcs {
				_ = pc.PacketConn.Close()
			}
			for _, lc := range lcs {
				_ = lc.Listener.Close()
			}
			s.udp, s.streams, s.addrs = nil, nil, map[string][]net.Addr{}
		}
	}()
	perm := func(_ net.Addr, peer net.IP) bool {
		// The gate already refused denied peers with 403; this is pion's own second check.
		ip, ok := netip.AddrFromSlice(peer)
		return ok && s.settings.Load().policy.CheckIP(ip) == DenyNone
	}

	// Files first: a bad certificate should stop relay before any socket opens.
	if s.ownCertificate() {
		if err := s.loadCertificate(); err != nil {
			return err
		}
	}
	sockets := s.cfg.TURN.UDPSockets
	if sockets == 0 {
		sockets = runtime.NumCPU()
	}
	for _, addr := range s.cfg.TURN.UDP {
		conns, err := rawudp.ListenShards(listen.Network("udp", addr), addr, sockets, listenerSocketBuffer)
		if err != nil {
			return fmt.Errorf("turn.udp %q: %w", addr, err)
		}
		for _, u := range conns {
			batch, err := rawudp.NewReader(u, batchSize, udpReadBufSize)
			if err != nil {
				return fmt.Errorf("turn.udp %q: %w", addr, err)
			}
			rc, err := u.SyscallConn()
			if err != nil {
				return fmt.Errorf("turn.udp %q: %w", addr, err)
			}
			pc := &packetConn{UDPConn: u, rc: rc, family: rawudp.FamilyOf(u), s: s, ctr: s.counters, batch: batch,
				gate: newGate(s, metrics.TransportUDP, addrPortOf(u.LocalAddr()), false)}
			s.udpLoops.Add(1)
			pc.done = s.udpLoops.Done
			s.udp = append(s.udp, pc)
			pcs = append(pcs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: pc.gate.gen, PermissionHandler: perm})
		}
		s.addrs[metrics.TransportUDP] = append(s.addrs[metrics.TransportUDP], conns[0].LocalAddr())
		s.log.Info("listening", "transport", "udp", "addr", conns[0].LocalAddr().String(), "sockets", len(conns))
	}

	var tlsConfig *tls.Config
	if len(s.cfg.TURN.TLS) > 0 {
		tlsConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return s.tlsCert.Load(), nil
			},
		}
		if s.getCert != nil {
			tlsConfig.GetCertificate = s.getCert
			// TLS-ALPN-01 (RFC 8737) on a TURN listener of port 443: the ACME certificate
			// source answers the validation's handshake; the connection then ends.
			tlsConfig.NextProtos = []string{acmeALPN}
		}
	}
	for _, l := range []struct {
		transport string
		key       string
		addrs     []string
		tls       *tls.Config
	}{
		{metrics.TransportTCP, "turn.tcp", s.cfg.TURN.TCP, nil},
		{metrics.TransportTLS, "turn.tls", s.cfg.TURN.TLS, tlsConfig},
	} {
		for _, addr := range l.addrs {
			ln, tlsConfig := s.premade[addr], l.tls
			if ln != nil {
				tlsConfig = nil // shared with signaling: the port's router made the handshake
			} else if ln, err = net.Listen(listen.Network("tcp", addr), addr); err != nil {
				return fmt.Errorf("%s %q: %w", l.key, addr, err)
			}
			sl := &streamListener{Listener: ln, s: s, transport: l.transport, tlsConfig: tlsConfig, conns: map[*streamConn]struct{}{}, gen: newFamilyGen(s)}
			s.streams = append(s.streams, sl)
			lcs = append(lcs, turn.ListenerConfig{Listener: sl, RelayAddressGenerator: sl.gen, PermissionHandler: perm})
			s.addrs[l.transport] = append(s.addrs[l.transport], ln.Addr())
			s.log.Info("listening", "transport", l.transport, "addr", ln.Addr().String())
		}
	}
	if len(pcs) == 0 && len(lcs) == 0 {
		return errors.New("turn: no listeners configured: set turn.udp, turn.tcp or turn.tls")
	}

	pion, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     pionLogs{l: s.log},
		Realm:             s.cfg.Realm,
		AuthHandler: func(username, realm string, _ net.Addr) ([]byte, bool) {
			return s.settings.Load().keys.get(username, realm)
		},
		EventHandler: s.allocs.eventHandler(func(client net.Addr) string {
			if _, ok := client.(*net.TCPAddr); ok {
				return metrics.TransportTCP
			}
			return metrics.TransportUDP
		}),
	})
	if err != nil {
		return fmt.Errorf("turn: starting pion/turn: %w", err)
	}
	s.pion = pion
	if s.ctl != nil {
		s.stopRates = make(chan struct{})
		s.ratesDone.Add(1)
		go func() {
			defer s.ratesDone.Done()
			s.rates(s.stopRates)
		}()
	}
	s.log.Info("relay address", "bind", s.relayBind.String(), "advertise", s.relayAdvertise.String(),
		"ports", s.cfg.TURN.RelayPorts.String(), "chosen_by", s.relaySource)
	if s.relay6 != nil {
		s.log.Info("relay address", "family", "ipv6", "bind", s.relay6.bind.String(), "advertise", s.relay6.advertise.String(),
			"ports", s.cfg.TURN.RelayPorts.String(), "chosen_by", "turn.relay_ip6")
	}
	return nil
}

// ownCertificate reports whether the TURN TLS listeners present turn.tls_cert: some
// listener is TURN's own (not shared with signaling, whose certificate a shared port
// presents) and no GetCertificate (ACME) serves them.
func (s *Server) ownCertificate() bool {
	if s.getCert != nil {
		return false
	}
	for _, addr := range s.cfg.TURN.TLS {
		if s.premade[addr] == nil {
			return true
		}
	}
	return false
}

// acmeALPN is the ALPN protocol of an ACME TLS-ALPN-01 validation (RFC 8737).
const acmeALPN = "acme-tls/1"

func (s *Server) loadCertificate() error {
	if s.cfg.TURN.TLSCert == "" || s.cfg.TURN.TLSKey == "" {
		return errors.New("turn.tls is set but turn.tls_cert or turn.tls_key is empty: give both PEM files")
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.TURN.TLSCert, s.cfg.TURN.TLSKey)
	if err != nil {
		return fmt.Errorf("turn.tls_cert %q / turn.tls_key %q: %w", s.cfg.TURN.TLSCert, s.cfg.TURN.TLSKey, err)
	}
	s.tlsCert.Store(&cert)
	return nil
}

// Close stops the listeners, ends every client connection and allocation, and waits
// (briefly) for the read loops to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed || s.pion == nil {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	pion, streams := s.pion, s.streams
	s.mu.Unlock()
	if s.stopRates != nil {
		close(s.stopRates)
		s.ratesDone.Wait()
	}

	s.allocs.markAll(endShutdown)
	err := pion.Close()
	for _, l := range streams {
		l.closeAll()
	}
	s.udpLoops.Wait()
	// pion closes each allocation's relay socket as its read loop ends, and reports the
	// allocation deleted from the relay socket's read loop after that: wait for both, so
	// that a restart in the same process finds the ports free and every allocation is
	// logged before the process exits.
	deadline := time.Now().Add(5 * time.Second)
	for (s.openRelays() > 0 || !s.allocs.settled()) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.openRelays(); n > 0 {
		s.log.Warn("relay sockets still open after close", "count", n)
	}
	s.allocs.endAll() // any pion did not report (it stops closing allocations at the first error)
	s.relay.pollers.Stop()
	return err
}

// openRelays counts the relay sockets open, of both families.
func (s *Server) openRelays() int {
	n := s.relay.openCount()
	if s.relay6 != nil {
		n += s.relay6.openCount()
	}
	return n
}

// countOutgoing counts what pion sends to a client: peer data as it passes, responses by
// method and class, and the Allocate failures only pion sees (it runs out of relay
// ports, or the request is bad).
func (s *Server) countOutgoing(p []byte) {
	if n, ok := relayedPayload(p); ok {
		s.counters.toClient.add(n)
		return
	}
	s.countResponse(p)
	s.nonces.observe(p)
	switch code, ok := allocateErrorCode(p); {
	case !ok, code == 401, code == 438:
		// Not an Allocate error, or the normal challenge and nonce renewal.
	case code == 508:
		s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocCapacity).Inc()
		s.metrics.QuotaRejections.WithLabelValues(metrics.QuotaPorts).Inc()
	default:
		s.metrics.AllocationsTotal.WithLabelValues(metrics.AllocError).Inc()
	}
}

// countResponse counts a STUN response by method and class (relay_turn_requests_total).
func (s *Server) countResponse(p []byte) {
	if m, c, ok := responseClass(p); ok {
		s.requests[m][c].Inc()
	}
}

// listenerSocketBuffer is the kernel buffer asked for on each UDP listener socket: every
// client of the socket shares it, so bursts must not overflow it while a core is busy.
const listenerSocketBuffer = 8 << 20
