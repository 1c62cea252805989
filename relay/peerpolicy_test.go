package relay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// Encodings of an IPv4 address inside IPv6, built from the rules rather than
// written out by hand.

func mapped(v4 netip.Addr) netip.Addr { return netip.AddrFrom16(v4.As16()) }

func compat(v4 netip.Addr) netip.Addr {
	var b [16]byte
	a := v4.As4()
	copy(b[12:], a[:])
	return netip.AddrFrom16(b)
}

func nat64(v4 netip.Addr) netip.Addr {
	b := [16]byte{0x00, 0x64, 0xff, 0x9b}
	a := v4.As4()
	copy(b[12:], a[:])
	return netip.AddrFrom16(b)
}

func sixToFour(v4 netip.Addr) netip.Addr {
	b := [16]byte{0x20, 0x02}
	a := v4.As4()
	copy(b[2:6], a[:])
	b[15] = 1 // some host in the site's /48
	return netip.AddrFrom16(b)
}

// teredo uses the server 65.54.227.120 and mapped port 40000 of the RFC 4380
// example; the client IPv4 is stored XOR 0xffffffff in the last 32 bits.
func teredo(v4 netip.Addr) netip.Addr {
	b := [16]byte{0x20, 0x01, 0x00, 0x00, 65, 54, 227, 120, 0x80, 0x00}
	binary.BigEndian.PutUint16(b[10:12], ^uint16(40000))
	binary.BigEndian.PutUint32(b[12:], ^binary.BigEndian.Uint32(v4.AsSlice()))
	return netip.AddrFrom16(b)
}

func TestTeredoEncoding(t *testing.T) {
	want := netip.MustParseAddr("2001:0:4136:e378:8000:63bf:80ff:fffe")
	if got := teredo(netip.MustParseAddr("127.0.0.1")); got != want {
		t.Fatalf("teredo(127.0.0.1) = %v, want %v", got, want)
	}
	if c, ok := CanonicalPeer(want); !ok || c != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("CanonicalPeer(%v) = %v, %v", want, c, ok)
	}
}

