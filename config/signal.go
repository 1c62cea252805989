package config

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Signal is the [signal] section: the PeerJS-compatible signaling endpoint, the ICE
// servers endpoint and the embedded demo and diagnostics pages, on one HTTP listener.
type Signal struct {
	Listen          string        // "host:port"; "" disables signaling and the pages
	Path            string        // prefix of every route; normalised to start and end with "/"
	Key             string        // PeerJS key the WebSocket's key parameter must equal
	PublicHost      string        // host put in ICE server URLs; "" uses the request's Host
	AllowedOrigins  []string      // origins allowed on HTTP routes and the WebSocket; "*" = any
	APITokens       []string      // if set, the ICE endpoint needs "Authorization: Bearer <token>"
	ExpireTimeout   time.Duration // queued messages for an absent peer older than this expire
	AliveTimeout    time.Duration // no frame for this long closes a peer's socket
	ConcurrentLimit int           // registered peers at most
	AllowDiscovery  bool          // enables GET {path}{key}/peers
	CredentialTTL   time.Duration // lifetime of the TURN credentials the ICE endpoint mints
	// BindCredentials: {path}ice mints only for a live peer (?peer=ID&token=T), with the
	// peer's id as user id, and revokes them when the peer leaves (or its socket is gone
	// for CredentialGrace without the same token coming back).
	BindCredentials bool
	CredentialGrace time.Duration
	TLSCert, TLSKey string // PEM files: serve https/wss instead of http/ws

	// Limits beyond the PeerJS reference server.
	MaxMessageBytes      int // largest WebSocket message a peer may send
	MaxQueue             int // messages queued for one absent peer
	MaxQueueBytes        int // bytes queued for absent peers in total
	MaxQueueBytesPerIP   int // bytes queued by one source IP (IPv6: one /64)
	MaxQueueBytesPerPeer int // bytes queued for one absent peer
	MaxPeersPerIP        int // registered peers per source IP
	ICERequestsPerMinute int // ICE endpoint requests per source IP per minute
	MessagesPerSecond    int // messages one connection may send per second (bursts of 4 s allowed)
}

func defaultSignal() Signal {
	return Signal{
		Listen:               ":9001", // both IPv4 and IPv6
		Path:                 "/",
		Key:                  "peerjs",
		AllowedOrigins:       []string{"*"},
		APITokens:            []string{},
		ExpireTimeout:        5 * time.Second,
		AliveTimeout:         60 * time.Second,
		ConcurrentLimit:      5000,
		CredentialTTL:        time.Hour,
		CredentialGrace:      30 * time.Second,
		MaxMessageBytes:      64 << 10,
		MaxQueue:             64,
		MaxQueueBytes:        32 << 20,
		MaxQueueBytesPerIP:   1 << 20,
		MaxQueueBytesPerPeer: 256 << 10,
		MaxPeersPerIP:        100,
		ICERequestsPerMinute: 60,
		MessagesPerSecond:    50,
	}
}

const durationWant = `a positive duration such as "5s", "90m" or "1h"`

