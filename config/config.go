// Package config loads relay's TOML configuration: it owns the key names,
// the built-in defaults, decoding and every check that can be made from the
// file alone.
//
// It deliberately has no side effects beyond reading the one config file: it
// never opens sockets and never reads or stats other files, not even the TLS
// certificate and key named in the file. The server loads those when it
// starts and reports its own errors, so a config can be checked on a machine
// that does not hold the key material.
//
// Errors are written for the person editing the file: each one names the
// file, the line, the full key, the offending value and what would be
// accepted. All problems are reported at once, sorted by line, so a broken
// file can be fixed in one pass.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultSource is the Config.Source of a Config that was not read from a
// file.
const DefaultSource = "(embedded defaults)"

// Config is the whole server configuration. Each TOML section has its own
// struct so that later sections can be added without touching the others.
type Config struct {
	Realm    string // realm: the STUN/TURN long-term credential realm
	Software string // software: SOFTWARE attribute value; "" sends none
	TURN     TURN
	Auth     Auth
	Limits   Limits
	Peers    Peers
	Metrics  Metrics
	Log      Log
	Signal   Signal
	Cluster  Cluster
	Admin    Admin
	TLS      TLS    // [tls]: certificates by ACME
	Source   string // file name it was loaded from, or DefaultSource
}

// TURN is the [turn] section: listeners and relay addresses.
type TURN struct {
	// UDP, TCP and TLS are "host:port" listen addresses. The host is empty
	// or a literal IP (names are not resolved); port 0 picks a free port.
	UDP, TCP, TLS []string
	// TLSCert and TLSKey are PEM file paths, required when TLS is
	// non-empty. They are not opened here.
	TLSCert, TLSKey string
	// RelayIP is the local address relayed sockets bind to, and PublicIP
	// the address advertised to clients when the host is behind a 1:1 NAT.
	// Both are the zero netip.Addr (IsValid() == false) when unset.
	RelayIP, PublicIP netip.Addr
	// RelayIP6 and PublicIP6 are the same for IPv6 relayed addresses (REQUESTED-ADDRESS-
	// FAMILY IPv6, RFC 8656); unset, such an Allocate gets 440.
	RelayIP6, PublicIP6 netip.Addr
	// RelayPorts is the port range for relayed transport addresses.
	RelayPorts PortRange
	// UDPSockets is the number of sockets per UDP listener; 0 means one per
	// CPU.
	UDPSockets int
	// AlternateServer is sent in ALTERNATE-SERVER (300 Try Alternate) to new
	// Allocates while draining; the zero value sends 508 instead.
	AlternateServer netip.AddrPort
	// DrainTimeout bounds how long SIGTERM waits for allocations to end.
	DrainTimeout time.Duration
	// MaxLifetime caps the lifetime a client may ask for in Allocate and Refresh.
	MaxLifetime time.Duration
	// StrictChannelNumbers refuses channel numbers 0x5000-0x7FFF (RFC 8656); off, they
	// are accepted as RFC 5766 clients still use them.
	StrictChannelNumbers bool
}

// Auth is the [auth] section.
type Auth struct {
	// Secrets are the TURN REST shared secrets; credentials made with any
	// of them are accepted, which allows rotation. Empty means the server
	// generates one at start.
	Secrets []string
	// MaxTTL caps the lifetime of TURN REST credentials.
	MaxTTL time.Duration
	// Users maps static user names to passwords.
	Users map[string]string
}

// Limits is the [limits] section.
type Limits struct {
	UserAllocations  int // concurrent allocations per user name
	TotalAllocations int // concurrent allocations for the whole server

	PermissionsPerAllocation int   // permissions one allocation may hold
	ChannelsPerAllocation    int   // channel bindings one allocation may hold
	MaxBPS                   int64 // relayed bits per second per allocation, each way; 0 = no cap
	UserMaxBPS               int64 // relayed bits per second per user id, each way; 0 = no cap
	UnauthPerIP              int   // replies per second to unauthenticated requests, per source IP
	AuthFailuresPerIP        int   // wrong passwords per minute per source IP before silence
	AuthFailuresPerUser      int   // wrong passwords per minute per static user before silence
	UserBytesPerDay          int64 // relayed bytes per user id per UTC day, both directions; 0 = no budget
}

