package check

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// serverURL is a parsed stun:, stuns:, turn: or turns: URL (RFC 7064, RFC 7065).
type serverURL struct {
	raw       string
	scheme    string // stun, stuns, turn, turns
	host      string // without brackets
	port      int
	transport string // udp, tcp or tls: what is spoken to the server
}

func (u serverURL) addr() string { return net.JoinHostPort(u.host, strconv.Itoa(u.port)) }

func (u serverURL) isTURN() bool { return u.scheme == "turn" || u.scheme == "turns" }

// parseServerURL parses scheme:host[:port][?transport=udp|tcp].
func parseServerURL(raw string) (serverURL, error) {
	u := serverURL{raw: raw}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return u, fmt.Errorf("%q: not a stun:, turn: or turns: URL", raw)
	}
	u.scheme = strings.ToLower(scheme)
	switch u.scheme {
	case "stun", "turn":
		u.port, u.transport = 3478, "udp"
	case "stuns", "turns":
		u.port, u.transport = 5349, "tls"
	default:
		return u, fmt.Errorf("%q: unsupported scheme %q (want stun:, turn:, turns: or http(s):// of an ICE endpoint)", raw, scheme)
	}
	rest = strings.TrimPrefix(rest, "//")
	hostport, query, _ := strings.Cut(rest, "?")
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return u, fmt.Errorf("%q: bad query: %v", raw, err)
		}
		for k := range q {
			if k != "transport" {
				return u, fmt.Errorf("%q: unknown parameter %q (only transport=udp|tcp)", raw, k)
			}
		}
		if t := q.Get("transport"); t != "" {
			if strings.HasPrefix(u.scheme, "stun") {
				return u, fmt.Errorf("%q: stun: URLs take no transport parameter", raw)
			}
			switch strings.ToLower(t) {
			case "udp":
				if u.scheme == "turns" {
					return u, fmt.Errorf("%q: turns: over udp is DTLS, which relay check does not speak", raw)
				}
			case "tcp":
				if u.scheme == "turn" {
					u.transport = "tcp"
				}
			default:
				return u, fmt.Errorf("%q: transport %q: want udp or tcp", raw, t)
			}
		}
	}
	host, port := hostport, ""
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return u, fmt.Errorf("%q: unterminated [ in host", raw)
		}
		host, port = hostport[1:end], strings.TrimPrefix(hostport[end+1:], ":")
		if port == "" && end+1 < len(hostport) {
			return u, fmt.Errorf("%q: bad port", raw)
		}
	} else if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host, port = hostport[:i], hostport[i+1:]
		if strings.IndexByte(host, ':') >= 0 {
			return u, fmt.Errorf("%q: an IPv6 host must be in brackets", raw)
		}
	}
	if host == "" {
		return u, fmt.Errorf("%q: no host", raw)
	}
	u.host = host
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return u, fmt.Errorf("%q: bad port %q", raw, port)
		}
		u.port = p
	}
	return u, nil
}