func TestCanonicalPeer(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1", "127.0.0.1", false},
		{"8.8.8.8", "8.8.8.8", false},
		{"::ffff:127.0.0.1", "127.0.0.1", true},
		{"::ffff:0.0.0.0", "0.0.0.0", true},
		{"::127.0.0.1", "127.0.0.1", true},
		{"::0.0.0.2", "0.0.0.2", true},
		{"::", "::", false},
		{"::1", "::1", false},
		{"::1:0:0:1", "::1:0:0:1", false}, // not in ::/96
		{"64:ff9b::7f00:1", "127.0.0.1", true},
		{"64:ff9b::808:808", "8.8.8.8", true},
		{"64:ff9b:1::7f00:1", "64:ff9b:1::7f00:1", false}, // local-use NAT64 prefix has no fixed layout
		{"2002:7f00:1::1", "127.0.0.1", true},
		{"2002:a9fe:a9fe:1234:5678::", "169.254.169.254", true},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", true},
		{"2001:1::1", "2001:1::1", false}, // 2001:1::/32 is not Teredo
		{"2001:db8::1", "2001:db8::1", false},
		{"2606:4700::1111", "2606:4700::1111", false},
		{"fe80::1%eth0", "fe80::1%eth0", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := CanonicalPeer(netip.MustParseAddr(tc.in))
			if ok != tc.ok || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("CanonicalPeer(%s) = %v, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
			}
			if ok && !got.Is4() {
				t.Fatalf("canonical %v is not 4-byte IPv4", got)
			}
		})
	}
	if got, ok := CanonicalPeer(netip.Addr{}); ok || got.IsValid() {
		t.Fatalf("CanonicalPeer(zero) = %v, %v", got, ok)
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := NewPeerPolicy(PeerPolicyConfig{DenyDefault: true})
	tests := []struct {
		ip   string
		want DenyReason
	}{
		// loopback in every encoding
		{"127.0.0.1", DenyLoopback},
		{"127.255.255.254", DenyLoopback},
		{"::1", DenyLoopback},
		{"::ffff:127.0.0.1", DenyLoopback},
		{"::127.0.0.1", DenyLoopback},
		{"64:ff9b::7f00:1", DenyLoopback},
		{"2002:7f00:1::1", DenyLoopback},
		{teredo(netip.MustParseAddr("127.0.0.1")).String(), DenyLoopback},
		// unspecified
		{"0.0.0.0", DenyUnspecified},
		{"0.1.2.3", DenyUnspecified},
		{"::", DenyUnspecified},
		{"::ffff:0.0.0.0", DenyUnspecified},
		{"::ffff:0.1.2.3", DenyUnspecified},
		// private
		{"10.0.0.1", DenyPrivate},
		{"10.255.255.255", DenyPrivate},
		{"172.16.0.1", DenyPrivate},
		{"172.31.255.255", DenyPrivate},
		{"172.32.0.1", DenyNone},
		{"172.15.255.255", DenyNone},
		{"192.168.1.1", DenyPrivate},
		{"100.64.0.1", DenyPrivate},
		{"100.127.255.255", DenyPrivate},
		{"100.128.0.1", DenyNone},
		{"100.63.255.255", DenyNone},
		{"fd00::1", DenyPrivate},
		{"fc00::1", DenyPrivate},
		{"::ffff:10.1.2.3", DenyPrivate},
		// link-local and cloud metadata
		{"169.254.169.254", DenyLinkLocal},
		{"::ffff:169.254.169.254", DenyLinkLocal},
		{"64:ff9b::a9fe:a9fe", DenyLinkLocal},
		{"2002:a9fe:a9fe::1", DenyLinkLocal},
		{"fe80::1", DenyLinkLocal},
		{"febf::1", DenyLinkLocal},
		{"fec0::1", DenyNone}, // deprecated site-local, not in the list
		// multicast and broadcast
		{"ff02::1", DenyMulticast},
		{"224.0.0.1", DenyMulticast},
		{"239.255.255.255", DenyMulticast},
		{"255.255.255.255", DenyMulticast},
		{"::ffff:255.255.255.255", DenyMulticast},
		// reserved
		{"240.0.0.1", DenyReserved},
		{"192.0.0.8", DenyReserved},
		{"192.0.2.1", DenyReserved},
		{"198.51.100.1", DenyReserved},
		{"203.0.113.1", DenyReserved},
		{"198.18.0.1", DenyReserved},
		{"198.19.255.255", DenyReserved},
		{"198.20.0.1", DenyNone},
		{"192.31.196.1", DenyReserved},
		{"192.52.193.1", DenyReserved},
		{"192.88.99.1", DenyReserved},
		{"192.175.48.1", DenyReserved},
		{"2001:db8::1", DenyReserved},
		{"2001::1", DenyReserved},
		{"2001:1ff::1", DenyReserved},
		{"64:ff9b::808:808", DenyReserved}, // public IPv4 inside NAT64: the original form is still reserved
		{"64:ff9b:1::1", DenyReserved},
		{"100::1", DenyReserved},
		{"2002:808:808::1", DenyReserved},
		{teredo(netip.MustParseAddr("8.8.8.8")).String(), DenyReserved},
		{"2620:4f:8000::1", DenyReserved},
		{"3fff::1", DenyReserved},
		{"5f00::1", DenyReserved},
		// public
		{"8.8.8.8", DenyNone},
		{"1.1.1.1", DenyNone},
		{"2606:4700::1111", DenyNone},
		{"::ffff:8.8.8.8", DenyNone},
		{"::8.8.8.8", DenyNone}, // IPv4-compatible: ::/96 other than :: is not itself listed
		{"2001:200::1", DenyNone},
		// invalid
		{"fe80::1%eth0", DenyInvalid},
		{"2606:4700::1111%1", DenyInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			if got := p.CheckIP(ip); got != tc.want {
				t.Errorf("CheckIP(%s) = %q, want %q", tc.ip, got, tc.want)
			}
			for _, port := range []uint16{0, 53, 3478, 65535} {
				if got := p.CheckAddr(netip.AddrPortFrom(ip, port)); got != tc.want {
					t.Errorf("CheckAddr(%s:%d) = %q, want %q", tc.ip, port, got, tc.want)
				}
			}
		})
	}
	if got := p.CheckIP(netip.Addr{}); got != DenyInvalid {
		t.Errorf("CheckIP(zero) = %q", got)
	}
	if got := p.CheckAddr(netip.AddrPort{}); got != DenyInvalid {
		t.Errorf("CheckAddr(zero) = %q", got)
	}
}

