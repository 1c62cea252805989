package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// checker collects validation errors for one Config.
type checker struct {
	loc  locator
	errs Errors
}

func (ch *checker) errorf(key string, value any, format string, args ...any) {
	ch.errs = append(ch.errs, ch.loc.errorf(key, value, format, args...))
}

// inFile reports whether key is written in the file, so that an error
// about two keys can point at the one the user actually set.
func (ch *checker) inFile(key string) bool { return ch.loc.lines[key] > 0 }

// validate checks c, positioning errors with loc, and fills the parsed
// Peers fields. It checks typed values only; values that could not even be
// converted were reported while decoding and left at their defaults.
func (c *Config) validate(loc locator) Errors {
	ch := &checker{loc: loc}
	// STUN limits REALM and SOFTWARE to fewer than 128 characters (RFC 8489).
	if c.Realm == "" || !utf8.ValidString(c.Realm) || utf8.RuneCountInString(c.Realm) >= 128 {
		ch.errorf("realm", c.Realm, "expected a non-empty UTF-8 string of fewer than 128 characters, e.g. \"relay.example.org\"")
	}
	if !utf8.ValidString(c.Software) || utf8.RuneCountInString(c.Software) >= 128 {
		ch.errorf("software", c.Software, "expected a UTF-8 string of fewer than 128 characters, or \"\" for none")
	}
	c.TURN.validate(ch)
	c.TURN.validateDrain(ch)
	c.Auth.validate(ch)
	c.Limits.validate(ch)
	c.Peers.validate(ch)
	c.Metrics.validate(ch)
	c.Log.validate(ch)
	c.Signal.validate(ch, &c.TURN, c.TLS.ACME())
	c.Cluster.validate(ch)
	c.Admin.validate(ch)
	c.TLS.validate(ch, &c.TURN, &c.Signal)
	c.validateTURNFiles(ch)
	return ch.errs
}

// SharedPort reports whether the TURN listener addr ([turn] tcp or tls, as written)
// is also signal.listen: one port serving both (internal/portmux).
func (c *Config) SharedPort(addr string) bool {
	if c.Signal.Listen == "" {
		return false
	}
	a, err1 := checkListen(addr)
	b, err2 := checkListen(c.Signal.Listen)
	return err1 == nil && err2 == nil && a != "" && a == b
}

// validateTURNFiles checks that TURN's TLS listeners have a certificate: turn.tls_cert
// for those of their own; one shared with signaling presents signaling's, and ACME
// serves all.
func (c *Config) validateTURNFiles(ch *checker) {
	t := &c.TURN
	own, shared := 0, 0
	for _, a := range t.TLS {
		if c.SharedPort(a) {
			shared++
		} else {
			own++
		}
	}
	if own > 0 && !c.TLS.ACME() && (t.TLSCert == "" || t.TLSKey == "") {
		missing := "turn.tls_cert and turn.tls_key are"
		if t.TLSCert != "" {
			missing = "turn.tls_key is"
		} else if t.TLSKey != "" {
			missing = "turn.tls_cert is"
		}
		ch.errorf("turn.tls", t.TLS, "TLS listeners need turn.tls_cert and turn.tls_key, but %s empty: set both to PEM file paths, or [tls] acme_domains for certificates by ACME, or set tls = []", missing)
	}
	if shared > 0 && t.TLSCert != "" && c.Signal.TLSCert != "" && (t.TLSCert != c.Signal.TLSCert || t.TLSKey != c.Signal.TLSKey) {
		ch.errorf("turn.tls_cert", t.TLSCert, "turn.tls shares signal.listen = %q, and one port presents one certificate (a client that sends no SNI, like Firefox on turns:, cannot ask for another): set turn.tls_cert and tls_key to signal's files, or leave them empty there", c.Signal.Listen)
	}
}

