package config

import (
	"fmt"
	"net"
	"net/netip"
)

// DefaultAdminListen is [admin] listen's default: loopback only, where no token is needed.
const DefaultAdminListen = "127.0.0.1:9642"

// Admin is the [admin] section: the operator's HTTP API (allocations, events,
// revocations, refusals, usage) and where its state survives a restart.
type Admin struct {
	// Listen is "host:port" of the admin API; "" disables it. Off loopback it needs Tokens.
	Listen string
	// Tokens are bearer tokens the API accepts ("Authorization: Bearer <token>"). Secrets:
	// never logged or put in an error.
	Tokens []string
	// StateDir is a directory where revocations and today's byte usage survive a restart
	// of a single node; "" keeps them in memory (a fleet keeps them in [cluster] redis).
	StateDir string
}

func defaultAdmin() Admin { return Admin{Listen: DefaultAdminListen, Tokens: []string{}} }

func (a *Admin) decode(t *table) {
	t.str("listen", listenForm+`, e.g. "127.0.0.1:9642", or "" to disable the admin API`, &a.Listen)
	t.strs("tokens", `an array of long random strings, e.g. ["<output of: openssl rand -hex 32>"], or [] on loopback`, &a.Tokens)
	t.str("state_dir", `a directory path, e.g. "/var/lib/relay", or "" to keep revocations and usage in memory`, &a.StateDir)
}

func (a *Admin) validate(ch *checker) {
	for i, tok := range a.Tokens {
		if tok == "" {
			ch.errorf("admin.tokens", "***", "entry %d is empty: expected long random strings (openssl rand -hex 32)", i+1)
		}
	}
	if a.Listen == "" {
		return
	}
	if _, err := checkListen(a.Listen); err != nil {
		ch.errorf("admin.listen", a.Listen, "%s, or \"\" to disable the admin API", err)
		return
	}
	if !loopbackListen(a.Listen) && len(a.Tokens) == 0 {
		ch.errorf("admin.listen", a.Listen, "is not a loopback address and admin.tokens is empty: anyone who reaches it could end allocations and revoke users; "+
			"add a long random token to admin.tokens (openssl rand -hex 32), or listen on \"127.0.0.1:9642\"")
	}
}

// loopbackListen reports whether a listen address (checked) binds loopback only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// adminWarnings is advice about a valid [admin] section.
func (a *Admin) warnings() []string {
	var w []string
	for i, tok := range a.Tokens {
		if tok != "" && len(tok) < 32 {
			w = append(w, fmt.Sprintf("admin.tokens: entry %d is only %d characters long; use a long random string (at least 32 characters, e.g. `openssl rand -hex 32`)", i+1, len(tok)))
		}
	}
	if a.Listen != "" && !loopbackListen(a.Listen) {
		w = append(w, fmt.Sprintf("admin.listen = %q is reachable from other hosts: the admin API's bearer tokens travel in clear over plain HTTP; keep it on a private network or behind a TLS proxy", a.Listen))
	}
	return w
}