func (s *Signal) decode(t *table) {
	t.str("listen", listenForm+`, e.g. ":9001" (IPv4 and IPv6), or "" to disable signaling`, &s.Listen)
	t.str("path", `a URL path prefix, e.g. "/" or "/signal/"`, &s.Path)
	t.str("key", `the PeerJS key, e.g. "peerjs"`, &s.Key)
	t.str("public_host", `the host name browsers use for this server, e.g. "relay.example.org", or "" for the request's Host`, &s.PublicHost)
	t.strs("allowed_origins", `an array of origins such as "https://app.example.org", or ["*"] for any`, &s.AllowedOrigins)
	t.strs("api_tokens", `an array of long random strings, or [] for no token`, &s.APITokens)
	t.duration("expire_timeout", durationWant, &s.ExpireTimeout)
	t.duration("alive_timeout", durationWant, &s.AliveTimeout)
	t.integer("concurrent_limit", "an integer >= 1", &s.ConcurrentLimit)
	t.boolean("allow_discovery", "true or false", &s.AllowDiscovery)
	t.duration("credential_ttl", durationWant, &s.CredentialTTL)
	t.boolean("bind_credentials", "true or false", &s.BindCredentials)
	t.duration("credential_grace", durationWant, &s.CredentialGrace)
	t.str("tls_cert", `the path of a PEM certificate chain file, or "" for plain http/ws`, &s.TLSCert)
	t.str("tls_key", `the path of a PEM private key file, or "" for plain http/ws`, &s.TLSKey)
	t.integer("max_message_bytes", "an integer from 1024 to 1048576", &s.MaxMessageBytes)
	t.integer("max_queue", "an integer >= 0", &s.MaxQueue)
	t.integer("max_queue_bytes", "bytes as an integer >= 0, e.g. 33554432 (32 MiB)", &s.MaxQueueBytes)
	t.integer("max_queue_bytes_per_ip", "bytes as an integer >= 0, e.g. 1048576 (1 MiB)", &s.MaxQueueBytesPerIP)
	t.integer("max_queue_bytes_per_peer", "bytes as an integer >= 0, e.g. 262144 (256 KiB)", &s.MaxQueueBytesPerPeer)
	t.integer("max_peers_per_ip", "an integer >= 1", &s.MaxPeersPerIP)
	t.integer("ice_requests_per_minute", "an integer >= 1", &s.ICERequestsPerMinute)
	t.integer("max_messages_per_second", "an integer >= 1", &s.MessagesPerSecond)
}

func (s *Signal) validate(ch *checker, turn *TURN, acme bool) {
	if s.Listen == "" {
		return
	}
	norm, err := checkListen(s.Listen)
	if err != nil {
		ch.errorf("signal.listen", s.Listen, "%s, or \"\" to disable signaling", err)
	} else if norm != "" {
		// The same address in both is one port serving both (internal/portmux), TLS or
		// plain as signaling is.
		tlsOn := s.TLSCert != "" || acme
		for _, a := range turn.TCP {
			if n, err := checkListen(a); err == nil && n == norm && tlsOn {
				ch.errorf("signal.listen", s.Listen, "also in turn.tcp, a plain TCP listener, but signaling serves https: a shared port is TLS or plain for both; to share it, put the address in turn.tls instead, or use another port, e.g. 9001")
			}
		}
		for _, a := range turn.TLS {
			if n, err := checkListen(a); err == nil && n == norm && !tlsOn {
				ch.errorf("signal.listen", s.Listen, "also in turn.tls, but signaling serves plain http: to share the port, give signal.tls_cert and signal.tls_key (the port presents them to TURN clients too) or [tls] acme_domains; else use another port, e.g. 9001")
			}
		}
		for _, l := range [][]string{turn.TCP, turn.TLS} {
			for _, a := range l {
				if n, err := checkListen(a); err == nil && n != norm && samePort(n, norm) {
					ch.errorf("signal.listen", s.Listen, "and %q in the turn section name the same port with different hosts, which cannot both listen: to share the port write the same address in both", a)
				}
			}
		}
	}
	s.Path = normalisePath(s.Path)
	if strings.ContainsAny(s.Path, "?#% ") || strings.Contains(s.Path, "//") {
		ch.errorf("signal.path", s.Path, `expected a plain URL path such as "/" or "/signal/"`)
	}
	if s.Key == "" || strings.ContainsAny(s.Key, "/?#% ") {
		ch.errorf("signal.key", s.Key, `expected a non-empty key without "/", "?", "#", "%%" or spaces, e.g. "peerjs"`)
	}
	if h := s.PublicHost; h != "" && (strings.ContainsAny(h, "/?#@ ") || strings.Contains(h, "://")) {
		ch.errorf("signal.public_host", h, `expected a bare host name or IP address, e.g. "relay.example.org" (no scheme, no path)`)
	}
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			ch.errorf("signal.allowed_origins", o, `expected "*" or origins like "https://app.example.org" or "http://localhost:8080"`)
		}
	}
	for i, tok := range s.APITokens {
		if tok == "" {
			ch.errorf("signal.api_tokens", "***", "entry %d is empty: expected long random strings", i+1)
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"signal.expire_timeout", s.ExpireTimeout}, {"signal.alive_timeout", s.AliveTimeout}, {"signal.credential_ttl", s.CredentialTTL},
		{"signal.credential_grace", s.CredentialGrace}} {
		if d.v <= 0 {
			ch.errorf(d.key, d.v.String(), "expected %s", durationWant)
		}
	}
	if s.ConcurrentLimit < 1 {
		ch.errorf("signal.concurrent_limit", s.ConcurrentLimit, "expected an integer >= 1")
	}
	if s.MaxMessageBytes < 1024 || s.MaxMessageBytes > 1<<20 {
		ch.errorf("signal.max_message_bytes", s.MaxMessageBytes, "expected an integer from 1024 to 1048576")
	}
	if s.MaxQueue < 0 {
		ch.errorf("signal.max_queue", s.MaxQueue, "expected an integer >= 0")
	}
	s.validateQueueBytes(ch)
	if s.MaxPeersPerIP < 1 {
		ch.errorf("signal.max_peers_per_ip", s.MaxPeersPerIP, "expected an integer >= 1")
	}
	if s.MessagesPerSecond < 1 {
		ch.errorf("signal.max_messages_per_second", s.MessagesPerSecond, "expected an integer >= 1")
	}
	if s.ICERequestsPerMinute < 1 {
		ch.errorf("signal.ice_requests_per_minute", s.ICERequestsPerMinute, "expected an integer >= 1")
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		missing := "signal.tls_key"
		if s.TLSCert == "" {
			missing = "signal.tls_cert"
		}
		ch.errorf(missing, "", "signal.tls_cert and signal.tls_key go together: give both PEM files, or neither for plain http/ws")
	}
}