func (t *TURN) validate(ch *checker) {
	lists := []struct {
		key   string
		addrs []string
	}{{"turn.udp", t.UDP}, {"turn.tcp", t.TCP}, {"turn.tls", t.TLS}}
	for _, l := range lists {
		seen := map[string]bool{}
		for _, addr := range l.addrs {
			norm, err := checkListen(addr)
			if err != nil {
				ch.errorf(l.key, addr, "%s", err)
				continue
			}
			if norm != "" && seen[norm] {
				ch.errorf(l.key, addr, "listed twice: remove the duplicate")
			}
			seen[norm] = true
		}
	}
	// tcp and tls listeners share the TCP port space.
	tcp := map[string]bool{}
	for _, addr := range t.TCP {
		if norm, err := checkListen(addr); err == nil {
			tcp[norm] = true
		}
	}
	for _, addr := range t.TLS {
		if norm, err := checkListen(addr); err == nil && norm != "" && tcp[norm] {
			ch.errorf("turn.tls", addr, "also listed in turn.tcp: TCP and TLS listeners cannot share a port; use another port, e.g. 5349")
		}
	}
	if len(t.UDP)+len(t.TCP)+len(t.TLS) == 0 {
		ch.errorf("turn", nil, "no listeners: set at least one address in turn.udp, turn.tcp or turn.tls, e.g. udp = [\":3478\"]")
	}
	if a := t.RelayIP; a.IsValid() && (a.IsUnspecified() || a.IsMulticast()) {
		ch.errorf("turn.relay_ip", a.String(), "expected a unicast IP address of this host, e.g. \"192.0.2.10\", or \"\" to choose automatically; a wildcard or multicast address cannot be advertised to clients")
	}
	if a := t.PublicIP; a.IsValid() && (a.IsUnspecified() || a.IsMulticast()) {
		ch.errorf("turn.public_ip", a.String(), "expected the unicast public IP address clients reach this host at, e.g. \"203.0.113.7\", or \"\" when not behind NAT")
	}
	if r, p := t.RelayIP, t.PublicIP; r.IsValid() && p.IsValid() && r.Unmap().Is4() != p.Unmap().Is4() {
		key, value := "turn.public_ip", p.String()
		if !ch.inFile(key) && ch.inFile("turn.relay_ip") {
			key, value = "turn.relay_ip", r.String()
		}
		ch.errorf(key, value, "turn.public_ip = %q and turn.relay_ip = %q are different IP versions: public_ip is the NAT mapping of relay_ip, so both must be IPv4 or both IPv6", p.String(), r.String())
	}
	t.validateIP6(ch)
	if !t.RelayPorts.valid() {
		ch.errorf("turn.relay_ports", t.RelayPorts.String(), "expected %s", portRangeForm)
	}
	if t.UDPSockets < 0 || t.UDPSockets > 1024 {
		ch.errorf("turn.udp_sockets", t.UDPSockets, "expected an integer from 0 to 1024 (0 = one socket per CPU)")
	}
}

// validateIP6 checks relay_ip6 and public_ip6: IPv6 unicast addresses that can be
// advertised (not link-local: a scope cannot be told to a client), public_ip6 only with
// relay_ip6.
func (t *TURN) validateIP6(ch *checker) {
	for _, f := range []struct {
		key string
		a   netip.Addr
	}{{"turn.relay_ip6", t.RelayIP6}, {"turn.public_ip6", t.PublicIP6}} {
		if a := f.a; a.IsValid() && (!a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.Zone() != "") {
			ch.errorf(f.key, a.String(), "expected a global or unique-local IPv6 address of this host, e.g. \"2001:db8::10\" (not IPv4, not IPv4-mapped, not link-local or multicast), or \"\" for no IPv6 relayed addresses")
		}
	}
	if t.PublicIP6.IsValid() && !t.RelayIP6.IsValid() {
		ch.errorf("turn.public_ip6", t.PublicIP6.String(), "is set but turn.relay_ip6 is not: relay sockets for IPv6 allocations bind relay_ip6 (this host's own IPv6 address) and advertise public_ip6; set relay_ip6 too")
	}
}

// checkListen validates a listen address and returns it in a normal form
// for duplicate detection, or "" for port 0: any number of listeners may
// ask for a free port.
func checkListen(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := "not a valid address"
		switch {
		case !strings.Contains(addr, ":"):
			reason = "missing port"
		case strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "["):
			reason = "IPv6 addresses need brackets, e.g. \"[::1]:3478\""
		}
		return "", fmt.Errorf("%s; expected %s", reason, listenWant)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535; expected %s", port, listenWant)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return "", fmt.Errorf("host %q is not an IP address (write 127.0.0.1 rather than localhost); expected %s", host, listenWant)
		}
		host = a.String()
	}
	if p == 0 {
		return "", nil
	}
	return net.JoinHostPort(host, strconv.FormatUint(p, 10)), nil
}