// Every denied IPv4 address must be denied, with the same reason, in every
// IPv6 encoding that embeds it.
func TestDefaultPolicyEveryEncoding(t *testing.T) {
	p := NewPeerPolicy(PeerPolicyConfig{DenyDefault: true})
	for _, d := range defaultDeny {
		pf := netip.MustParsePrefix(d.prefix)
		if !pf.Addr().Is4() {
			continue
		}
		first := pf.Addr()
		last := lastAddr(pf)
		for _, v4 := range []netip.Addr{first, first.Next(), last} {
			if !v4.IsValid() || !pf.Contains(v4) {
				continue // first.Next() of 255.255.255.255/32
			}
			want := p.CheckIP(v4)
			if want == DenyNone {
				t.Fatalf("%v (in %v) allowed", v4, pf)
			}
			encs := map[string]netip.Addr{
				"mapped": mapped(v4), "nat64": nat64(v4), "6to4": sixToFour(v4), "teredo": teredo(v4),
			}
			if u := binary.BigEndian.Uint32(v4.AsSlice()); u > 1 {
				encs["compat"] = compat(v4)
			}
			for name, enc := range encs {
				if got := p.CheckIP(enc); got != want {
					t.Errorf("%s %v (of %v) = %q, want %q", name, enc, v4, got, want)
				}
				if got := p.CheckAddr(netip.AddrPortFrom(enc, 443)); got != want {
					t.Errorf("CheckAddr %s %v (of %v) = %q, want %q", name, enc, v4, got, want)
				}
			}
		}
	}
}

func lastAddr(pf netip.Prefix) netip.Addr {
	a := pf.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (^uint32(0) >> pf.Bits())
	return from32(v)
}