// Peers is the [peers] section: which peer addresses clients may relay to.
//
// Deny and Allow are what the file says; DenyDefault, DenyPrefixes and
// AllowPrefixes are their parsed forms, filled in by Validate. Which ranges
// "default" stands for is the server's decision, not this package's.
type Peers struct {
	Deny, Allow []string

	DenyDefault   bool           // "default" appears in Deny
	DenyPrefixes  []netip.Prefix // Deny without "default"; single IPs become /32 or /128
	AllowPrefixes []netip.Prefix // Allow; single IPs become /32 or /128
}

// Metrics is the [metrics] section.
type Metrics struct {
	Listen string // "host:port" of the Prometheus endpoint; "" disables it
}

// Log is the [log] section.
type Log struct {
	Level  string // debug, info, warn or error
	Format string // text or json
}

// SlogLevel returns the slog level for l.Level, so that it can be stored in
// a slog.LevelVar. Unknown levels (impossible after Validate) map to info.
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// PortRange is an inclusive range of ports. A valid range has
// 1 <= Min <= Max <= 65535.
type PortRange struct{ Min, Max uint16 }

// String returns the range in the file's "MIN-MAX" form.
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Contains reports whether p lies within the range.
func (r PortRange) Contains(p uint16) bool { return r.Min <= p && p <= r.Max }

// Size returns the number of ports in the range, 0 for an inverted range.
func (r PortRange) Size() int {
	if r.Max < r.Min {
		return 0
	}
	return int(r.Max) - int(r.Min) + 1
}

func (r PortRange) valid() bool { return r.Min >= 1 && r.Min <= r.Max }

// portRangeForm is shared by the syntax check in decoding and the bounds
// check in Validate, so both failures read the same.
const portRangeForm = `"MIN-MAX" with 1 <= MIN <= MAX <= 65535, e.g. "49152-65535"`

// ParsePortRange parses "MIN-MAX" and checks its bounds.
func ParsePortRange(s string) (PortRange, error) {
	minText, maxText, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, errors.New("expected " + portRangeForm)
	}
	lo, err1 := strconv.ParseUint(strings.TrimSpace(minText), 10, 16)
	hi, err2 := strconv.ParseUint(strings.TrimSpace(maxText), 10, 16)
	r := PortRange{uint16(lo), uint16(hi)}
	if err1 != nil || err2 != nil || !r.valid() {
		return PortRange{}, errors.New("expected " + portRangeForm)
	}
	return r, nil
}

// Default returns the built-in configuration: what a server runs with when
// a file sets nothing. Every call returns a fresh copy.
func Default() *Config {
	c := &Config{
		Realm:    "relay",
		Software: "",
		TURN: TURN{
			UDP:          []string{":3478"}, // both IPv4 and IPv6
			TCP:          []string{":3478"},
			TLS:          []string{},
			RelayPorts:   PortRange{Min: 49152, Max: 65535},
			DrainTimeout: 30 * time.Second,
			MaxLifetime:  time.Hour,
		},
		Auth: Auth{
			Secrets: []string{},
			MaxTTL:  24 * time.Hour,
			Users:   map[string]string{},
		},
		Limits: Limits{UserAllocations: 10, TotalAllocations: 10000,
			PermissionsPerAllocation: 64, ChannelsPerAllocation: 64, MaxBPS: 50_000_000,
			UnauthPerIP: 50, AuthFailuresPerIP: 30, AuthFailuresPerUser: 10},
		Peers:   Peers{Deny: []string{"default"}, Allow: []string{}},
		Metrics: Metrics{Listen: "127.0.0.1:9641"},
		Log:     Log{Level: "info", Format: "text"},
		Signal:  defaultSignal(),
		Cluster: defaultCluster(),
		Admin:   defaultAdmin(),
		TLS:     defaultTLS(),
		Source:  DefaultSource,
	}
	// Validate also fills the parsed Peers fields; a failure here is a bug
	// in the literal above, caught by the tests.
	if err := c.Validate(); err != nil {
		panic("config: built-in defaults are invalid: " + err.Error())
	}
	return c
}

