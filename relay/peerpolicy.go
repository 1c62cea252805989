package relay

import (
	"encoding/binary"
	"net/netip"
)

// PeerPolicy decides which peer addresses an allocation may relay to.
// Immutable; safe for concurrent use.
//
// Every address is checked in its original form and, when it embeds an IPv4
// address (see CanonicalPeer), in its canonical IPv4 form too, so that
// ::ffff:127.0.0.1, ::127.0.0.1, 64:ff9b::7f00:1, 2002:7f00:1::/48 and the
// Teredo encoding of 127.0.0.1 are all treated as loopback.
type PeerPolicy struct {
	allow4, deny4, default4 []rule4
	allow6, deny6, default6 []rule6
	self                    []netip.Addr
	selfMin, selfMax        uint16
}

// PeerPolicyConfig configures a PeerPolicy.
type PeerPolicyConfig struct {
	DenyDefault bool           // the built-in list from turn-security.md
	Deny        []netip.Prefix // operator additions
	Allow       []netip.Prefix // operator exceptions; allow wins over any deny
	Self        []netip.Addr   // the server's own relay addresses (relay_ip, public_ip): always allowed as peer IPs,
	SelfPorts   [2]uint16      // but on those addresses only ports within [min,max] (the relay port range)
}

// DenyReason says why a peer address is refused. Values are metric label
// values: a small fixed set.
type DenyReason string

// Deny reasons (exactly these).
const (
	DenyNone        DenyReason = ""
	DenyLoopback    DenyReason = "loopback"
	DenyPrivate     DenyReason = "private"     // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
	DenyLinkLocal   DenyReason = "link_local"  // 169.254/16 (incl. the 169.254.169.254 metadata address), fe80::/10
	DenyUnspecified DenyReason = "unspecified" // 0.0.0.0/8, ::/128
	DenyMulticast   DenyReason = "multicast"   // 224/4, ff00::/8, broadcast
	DenyReserved    DenyReason = "reserved"    // everything else in the default list
	DenyOperator    DenyReason = "operator"    // matched an operator deny prefix
	DenyRelayPort   DenyReason = "relay_port"  // own relay address but port outside the relay range
	DenyInvalid     DenyReason = "invalid"     // invalid/zero netip.Addr, or zone-scoped addresses
)

// defaultDeny is the built-in deny list (turn-security.md, "Default peer deny
// list"). Order matters where prefixes overlap: the first match gives the
// reason (255.255.255.255 is broadcast before 240/4 is reserved).
var defaultDeny = []struct {
	prefix string
	reason DenyReason
}{
	// IPv4
	{"0.0.0.0/8", DenyUnspecified},
	{"10.0.0.0/8", DenyPrivate},
	{"100.64.0.0/10", DenyPrivate},
	{"127.0.0.0/8", DenyLoopback},
	{"169.254.0.0/16", DenyLinkLocal},
	{"172.16.0.0/12", DenyPrivate},
	{"192.0.0.0/24", DenyReserved},
	{"192.0.2.0/24", DenyReserved},
	{"192.31.196.0/24", DenyReserved},
	{"192.52.193.0/24", DenyReserved},
	{"192.88.99.0/24", DenyReserved},
	{"192.168.0.0/16", DenyPrivate},
	{"192.175.48.0/24", DenyReserved},
	{"198.18.0.0/15", DenyReserved},
	{"198.51.100.0/24", DenyReserved},
	{"203.0.113.0/24", DenyReserved},
	{"224.0.0.0/4", DenyMulticast},
	{"255.255.255.255/32", DenyMulticast},
	{"240.0.0.0/4", DenyReserved},
	// IPv6
	{"::/128", DenyUnspecified},
	{"::1/128", DenyLoopback},
	{"64:ff9b::/96", DenyReserved},
	{"64:ff9b:1::/48", DenyReserved},
	{"100::/64", DenyReserved},
	{"2001::/23", DenyReserved},
	{"2001:db8::/32", DenyReserved},
	{"2002::/16", DenyReserved},
	{"2620:4f:8000::/48", DenyReserved},
	{"3fff::/20", DenyReserved},
	{"5f00::/16", DenyReserved},
	{"fc00::/7", DenyPrivate},
	{"fe80::/10", DenyLinkLocal},
	{"ff00::/8", DenyMulticast},
}

// rule4 and rule6 are prefixes pre-split into integer value/mask pairs so
// that matching is a few ANDs and compares, with no allocation.
type rule4 struct {
	addr, mask uint32
	reason     DenyReason
}

type rule6 struct {
	hi, lo, mhi, mlo uint64
	reason           DenyReason
}

// NewPeerPolicy builds a PeerPolicy. Invalid prefixes and addresses are
// ignored (validate configuration before calling), and so are unspecified
// Self addresses (0.0.0.0, ::), which a relay bound to all interfaces may
// pass. Prefixes written in the
// IPv4-mapped form (::ffff:a.b.c.d/n with n >= 96) are treated as the IPv4
// prefix they map, so they also match the other embeddings of those
// addresses. Zones on Self addresses are dropped.
func NewPeerPolicy(c PeerPolicyConfig) *PeerPolicy {
	p := &PeerPolicy{selfMin: c.SelfPorts[0], selfMax: c.SelfPorts[1]}
	if c.DenyDefault {
		for _, d := range defaultDeny {
			p.default4, p.default6 = addRule(p.default4, p.default6, netip.MustParsePrefix(d.prefix), d.reason)
		}
	}
	for _, pf := range c.Deny {
		p.deny4, p.deny6 = addRule(p.deny4, p.deny6, pf, DenyOperator)
	}
	for _, pf := range c.Allow {
		// The reason is unused for allow rules; any non-empty value marks a match.
		p.allow4, p.allow6 = addRule(p.allow4, p.allow6, pf, DenyOperator)
	}
	for _, a := range c.Self {
		a = a.WithZone("").Unmap()
		// An unspecified Self (a relay bound to 0.0.0.0 or ::) is not an
		// address a peer can be: as a destination it means "this host", the
		// CVE-2020-26262 bypass. Never whitelist it.
		if !a.IsValid() || a.IsUnspecified() {
			continue
		}
		p.self = append(p.self, a)
	}
	return p
}