func TestOperatorLists(t *testing.T) {
	mp := netip.MustParsePrefix
	type check struct {
		ip   string
		want DenyReason
	}
	tests := []struct {
		name   string
		cfg    PeerPolicyConfig
		checks []check
	}{
		{
			name: "operator deny",
			cfg:  PeerPolicyConfig{DenyDefault: true, Deny: []netip.Prefix{mp("8.8.0.0/16"), mp("2606:4700::/32")}},
			checks: []check{
				{"8.8.8.8", DenyOperator},
				{"::ffff:8.8.8.8", DenyOperator},
				{"8.9.0.1", DenyNone},
				{"2606:4700::1111", DenyOperator},
				{"2606:4701::1", DenyNone},
				{"127.0.0.1", DenyLoopback}, // default reason wins over operator
				{"64:ff9b::808:808", DenyReserved},
			},
		},
		{
			name: "operator deny overlapping default keeps default reason",
			cfg:  PeerPolicyConfig{DenyDefault: true, Deny: []netip.Prefix{mp("10.0.0.0/8")}},
			checks: []check{
				{"10.0.0.1", DenyPrivate},
			},
		},
		{
			name: "operator deny written mapped",
			cfg:  PeerPolicyConfig{Deny: []netip.Prefix{mp("::ffff:8.8.0.0/112")}},
			checks: []check{
				{"8.8.4.4", DenyOperator},
				{"::ffff:8.8.4.4", DenyOperator},
				{"64:ff9b::808:404", DenyOperator},
				{"8.9.4.4", DenyNone},
			},
		},
		{
			name: "operator allow loopback",
			cfg:  PeerPolicyConfig{DenyDefault: true, Allow: []netip.Prefix{mp("127.0.0.0/8")}},
			checks: []check{
				{"127.0.0.1", DenyNone},
				{"::ffff:127.0.0.1", DenyNone},
				{"127.9.9.9", DenyNone},
				{"10.0.0.1", DenyPrivate},
				{"::1", DenyLoopback},
				{"8.8.8.8", DenyNone},
			},
		},
		{
			name: "allow wins over operator deny",
			cfg: PeerPolicyConfig{
				DenyDefault: true,
				Deny:        []netip.Prefix{mp("8.8.0.0/16"), mp("fd00::/8")},
				Allow:       []netip.Prefix{mp("8.8.8.0/24"), mp("fd00:1::/32")},
			},
			checks: []check{
				{"8.8.8.8", DenyNone},
				{"8.8.4.4", DenyOperator},
				{"fd00:1::5", DenyNone},
				{"fd00:2::5", DenyPrivate},
			},
		},
		{
			name: "no default list",
			cfg:  PeerPolicyConfig{Deny: []netip.Prefix{mp("203.0.113.0/24")}},
			checks: []check{
				{"127.0.0.1", DenyNone},
				{"::1", DenyNone},
				{"10.0.0.1", DenyNone},
				{"169.254.169.254", DenyNone},
				{"0.0.0.0", DenyNone},
				{"::", DenyNone},
				{"ff02::1", DenyNone},
				{"64:ff9b::7f00:1", DenyNone},
				{"203.0.113.7", DenyOperator},
				{"::ffff:203.0.113.7", DenyOperator},
				{"2002:cb00:7107::1", DenyOperator},
				{"fe80::1%eth0", DenyInvalid},
			},
		},
		{
			name: "empty config allows all valid addresses",
			cfg:  PeerPolicyConfig{},
			checks: []check{
				{"127.0.0.1", DenyNone},
				{"::", DenyNone},
			},
		},
		{
			name: "catch-all deny with narrow allow",
			cfg:  PeerPolicyConfig{Deny: []netip.Prefix{mp("0.0.0.0/0"), mp("::/0")}, Allow: []netip.Prefix{mp("2606:4700::/32")}},
			checks: []check{
				{"8.8.8.8", DenyOperator},
				{"::ffff:8.8.8.8", DenyOperator},
				{"2606:4700::1111", DenyNone},
				{"2a00::1", DenyOperator},
			},
		},
		{
			name: "invalid prefixes are ignored",
			cfg:  PeerPolicyConfig{Deny: []netip.Prefix{{}}, Allow: []netip.Prefix{{}}, DenyDefault: true},
			checks: []check{
				{"8.8.8.8", DenyNone},
				{"127.0.0.1", DenyLoopback},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPeerPolicy(tc.cfg)
			for _, c := range tc.checks {
				ip := netip.MustParseAddr(c.ip)
				if got := p.CheckIP(ip); got != c.want {
					t.Errorf("CheckIP(%s) = %q, want %q", c.ip, got, c.want)
				}
				if got := p.CheckAddr(netip.AddrPortFrom(ip, 9)); got != c.want {
					t.Errorf("CheckAddr(%s:9) = %q, want %q", c.ip, got, c.want)
				}
			}
		})
	}
}