func (t *TURN) validateDrain(ch *checker) {
	if t.DrainTimeout < 0 {
		ch.errorf("turn.drain_timeout", t.DrainTimeout.String(), `expected a duration >= 0 such as "30s"`)
	}
	if t.MaxLifetime < time.Minute || t.MaxLifetime > time.Hour {
		ch.errorf("turn.max_lifetime", t.MaxLifetime.String(), `expected a duration from "1m" to "1h" (RFC 8656 recommends at most an hour)`)
	}
}

func (a *Auth) validate(ch *checker) {
	for i, s := range a.Secrets {
		if s == "" {
			ch.errorf("auth.secrets", s, "entry %d is empty: expected a long random string, e.g. the output of `openssl rand -hex 32`", i+1)
		}
	}
	if a.MaxTTL <= 0 {
		ch.errorf("auth.max_ttl", a.MaxTTL.String(), "expected a positive duration such as \"24h\", \"90m\" or \"3600s\"")
	}
	for _, name := range slices.Sorted(maps.Keys(a.Users)) {
		key := keyString([]string{"auth", "users", name})
		switch {
		case name == "":
			ch.errorf(key, a.Users[name], "empty user name: give the user a name, e.g. alice = \"...\"")
		case strings.Contains(name, ":"):
			ch.errorf(key, a.Users[name], "user name %q contains ':', which separates expiry time and name in TURN REST usernames: rename the user without ':'", name)
		}
		if a.Users[name] == "" {
			ch.errorf(key, a.Users[name], "empty password for user %q: expected a long random password", name)
		}
	}
}

func (l *Limits) validate(ch *checker) {
	if l.UserAllocations < 1 {
		ch.errorf("limits.user_allocations", l.UserAllocations, "expected an integer >= 1")
	}
	if l.TotalAllocations < 1 {
		ch.errorf("limits.total_allocations", l.TotalAllocations, "expected an integer >= 1")
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"limits.permissions_per_allocation", l.PermissionsPerAllocation},
		{"limits.channels_per_allocation", l.ChannelsPerAllocation},
		{"limits.unauth_per_ip", l.UnauthPerIP},
		{"limits.auth_failures_per_ip", l.AuthFailuresPerIP},
		{"limits.auth_failures_per_user", l.AuthFailuresPerUser},
	} {
		if v.n < 1 {
			ch.errorf(v.key, v.n, "expected an integer >= 1")
		}
	}
	if l.MaxBPS < 0 {
		ch.errorf("limits.max_bps", l.MaxBPS, "expected bits per second >= 0 (0 = no cap)")
	}
	if l.UserMaxBPS < 0 {
		ch.errorf("limits.user_max_bps", l.UserMaxBPS, "expected bits per second >= 0 (0 = no cap)")
	}
	if l.UserBytesPerDay < 0 {
		ch.errorf("limits.user_bytes_per_day", l.UserBytesPerDay, "expected bytes >= 0 (0 = no budget)")
	}
	if l.UserAllocations >= 1 && l.TotalAllocations >= 1 && l.UserAllocations > l.TotalAllocations {
		key, value := "limits.user_allocations", l.UserAllocations
		if !ch.inFile(key) && ch.inFile("limits.total_allocations") {
			key, value = "limits.total_allocations", l.TotalAllocations
		}
		ch.errorf(key, value, "limits.user_allocations = %d is more than limits.total_allocations = %d: expected user_allocations <= total_allocations",
			l.UserAllocations, l.TotalAllocations)
	}
}

const peerWant = `a CIDR such as "10.0.0.0/8" or "2001:db8::/32", or a single IP address`

