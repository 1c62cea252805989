package relay

import (
	"context"
	"net"
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

// TURNURIs lists the turn:/turns: URIs of the configured listeners (the first of each
// transport), as RFC 7065 writes them, for host.
func TURNURIs(cfg *config.Config, host string) []string {
	var uris []string
	if p, ok := firstPort(cfg.TURN.UDP); ok {
		uris = append(uris, "turn:"+net.JoinHostPort(host, p)+"?transport=udp")
	}
	if p, ok := firstPort(cfg.TURN.TCP); ok {
		uris = append(uris, "turn:"+net.JoinHostPort(host, p)+"?transport=tcp")
	}
	if p, ok := firstPort(cfg.TURN.TLS); ok {
		uris = append(uris, "turns:"+net.JoinHostPort(host, p)+"?transport=tcp")
	}
	return uris
}

// STUNURI is the stun: URI of the first UDP (else TCP) listener, or "" if none.
func STUNURI(cfg *config.Config, host string) string {
	if p, ok := firstPort(cfg.TURN.UDP); ok {
		return "stun:" + net.JoinHostPort(host, p)
	}
	if p, ok := firstPort(cfg.TURN.TCP); ok {
		return "stun:" + net.JoinHostPort(host, p)
	}
	return ""
}

func firstPort(addrs []string) (string, bool) {
	if len(addrs) == 0 {
		return "", false
	}
	_, port, err := net.SplitHostPort(addrs[0])
	if err != nil {
		return "", false
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", false
	}
	return port, true
}