// Load reads the file at path and parses it with Parse. It also checks the files the
// configuration names (TLS certificates and keys in use): readable, and a valid pair.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return parse(data, path, true)
}

// Parse decodes a TOML document over the defaults: a key absent from data
// keeps its Default value. source names the document in errors and becomes
// Config.Source; "" stands for "(config)".
//
// On failure the error is an Errors value listing every problem found,
// sorted by line; the Config is nil.
func Parse(data []byte, source string) (*Config, error) {
	return parse(data, source, false)
}

func parse(data []byte, source string, files bool) (*Config, error) {
	if source == "" {
		source = "(config)"
	}
	text := string(data)
	var doc map[string]any
	if _, err := toml.Decode(text, &doc); err != nil {
		return nil, Errors{syntaxError(source, text, err)}
	}

	c := Default()
	c.Source = source
	loc := locator{source: source, lines: keyLines(text)}
	d := newDecoder(loc)
	d.decodeConfig(c, doc)

	errs := append(d.errs, c.validate(loc)...)
	if files {
		errs = append(errs, c.checkFiles(loc)...)
	}
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return c, nil
}

// Validate checks every field and the relations between them, and fills in
// the parsed forms in Peers. Load and Parse call it; call it again after
// changing a Config by hand. Errors from a Config that was modified after
// loading carry no line numbers.
func (c *Config) Validate() error {
	source := c.Source
	if source == "" {
		source = "(config)"
	}
	if errs := c.validate(locator{source: source}); len(errs) > 0 {
		return errs
	}
	return nil
}

func (c *Config) decode(t *table) {
	t.str("realm", `a realm name, e.g. "relay.example.org"`, &c.Realm)
	t.str("software", `a product name for the SOFTWARE attribute, or "" for none`, &c.Software)
	c.TURN.decode(t.section("turn"))
	c.Auth.decode(t.section("auth"))
	c.Limits.decode(t.section("limits"))
	c.Peers.decode(t.section("peers"))
	c.Metrics.decode(t.section("metrics"))
	c.Log.decode(t.section("log"))
	c.Signal.decode(t.section("signal"))
	c.Cluster.decode(t.section("cluster"))
	c.Admin.decode(t.section("admin"))
	c.TLS.decode(t.section("tls"))
}

// listenForm describes a listen address; checkListen enforces it.
const (
	listenForm = `"host:port" where host is empty or an IP address (names are not resolved) and port is 0-65535`
	listenWant = listenForm + `, e.g. ":3478" (IPv4 and IPv6), "0.0.0.0:3478" (IPv4 only) or "[::]:3478" (IPv6 only)`
)