// validateQueueBytes checks the byte caps on messages held for absent peers. A
// per-source or per-peer cap above the total would be no cap at all; one close to it
// lets a single source take the whole budget, which is allowed but warned about.
func (s *Signal) validateQueueBytes(ch *checker) {
	ok := true
	for _, v := range []struct {
		key string
		n   int
	}{
		{"signal.max_queue_bytes", s.MaxQueueBytes},
		{"signal.max_queue_bytes_per_ip", s.MaxQueueBytesPerIP},
		{"signal.max_queue_bytes_per_peer", s.MaxQueueBytesPerPeer},
	} {
		if v.n < 0 {
			ch.errorf(v.key, v.n, "expected bytes as an integer >= 0 (0 = queue nothing)")
			ok = false
		}
	}
	if !ok {
		return
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"signal.max_queue_bytes_per_ip", s.MaxQueueBytesPerIP},
		{"signal.max_queue_bytes_per_peer", s.MaxQueueBytesPerPeer},
	} {
		if v.n <= s.MaxQueueBytes {
			continue
		}
		key, value := v.key, v.n
		if !ch.inFile(key) && ch.inFile("signal.max_queue_bytes") {
			key, value = "signal.max_queue_bytes", s.MaxQueueBytes
		}
		ch.errorf(key, value, "%s = %d is more than signal.max_queue_bytes = %d, the total: lower it (a fraction of the total, so that one source cannot take the whole budget) or raise max_queue_bytes",
			v.key, v.n, s.MaxQueueBytes)
	}
}

// samePort reports whether two normal listen addresses (checkListen) have the same
// port and one of them is a wildcard host, so that binding both fails.
func samePort(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	wild := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || (err == nil && ip.IsUnspecified())
	}
	return pa == pb && (wild(ha) || wild(hb)) && ha != hb
}

// normalisePath makes p start and end with "/", as the PeerJS server does.
func normalisePath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}