func TestSelfAddresses(t *testing.T) {
	mp := netip.MustParsePrefix
	base := PeerPolicyConfig{
		DenyDefault: true,
		Self:        []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("2001:db8::5")},
		SelfPorts:   [2]uint16{50000, 50010},
	}
	withAllow := base
	withAllow.Allow = []netip.Prefix{mp("127.0.0.0/8")}
	mappedSelf := base
	mappedSelf.Self = []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}
	withDeny := base
	publicSelf := base
	publicSelf.DenyDefault = false
	publicSelf.Self = []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	withDeny.Deny = []netip.Prefix{mp("127.0.0.0/8")}
	unspecSelf := base
	unspecSelf.Self = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified(), netip.MustParseAddr("::ffff:0.0.0.0"), {}}

	tests := []struct {
		name    string
		cfg     PeerPolicyConfig
		ip      string
		port    uint16
		wantIP  DenyReason
		wantMsg DenyReason
	}{
		{"self in range", base, "127.0.0.1", 50005, DenyNone, DenyNone},
		{"self range min", base, "127.0.0.1", 50000, DenyNone, DenyNone},
		{"self range max", base, "127.0.0.1", 50010, DenyNone, DenyNone},
		{"self below range", base, "127.0.0.1", 49999, DenyNone, DenyLoopback},
		{"self above range", base, "127.0.0.1", 50011, DenyNone, DenyLoopback},
		{"self ssh", base, "127.0.0.1", 22, DenyNone, DenyLoopback},
		{"self mapped", base, "::ffff:127.0.0.1", 50005, DenyNone, DenyNone},
		{"self mapped ssh", base, "::ffff:127.0.0.1", 22, DenyNone, DenyLoopback},
		{"self nat64 ssh", base, "64:ff9b::7f00:1", 22, DenyNone, DenyLoopback},
		{"other loopback", base, "127.0.0.2", 50005, DenyLoopback, DenyLoopback},
		{"self v6 in range", base, "2001:db8::5", 50001, DenyNone, DenyNone},
		{"self v6 out of range", base, "2001:db8::5", 80, DenyNone, DenyReserved},
		{"other documentation v6", base, "2001:db8::6", 50001, DenyReserved, DenyReserved},
		{"self with allow, any port", withAllow, "127.0.0.1", 22, DenyNone, DenyNone},
		{"self configured mapped", mappedSelf, "127.0.0.1", 22, DenyNone, DenyLoopback},
		{"self configured mapped in range", mappedSelf, "127.0.0.1", 50003, DenyNone, DenyNone},
		{"self beats operator deny", withDeny, "127.0.0.1", 50003, DenyNone, DenyNone},
		{"self with operator deny, bad port", withDeny, "127.0.0.1", 53, DenyNone, DenyLoopback},
		{"public self out of range", publicSelf, "198.51.100.7", 22, DenyNone, DenyRelayPort},
		{"public self in range", publicSelf, "198.51.100.7", 50004, DenyNone, DenyNone},
		{"self zoned", base, "fe80::1%eth0", 50003, DenyInvalid, DenyInvalid},
		{"unspecified self is ignored v4", unspecSelf, "0.0.0.0", 50003, DenyUnspecified, DenyUnspecified},
		{"unspecified self is ignored v6", unspecSelf, "::", 50003, DenyUnspecified, DenyUnspecified},
		{"unspecified self is ignored mapped", unspecSelf, "::ffff:0.0.0.0", 50003, DenyUnspecified, DenyUnspecified},
		{"unspecified self other", unspecSelf, "127.0.0.1", 50003, DenyLoopback, DenyLoopback},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPeerPolicy(tc.cfg)
			ip := netip.MustParseAddr(tc.ip)
			if got := p.CheckIP(ip); got != tc.wantIP {
				t.Errorf("CheckIP(%s) = %q, want %q", tc.ip, got, tc.wantIP)
			}
			if got := p.CheckAddr(netip.AddrPortFrom(ip, tc.port)); got != tc.wantMsg {
				t.Errorf("CheckAddr(%s:%d) = %q, want %q", tc.ip, tc.port, got, tc.wantMsg)
			}
		})
	}
}

