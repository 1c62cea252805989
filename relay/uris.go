package relay

import (
	"context"
	"net"
	"net/netip"
	"strconv"

	"github.com/relayproject/relay/config"
)

var contextBackground = context.Background()

// AdvertisedHost is the host name or address browsers should use for this server:
// public_ip, else relay_ip, else the detected interface address.
func AdvertisedHost(cfg *config.Config) string {
	switch {
	case cfg.TURN.PublicIP.IsValid():
		return cfg.TURN.PublicIP.String()
	case cfg.TURN.RelayIP.IsValid():
		return cfg.TURN.RelayIP.String()
	}
	if ip, err := DetectRelayIP(); err == nil {
		return ip.String()
	}
	return "127.0.0.1"
}

// AdvertisedHost6 is the IPv6 address browsers reach the server on, for the ICE
// endpoint's IPv6 URLs: public_ip6, else relay_ip6; the zero Addr without either.
func AdvertisedHost6(cfg *config.Config) netip.Addr {
	if cfg.TURN.PublicIP6.IsValid() {
		return cfg.TURN.PublicIP6
	}
	return cfg.TURN.RelayIP6
}

// Ports6 are the ports of the first listeners of each transport that take IPv6 clients
// (an empty host, or an IPv6 one), for the IPv6 URLs; 0 where none does.
func (s *Server) Ports6() Ports {
	port := func(t string) int {
		for _, a := range s.Addrs(t) {
			if ap := addrPortOf(a); ap.Addr().Is6() {
				return int(ap.Port())
			}
		}
		return 0
	}
	return Ports{UDP: port("udp"), TCP: port("tcp"), TLS: port("tls")}
}

// Ports are the ports browsers reach the server on, one per client transport; 0 means
// the transport is not served.
type Ports struct{ UDP, TCP, TLS int }

// ConfigPorts takes the first configured listener of each transport.
func ConfigPorts(cfg *config.Config) Ports {
	return Ports{UDP: firstPort(cfg.TURN.UDP), TCP: firstPort(cfg.TURN.TCP), TLS: firstPort(cfg.TURN.TLS)}
}

// Ports are the ports actually bound (they differ from the configuration's when it asks
// for port 0).
func (s *Server) Ports() Ports {
	port := func(t string) int {
		if a := s.Addrs(t); len(a) > 0 {
			return int(addrPortOf(a[0]).Port())
		}
		return 0
	}
	return Ports{UDP: port("udp"), TCP: port("tcp"), TLS: port("tls")}
}

// STUN lists the stun: URI for host (RFC 7064). Browsers use STUN over UDP only.
func (p Ports) STUN(host string) []string {
	if p.UDP == 0 {
		return nil
	}
	return []string{"stun:" + net.JoinHostPort(host, strconv.Itoa(p.UDP))}
}

// TURN lists the turn:/turns: URIs for host (RFC 7065), one per served transport.
func (p Ports) TURN(host string) []string {
	var uris []string
	if p.UDP != 0 {
		uris = append(uris, "turn:"+net.JoinHostPort(host, strconv.Itoa(p.UDP))+"?transport=udp")
	}
	if p.TCP != 0 {
		uris = append(uris, "turn:"+net.JoinHostPort(host, strconv.Itoa(p.TCP))+"?transport=tcp")
	}
	if p.TLS != 0 {
		uris = append(uris, "turns:"+net.JoinHostPort(host, strconv.Itoa(p.TLS))+"?transport=tcp")
	}
	return uris
}

// TURNURIs lists the turn:/turns: URIs of the configured listeners for host.
func TURNURIs(cfg *config.Config, host string) []string { return ConfigPorts(cfg).TURN(host) }

func firstPort(addrs []string) int {
	if len(addrs) == 0 {
		return 0
	}
	_, port, err := net.SplitHostPort(addrs[0])
	if err != nil {
		return 0
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0
	}
	return p
}