func (s *TURN) decode(t *table) {
	const want = `an array of ` + listenWant
	t.strs("udp", want, &s.UDP)
	t.strs("tcp", want, &s.TCP)
	t.strs("tls", `an array of `+listenForm+`, e.g. ["0.0.0.0:5349"]`, &s.TLS)
	t.str("tls_cert", `the path of a PEM certificate chain file, e.g. "/etc/relay/cert.pem"`, &s.TLSCert)
	t.str("tls_key", `the path of a PEM private key file, e.g. "/etc/relay/key.pem"`, &s.TLSKey)
	t.parse("relay_ip", `an IP address of this host, e.g. "192.0.2.10", or "" to choose automatically`, func(v string) error {
		return parseOptionalIP(v, &s.RelayIP)
	})
	t.parse("public_ip", `the public IP address clients see, e.g. "203.0.113.7", or "" when the host is not behind NAT`, func(v string) error {
		return parseOptionalIP(v, &s.PublicIP)
	})
	t.parse("relay_ip6", `an IPv6 address of this host, e.g. "2001:db8::10", or "" for no IPv6 relayed addresses`, func(v string) error {
		return parseOptionalIP(v, &s.RelayIP6)
	})
	t.parse("public_ip6", `the public IPv6 address clients see, e.g. "2001:db8::10", or "" when it is relay_ip6 itself`, func(v string) error {
		return parseOptionalIP(v, &s.PublicIP6)
	})
	t.parse("relay_ports", portRangeForm, func(v string) error {
		r, err := ParsePortRange(v)
		if err == nil {
			s.RelayPorts = r
		}
		return err
	})
	t.integer("udp_sockets", "an integer from 0 to 1024 (0 = one socket per CPU)", &s.UDPSockets)
	t.parse("alternate_server", `"IP:port" of another TURN server for clients to use while this one drains, e.g. "203.0.113.8:3478", or "" for none`, func(v string) error {
		if v == "" {
			s.AlternateServer = netip.AddrPort{}
			return nil
		}
		ap, err := netip.ParseAddrPort(v)
		if err == nil && (ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified()) {
			err = errors.New("bad alternate server")
		}
		if err == nil {
			s.AlternateServer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		return err
	})
	t.duration("drain_timeout", `a duration such as "30s" or "2m" ("0s" exits at once)`, &s.DrainTimeout)
	t.duration("max_lifetime", `a duration from "1m" to "1h", e.g. "1h"`, &s.MaxLifetime)
	t.boolean("strict_channel_numbers", "true or false", &s.StrictChannelNumbers)
}

func (a *Auth) decode(t *table) {
	t.strs("secrets", `an array of long random strings, e.g. ["<output of: openssl rand -hex 32>"]`, &a.Secrets)
	t.parse("max_ttl", `a positive duration such as "24h", "90m" or "3600s" (units: s, m, h; no "d")`, func(v string) error {
		d, err := time.ParseDuration(v)
		if err == nil {
			a.MaxTTL = d
		}
		return err
	})
	t.strMap("users", `a table of user names to password strings, e.g. { alice = "a long password" }`, "a password string", &a.Users)
}

func (l *Limits) decode(t *table) {
	t.integer("user_allocations", "an integer >= 1", &l.UserAllocations)
	t.integer("total_allocations", "an integer >= 1", &l.TotalAllocations)
	t.integer("permissions_per_allocation", "an integer >= 1", &l.PermissionsPerAllocation)
	t.integer("channels_per_allocation", "an integer >= 1", &l.ChannelsPerAllocation)
	var maxBPS, userBPS = int(l.MaxBPS), int(l.UserMaxBPS)
	t.integer("max_bps", "bits per second as an integer >= 0 (0 = no cap), e.g. 50000000", &maxBPS)
	t.integer("user_max_bps", "bits per second as an integer >= 0 (0 = no cap), e.g. 100000000", &userBPS)
	l.MaxBPS, l.UserMaxBPS = int64(maxBPS), int64(userBPS)
	t.integer("unauth_per_ip", "an integer >= 1 (replies per second)", &l.UnauthPerIP)
	t.integer("auth_failures_per_ip", "an integer >= 1 (failures per minute)", &l.AuthFailuresPerIP)
	t.integer("auth_failures_per_user", "an integer >= 1 (failures per minute)", &l.AuthFailuresPerUser)
	budget := int(l.UserBytesPerDay)
	t.integer("user_bytes_per_day", "bytes as an integer >= 0 (0 = no budget), e.g. 2000000000 (2 GB)", &budget)
	l.UserBytesPerDay = int64(budget)
}

func (p *Peers) decode(t *table) {
	t.strs("deny", `an array of CIDRs or IP addresses, or "default", e.g. ["default", "198.51.100.0/24"]`, &p.Deny)
	t.strs("allow", `an array of CIDRs or IP addresses, e.g. ["127.0.0.0/8"]`, &p.Allow)
}

func (m *Metrics) decode(t *table) {
	t.str("listen", listenWant+`, or "" to disable metrics`, &m.Listen)
}

func (l *Log) decode(t *table) {
	t.str("level", `one of "debug", "info", "warn", "error"`, &l.Level)
	t.str("format", `"text" or "json"`, &l.Format)
}

func parseOptionalIP(s string, dst *netip.Addr) error {
	if s == "" {
		*dst = netip.Addr{}
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*dst = a
	return nil
}