func addRule(r4 []rule4, r6 []rule6, pf netip.Prefix, reason DenyReason) ([]rule4, []rule6) {
	if !pf.IsValid() {
		return r4, r6
	}
	addr, bits := pf.Addr(), pf.Bits()
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	if addr.Is4() {
		mask := ^uint32(0) << (32 - bits) // bits == 0: shift by 32 gives 0
		return append(r4, rule4{addr: u32(addr) & mask, mask: mask, reason: reason}), r6
	}
	var mhi, mlo uint64
	switch {
	case bits <= 64:
		mhi = ^uint64(0) << (64 - bits)
	default:
		mhi, mlo = ^uint64(0), ^uint64(0)<<(128-bits)
	}
	hi, lo := u128(addr)
	return r4, append(r6, rule6{hi: hi & mhi, lo: lo & mlo, mhi: mhi, mlo: mlo, reason: reason})
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u128(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func match4(rules []rule4, v uint32) DenyReason {
	for i := range rules {
		if v&rules[i].mask == rules[i].addr {
			return rules[i].reason
		}
	}
	return DenyNone
}

func match6(rules []rule6, hi, lo uint64) DenyReason {
	for i := range rules {
		r := &rules[i]
		if hi&r.mhi == r.hi && lo&r.mlo == r.lo {
			return r.reason
		}
	}
	return DenyNone
}

// CanonicalPeer unwraps IPv4 embedded in IPv6: ::ffff:a.b.c.d (mapped),
// ::a.b.c.d (IPv4-compatible, ::/96 excluding :: and ::1), 64:ff9b::/96
// (NAT64), 2002:AABB:CCDD::/48 (6to4), 2001:0000::/32 (Teredo: client IPv4 =
// last 32 bits XOR 0xffffffff). Returns the embedded IPv4 (4-byte form) and
// true, or the input and false.
func CanonicalPeer(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return ip, false
	}
	if ip.Is4In6() {
		return ip.Unmap(), true
	}
	b := ip.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	mid := binary.BigEndian.Uint32(b[8:12])
	v4 := binary.BigEndian.Uint32(b[12:])
	switch {
	case hi == 0 && mid == 0: // ::/96, IPv4-compatible
		if v4 <= 1 { // :: and ::1 are themselves, not 0.0.0.0 / 0.0.0.1
			return ip, false
		}
		return from32(v4), true
	case hi == 0x0064_ff9b_0000_0000 && mid == 0: // 64:ff9b::/96, NAT64 well-known prefix
		return from32(v4), true
	case hi>>48 == 0x2002: // 2002::/16, 6to4: 2002:AABB:CCDD::/48
		return from32(uint32(hi >> 16)), true
	case hi>>32 == 0x2001_0000: // 2001:0000::/32, Teredo
		return from32(^v4), true
	}
	return ip, false
}

func from32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// CheckIP is used for CreatePermission / ChannelBind (permissions are per
// IP). It returns DenyNone when the peer is allowed.
func (p *PeerPolicy) CheckIP(ip netip.Addr) DenyReason {
	return p.check(ip, 0, false)
}

// CheckAddr is used per datagram sent to a peer: CheckIP plus, for Self
// addresses, the relay port range rule. It does not allocate.
func (p *PeerPolicy) CheckAddr(ap netip.AddrPort) DenyReason {
	return p.check(ap.Addr(), ap.Port(), true)
}

func (p *PeerPolicy) check(ip netip.Addr, port uint16, withPort bool) DenyReason {
	if !ip.IsValid() || ip.Zone() != "" {
		return DenyInvalid
	}
	canon, embedded := CanonicalPeer(ip)

	// Integer forms of the original (v4 or v6) and of the canonical IPv4.
	var (
		orig4, can4 uint32
		hi, lo      uint64
	)
	is4 := ip.Is4()
	if is4 {
		orig4 = u32(ip)
	} else {
		hi, lo = u128(ip)
	}
	if embedded {
		can4 = u32(canon)
	}
	matches := func(r4 []rule4, r6 []rule6) DenyReason {
		// The canonical form first: for 2002:7f00:1:: the useful reason is
		// loopback, not the reserved 6to4 prefix around it.
		if embedded {
			if r := match4(r4, can4); r != DenyNone {
				return r
			}
		}
		if is4 {
			return match4(r4, orig4)
		}
		return match6(r6, hi, lo)
	}

	allowed := (len(p.allow4) > 0 || len(p.allow6) > 0) && matches(p.allow4, p.allow6) != DenyNone

	self := false
	unmapped := ip.Unmap()
	for _, s := range p.self {
		if s == unmapped || (embedded && s == canon) {
			self = true
			break
		}
	}
	if self && (!withPort || allowed || (port >= p.selfMin && port <= p.selfMax)) {
		return DenyNone
	}
	if allowed {
		return DenyNone
	}
	if r := matches(p.default4, p.default6); r != DenyNone {
		return r
	}
	if r := matches(p.deny4, p.deny6); r != DenyNone {
		return r
	}
	// Our own address outside the relay ports: say so when nothing else refuses it (a
	// public relay address), and the address's own reason otherwise (loopback in tests).
	if self {
		return DenyRelayPort
	}
	return DenyNone
}
