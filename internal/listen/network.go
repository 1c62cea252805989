// Package listen holds what every listener of relay agrees on about addresses.
package listen

import (
	"net"
	"net/netip"
)

// Network picks base+"4" ("udp4", "tcp4") for an IPv4 literal, so that 0.0.0.0 means
// IPv4 only as written, base+"6" for an IPv6 literal, and the dual-stack base for an
// empty host.
func Network(base, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return base
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			return base + "4"
		}
		return base + "6"
	}
	return base
}