func TestDenyReasonValues(t *testing.T) {
	want := map[DenyReason]string{
		DenyNone: "", DenyLoopback: "loopback", DenyPrivate: "private", DenyLinkLocal: "link_local",
		DenyUnspecified: "unspecified", DenyMulticast: "multicast", DenyReserved: "reserved",
		DenyOperator: "operator", DenyRelayPort: "relay_port", DenyInvalid: "invalid",
	}
	for r, s := range want {
		if string(r) != s {
			t.Errorf("%q != %q", r, s)
		}
	}
	for _, d := range defaultDeny {
		if _, ok := want[d.reason]; !ok || d.reason == DenyNone || d.reason == DenyOperator {
			t.Errorf("default entry %s has reason %q", d.prefix, d.reason)
		}
	}
}

func TestCheckAddrAllocs(t *testing.T) {
	p := benchPolicy()
	for _, ap := range benchAddrs {
		if n := testing.AllocsPerRun(100, func() { p.CheckAddr(ap) }); n != 0 {
			t.Errorf("CheckAddr(%v): %v allocs", ap, n)
		}
	}
}

var benchAddrs = []netip.AddrPort{
	netip.MustParseAddrPort("8.8.8.8:443"),
	netip.MustParseAddrPort("127.0.0.1:22"),
	netip.MustParseAddrPort("[::ffff:169.254.169.254]:80"),
	netip.MustParseAddrPort("[2606:4700::1111]:443"),
	netip.MustParseAddrPort("[2002:7f00:1::1]:80"),
	netip.MustParseAddrPort("[2001:0:4136:e378:8000:63bf:80ff:fffe]:80"),
	netip.MustParseAddrPort("203.0.113.10:50005"),
	netip.MustParseAddrPort("[fe80::1%eth0]:80"),
}

func benchPolicy() *PeerPolicy {
	return NewPeerPolicy(PeerPolicyConfig{
		DenyDefault: true,
		Deny:        []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2a00::/16")},
		Allow:       []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Self:        []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")},
		SelfPorts:   [2]uint16{50000, 50100},
	})
}

var sinkReason DenyReason

func BenchmarkCheckAddr(b *testing.B) {
	p := benchPolicy()
	for _, ap := range benchAddrs {
		b.Run(ap.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkReason = p.CheckAddr(ap)
			}
		})
	}
}

func FuzzCanonicalPeer(f *testing.F) {
	for _, s := range []string{
		"::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1",
		"2001:0:4136:e378:8000:63bf:80ff:fffe", "::", "::1", "8.8.8.8", "fe80::1",
	} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	p := NewPeerPolicy(PeerPolicyConfig{DenyDefault: true})
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, _ := netip.AddrFromSlice(b) // zero Addr for lengths other than 4 and 16
		c, ok := CanonicalPeer(ip)
		if ok {
			if !c.Is4() {
				t.Fatalf("CanonicalPeer(%v) = %v: not 4-byte IPv4", ip, c)
			}
			if !ip.Is6() {
				t.Fatalf("CanonicalPeer(%v) unwrapped a non-IPv6 address", ip)
			}
		} else if c != ip {
			t.Fatalf("CanonicalPeer(%v) = %v, false: input changed", ip, c)
		}
		r := p.CheckIP(ip)
		if r2 := p.CheckAddr(netip.AddrPortFrom(ip, 1234)); r2 != r {
			t.Fatalf("CheckIP(%v) = %q but CheckAddr = %q", ip, r, r2)
		}
		// An embedding is never less restricted than the address it embeds.
		if ok && p.CheckIP(c) != DenyNone && r == DenyNone {
			t.Fatalf("%v allowed although its canonical %v is denied (%q)", ip, c, p.CheckIP(c))
		}
		_ = fmt.Sprint(r)
	})
}