func (p *Peers) validate(ch *checker) {
	p.DenyDefault = false
	p.DenyPrefixes = make([]netip.Prefix, 0, len(p.Deny))
	p.AllowPrefixes = make([]netip.Prefix, 0, len(p.Allow))
	for _, s := range p.Deny {
		if s == "default" {
			p.DenyDefault = true
			continue
		}
		pfx, ok := parsePeer(s)
		if !ok {
			ch.errorf("peers.deny", s, "expected %s, or \"default\" for the built-in list of private and special-purpose ranges", peerWant)
			continue
		}
		p.DenyPrefixes = append(p.DenyPrefixes, pfx)
	}
	for _, s := range p.Allow {
		if s == "default" {
			ch.errorf("peers.allow", s, "\"default\" is only meaningful in peers.deny; expected %s", peerWant)
			continue
		}
		pfx, ok := parsePeer(s)
		if !ok {
			ch.errorf("peers.allow", s, "expected %s", peerWant)
			continue
		}
		p.AllowPrefixes = append(p.AllowPrefixes, pfx)
	}
}

// parsePeer accepts a CIDR or a single address (as a /32 or /128). Host
// bits in a CIDR are cleared: "10.1.2.3/8" plainly means 10.0.0.0/8.
func parsePeer(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

func (m *Metrics) validate(ch *checker) {
	if m.Listen == "" {
		return
	}
	if _, err := checkListen(m.Listen); err != nil {
		ch.errorf("metrics.listen", m.Listen, "%s, or \"\" to disable metrics", err)
	}
}

func (l *Log) validate(ch *checker) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		ch.errorf("log.level", l.Level, "expected one of \"debug\", \"info\", \"warn\", \"error\"")
	}
	switch l.Format {
	case "text", "json":
	default:
		ch.errorf("log.format", l.Format, "expected \"text\" or \"json\"")
	}
}

// Warnings returns advice about a valid Config that the operator should
// see but that does not stop the server. Credentials are never included.
func (c *Config) Warnings() []string {
	var w []string
	for i, s := range c.Auth.Secrets {
		if s != "" && len(s) < 32 {
			w = append(w, fmt.Sprintf("auth.secrets: entry %d is only %d characters long; use a long random string (at least 32 characters, e.g. `openssl rand -hex 32`)", i+1, len(s)))
		}
	}
	if !c.Peers.DenyDefault {
		w = append(w, `peers.deny does not include "default": clients can relay to loopback, private and other special-purpose addresses`)
	}
	if len(c.Peers.Allow) > 0 {
		w = append(w, fmt.Sprintf("peers.allow = %s exempts these networks from peers.deny; this is meant for local tests", formatValue(c.Peers.Allow)))
	}
	if (c.TURN.TLSCert != "" || c.TURN.TLSKey != "") && len(c.TURN.TLS) == 0 {
		w = append(w, "turn.tls_cert or turn.tls_key is set but turn.tls is empty: no TLS listener will be started")
	}
	if n := c.TURN.RelayPorts.Size(); n < c.Limits.TotalAllocations {
		w = append(w, fmt.Sprintf("turn.relay_ports = %q holds %d ports, fewer than limits.total_allocations = %d; allocations will fail once the ports run out", c.TURN.RelayPorts.String(), n, c.Limits.TotalAllocations))
	}
	if s := c.Signal; s.Listen != "" && s.MaxQueueBytesPerIP > s.MaxQueueBytes/4 {
		w = append(w, fmt.Sprintf("signal.max_queue_bytes_per_ip = %d is more than a quarter of signal.max_queue_bytes = %d: a few source addresses can fill the budget for absent peers, and then everyone's messages to peers not yet connected are dropped", s.MaxQueueBytesPerIP, s.MaxQueueBytes))
	}
	if c.Cluster.Enabled() && c.Signal.Listen == "" {
		w = append(w, "cluster.redis is set but signal.listen is empty: the fleet shares signaling only, so this node does not join it")
	}
	if c.Cluster.Enabled() && c.Signal.PublicHost == "" && !c.TURN.PublicIP.IsValid() && !c.TURN.RelayIP.IsValid() {
		w = append(w, "cluster.redis is set but neither signal.public_host nor turn.public_ip nor turn.relay_ip is: the TURN URLs this node announces to the fleet name the address relay detects, which other nodes' clients may not reach; set signal.public_host to this node's own name")
	}
	w = append(w, c.Admin.warnings()...)
	if l := c.Metrics.Listen; l != "" {
		if host, _, err := net.SplitHostPort(l); err == nil {
			if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
				w = append(w, fmt.Sprintf("metrics.listen = %q is reachable from other hosts and the metrics endpoint has no authentication", l))
			}
		}
	}
	return w
}
