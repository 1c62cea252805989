package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameSettings compares everything but Source, which differs by design.
func sameSettings(t *testing.T, got, want *Config) {
	t.Helper()
	g, w := *got, *want
	g.Source, w.Source = "", ""
	if !reflect.DeepEqual(g, w) {
		t.Errorf("config differs:\n got %+v\nwant %+v", g, w)
	}
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "relay.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func parseErrors(t *testing.T, src string) Errors {
	t.Helper()
	c, err := Parse([]byte(src), "relay.toml")
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; config: %+v", c)
	}
	if c != nil {
		t.Errorf("Parse returned a config along with an error")
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want Errors: %v", err, err)
	}
	return errs
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if c.Source != DefaultSource {
		t.Errorf("Source = %q, want %q", c.Source, DefaultSource)
	}
	if c.Realm != "relay" || c.TURN.RelayPorts != (PortRange{49152, 65535}) || c.Auth.MaxTTL != 24*time.Hour {
		t.Errorf("unexpected defaults: %+v", c)
	}
	if !c.Peers.DenyDefault || len(c.Peers.DenyPrefixes) != 0 || len(c.Peers.AllowPrefixes) != 0 {
		t.Errorf("unexpected parsed peers: %+v", c.Peers)
	}
	if c.TURN.RelayIP.IsValid() || c.TURN.PublicIP.IsValid() {
		t.Errorf("relay_ip and public_ip should be unset by default")
	}
	// Each call must hand out its own slices and maps.
	c.TURN.UDP[0] = "changed"
	c.Auth.Users["x"] = "y"
	if d := Default(); d.TURN.UDP[0] != ":3478" || len(d.Auth.Users) != 0 {
		t.Errorf("Default() shares state between calls")
	}
}

func TestParseEmptyEqualsDefault(t *testing.T) {
	for _, src := range []string{"", "\n# only a comment\n", "[turn]\n[auth]\n"} {
		c := mustParse(t, src)
		if c.Source != "relay.toml" {
			t.Errorf("Source = %q", c.Source)
		}
		sameSettings(t, c, Default())
	}
}

func TestExampleFileEqualsDefault(t *testing.T) {
	c, err := Load("../config.example.toml")
	if err != nil {
		t.Fatalf("Load example: %v", err)
	}
	if c.Source != "../config.example.toml" {
		t.Errorf("Source = %q", c.Source)
	}
	sameSettings(t, c, Default())
}

// The example is the key reference, so it must set every key.
func TestExampleFileSetsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	lines := keyLines(string(data))
	// Decoding an empty document makes the decoder list every key it knows.
	d := newDecoder(locator{source: "x"})
	d.decodeConfig(Default(), map[string]any{})
	n := 0
	for parent, names := range d.known {
		for _, name := range names {
			key := name
			if parent != "" {
				key = parent + "." + name
			}
			n++
			if lines[key] == 0 {
				t.Errorf("config.example.toml does not set %s", key)
			}
		}
	}
	if n < 25 {
		t.Errorf("only %d known keys; the decoder did not report them all", n)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("does-not-exist.toml")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "does-not-exist.toml") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestParseValues(t *testing.T) {
	c := mustParse(t, `
realm = "example.org"
software = "relay 1.0"
[turn]
udp = ["127.0.0.1:0", "127.0.0.1:0", "[::1]:3478", ":3479"]
tcp = []
tls = ["0.0.0.0:5349"]
tls_cert = "/etc/relay/cert.pem"
tls_key = "/etc/relay/key.pem"
relay_ip = "192.0.2.10"
public_ip = "203.0.113.7"
relay_ports = "50000-50099"
udp_sockets = 4
[auth]
secrets = ["0123456789abcdef0123456789abcdef"]
max_ttl = "90m"
users = { alice = "wonderland" }
[limits]
user_allocations = 2
total_allocations = 3
[peers]
deny = ["198.51.100.7", "10.1.2.3/8", "2001:db8::/32"]
allow = ["127.0.0.0/8", "::1"]
[metrics]
listen = ""
[log]
level = "debug"
format = "json"
`)
	want := &Config{
		Realm:    "example.org",
		Software: "relay 1.0",
		TURN: TURN{
			UDP:               []string{"127.0.0.1:0", "127.0.0.1:0", "[::1]:3478", ":3479"},
			TCP:               []string{},
			TLS:               []string{"0.0.0.0:5349"},
			TLSCert:           "/etc/relay/cert.pem",
			TLSKey:            "/etc/relay/key.pem",
			RelayIP:           netip.MustParseAddr("192.0.2.10"),
			PublicIP:          netip.MustParseAddr("203.0.113.7"),
			RelayPorts:        PortRange{50000, 50099},
			UDPSockets:        4,
			DrainTimeout:      30 * time.Second,
			MaxLifetime:       time.Hour,
			Offload:           OffloadAuto,
			OffloadInterfaces: []string{},
		},
		Auth: Auth{
			Secrets: []string{"0123456789abcdef0123456789abcdef"},
			MaxTTL:  90 * time.Minute,
			Users:   map[string]string{"alice": "wonderland"},
		},
		Limits: func() Limits {
			l := Default().Limits
			l.UserAllocations, l.TotalAllocations = 2, 3
			return l
		}(),
		Peers: Peers{
			Deny:        []string{"198.51.100.7", "10.1.2.3/8", "2001:db8::/32"},
			Allow:       []string{"127.0.0.0/8", "::1"},
			DenyDefault: false,
			DenyPrefixes: []netip.Prefix{
				netip.MustParsePrefix("198.51.100.7/32"),
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("2001:db8::/32"),
			},
			AllowPrefixes: []netip.Prefix{
				netip.MustParsePrefix("127.0.0.0/8"),
				netip.MustParsePrefix("::1/128"),
			},
		},
		Metrics: Metrics{Listen: ""},
		Log:     Log{Level: "debug", Format: "json"},
		Signal:  defaultSignal(),
		Cluster: defaultCluster(),
		Admin:   defaultAdmin(),
		TLS:     defaultTLS(),
	}
	sameSettings(t, c, want)
}

// Keys may be written as dotted keys, inline tables or [section.sub]
// headers; all mean the same.
func TestParseKeyForms(t *testing.T) {
	for _, src := range []string{
		"turn.udp_sockets = 3\nauth.users.alice = \"pw\"\n",
		"turn = { udp_sockets = 3 }\nauth = { users = { alice = \"pw\" } }\n",
		"[turn]\nudp_sockets = 3\n[auth.users]\nalice = \"pw\"\n",
	} {
		c := mustParse(t, src)
		if c.TURN.UDPSockets != 3 || c.Auth.Users["alice"] != "pw" {
			t.Errorf("%q: got udp_sockets=%d users=%v", src, c.TURN.UDPSockets, c.Auth.Users)
		}
	}
}

// errCase is one invalid document and what its error must say.
type errCase struct {
	name string
	src  string
	key  string   // Error.Key
	line int      // Error.Line
	want []string // substrings of Error.Error()
}

func TestParseErrors(t *testing.T) {
	cases := []errCase{
		{"unknown top-level key", "realm = \"x\"\nrealmm = \"y\"\n",
			"realmm", 2, []string{`relay.toml:2: unknown key "realmm": did you mean "realm"?`}},
		{"unknown top-level key without suggestion", "\nfrobnicate = 1\n",
			"frobnicate", 2, []string{"top-level keys are realm, software", "[turn]"}},
		{"unknown section", "[turn]\nudp = []\n\n[turnn]\nudp = []\n",
			"turnn", 4, []string{`relay.toml:4: unknown section [turnn]: did you mean [turn]?`}},
		{"unknown section without suggestion", "[signalling]\nx = 1\n",
			"signalling", 1, []string{"unknown section [signalling]", "[turn], [auth], [limits]"}},
		{"unknown key in section", "[turn]\nudp = [\"0.0.0.0:1\"]\nudpp = [\"0.0.0.0:2\"]\n",
			"turn.udpp", 3, []string{`relay.toml:3: unknown key "turn.udpp": did you mean "turn.udp"?`}},
		{"unknown key lists section keys", "[log]\n\nfile = \"x\"\n",
			"log.file", 3, []string{`unknown key "log.file": the keys in [log] are level, format`}},
		{"key in wrong section", "[turn]\nmax_ttl = \"1h\"\n",
			"turn.max_ttl", 2, []string{`did you mean "auth.max_ttl"? move it to the [auth] section`}},
		{"top-level key in section", "[log]\nrealm = \"x\"\n",
			"log.realm", 2, []string{`"realm" is a top-level key`}},
		{"keys are case-sensitive", "[turn]\nUDP = []\n",
			"turn.UDP", 2, []string{`did you mean "turn.udp"?`}},
		{"unknown dotted key", "turn.relay_port = \"1-2\"\n",
			"turn.relay_port", 1, []string{`did you mean "turn.relay_ports"?`}},
		{"unknown key in inline table", "[auth]\nmax_ttl = \"1h\"\n\n\nx = 1\n",
			"auth.x", 5, []string{`unknown key "auth.x"`}},
		{"section not a table", "turn = 5\n",
			"turn", 1, []string{`turn = 5: expected a table, found an integer`}},

		{"udp not an array", "[turn]\n\nudp = \"0.0.0.0:3478\"\n",
			"turn.udp", 3, []string{`relay.toml:3: turn.udp = "0.0.0.0:3478": expected an array of "host:port"`, "found a string"}},
		{"udp element not a string", "[turn]\nudp = [\"0.0.0.0:1\", 3478]\n",
			"turn.udp", 2, []string{`turn.udp = ["0.0.0.0:1", 3478]`, "element 2 is an integer"}},
		{"udp_sockets string", "[turn]\nudp_sockets = \"four\"\n",
			"turn.udp_sockets", 2, []string{`turn.udp_sockets = "four": expected an integer from 0 to 1024`, "found a string"}},
		{"udp_sockets float", "[turn]\nudp_sockets = 4.0\n",
			"turn.udp_sockets", 2, []string{"found a float"}},
		{"udp_sockets too large", "[turn]\nudp_sockets = 2000\n",
			"turn.udp_sockets", 2, []string{`turn.udp_sockets = 2000: expected an integer from 0 to 1024`}},
		{"realm not a string", "realm = true\n",
			"realm", 1, []string{"realm = true: expected a realm name", "found a boolean"}},
		{"realm empty", "realm = \"\"\n",
			"realm", 1, []string{`realm = "": expected a non-empty`}},

		{"bad duration unit", "[auth]\nmax_ttl = \"1d\"\n",
			"auth.max_ttl", 2, []string{`relay.toml:2: auth.max_ttl = "1d": expected a positive duration such as "24h"`}},
		{"duration not a string", "[auth]\nmax_ttl = 3600\n",
			"auth.max_ttl", 2, []string{"auth.max_ttl = 3600", "found an integer"}},
		{"negative duration", "[auth]\nmax_ttl = \"-1h\"\n",
			"auth.max_ttl", 2, []string{`auth.max_ttl = "-1h0m0s": expected a positive duration`}},

		{"bad CIDR in deny", "[peers]\ndeny = [\"default\", \"10.0.0.0/33\"]\n",
			"peers.deny", 2, []string{`peers.deny = "10.0.0.0/33": expected a CIDR such as "10.0.0.0/8"`}},
		{"bad IP in allow", "[peers]\n\nallow = [\"127.0.0.1/8\", \"localhost\"]\n",
			"peers.allow", 3, []string{`peers.allow = "localhost": expected a CIDR`}},
		{"default in allow", "[peers]\nallow = [\"default\"]\n",
			"peers.allow", 2, []string{`peers.allow = "default": "default" is only meaningful in peers.deny`}},

		{"port range word", "[turn]\nrelay_ports = \"abc\"\n",
			"turn.relay_ports", 2, []string{`relay.toml:2: turn.relay_ports = "abc": expected "MIN-MAX" with 1 <= MIN <= MAX <= 65535, e.g. "49152-65535"`}},
		{"port range inverted", "[turn]\nrelay_ports = \"10-5\"\n",
			"turn.relay_ports", 2, []string{`turn.relay_ports = "10-5": expected "MIN-MAX"`}},
		{"port range from zero", "[turn]\nrelay_ports = \"0-10\"\n",
			"turn.relay_ports", 2, []string{`turn.relay_ports = "0-10": expected "MIN-MAX"`}},
		{"port range too high", "[turn]\nrelay_ports = \"1-70000\"\n",
			"turn.relay_ports", 2, []string{`turn.relay_ports = "1-70000": expected "MIN-MAX"`}},
		{"port range single port", "[turn]\nrelay_ports = \"50000\"\n",
			"turn.relay_ports", 2, []string{`expected "MIN-MAX"`}},
		{"port range dotted key", "realm = \"r\"\nturn.relay_ports = \"65535-1\"\n",
			"turn.relay_ports", 2, []string{`relay.toml:2: turn.relay_ports = "65535-1": expected "MIN-MAX"`}},

		{"relay_ip not an IP", "[turn]\nrelay_ip = \"relay.example.org\"\n",
			"turn.relay_ip", 2, []string{`turn.relay_ip = "relay.example.org": expected an IP address of this host`}},
		{"relay_ip unspecified", "[turn]\nrelay_ip = \"0.0.0.0\"\n",
			"turn.relay_ip", 2, []string{`turn.relay_ip = "0.0.0.0": expected a unicast IP address`}},
		{"relay_ip multicast", "[turn]\nrelay_ip = \"224.0.0.1\"\n",
			"turn.relay_ip", 2, []string{`turn.relay_ip = "224.0.0.1": expected a unicast`}},
		{"public_ip unspecified", "[turn]\npublic_ip = \"::\"\n",
			"turn.public_ip", 2, []string{`turn.public_ip = "::": expected the unicast public IP`}},
		{"public_ip family mismatch", "[turn]\nrelay_ip = \"10.0.0.5\"\npublic_ip = \"2001:db8::1\"\n",
			"turn.public_ip", 3, []string{`turn.public_ip = "2001:db8::1": turn.public_ip = "2001:db8::1" and turn.relay_ip = "10.0.0.5" are different IP versions`}},

		{"relay_ip6 IPv4", "[turn]\nrelay_ip6 = \"192.0.2.1\"\n",
			"turn.relay_ip6", 2, []string{`turn.relay_ip6 = "192.0.2.1": expected a global or unique-local IPv6 address`}},
		{"relay_ip6 link-local", "[turn]\nrelay_ip6 = \"fe80::1\"\n",
			"turn.relay_ip6", 2, []string{`turn.relay_ip6 = "fe80::1": expected a global`, "not link-local"}},
		{"relay_ip6 mapped", "[turn]\nrelay_ip6 = \"::ffff:192.0.2.1\"\n",
			"turn.relay_ip6", 2, []string{"not IPv4-mapped"}},
		{"public_ip6 without relay_ip6", "[turn]\npublic_ip6 = \"2001:db8::1\"\n",
			"turn.public_ip6", 2, []string{`turn.public_ip6 = "2001:db8::1": is set but turn.relay_ip6 is not`}},
		{"listen port not a number", "[turn]\nudp = [\"localhost:abc\"]\n",
			"turn.udp", 2, []string{`relay.toml:2: turn.udp = "localhost:abc": port "abc" is not a number`, `expected "host:port"`}},
		{"listen without port", "[turn]\ntcp = [\"1.2.3.4\"]\n",
			"turn.tcp", 2, []string{`turn.tcp = "1.2.3.4": missing port; expected "host:port"`}},
		{"listen host name", "[turn]\ntcp = [\"localhost:3478\"]\n",
			"turn.tcp", 2, []string{`turn.tcp = "localhost:3478": host "localhost" is not an IP address`}},
		{"listen IPv6 without brackets", "[turn]\nudp = [\"::1:3478\"]\n",
			"turn.udp", 2, []string{"IPv6 addresses need brackets"}},
		{"listen port too large", "[turn]\nudp = [\"0.0.0.0:65536\"]\n",
			"turn.udp", 2, []string{`port "65536" is not a number from 0 to 65535`}},
		{"duplicate listener", "[turn]\nudp = [\"0.0.0.0:3478\", \"0.0.0.0:3478\"]\n",
			"turn.udp", 2, []string{`turn.udp = "0.0.0.0:3478": listed twice`}},
		{"tcp and tls on one port", "[turn]\ntcp = [\"0.0.0.0:443\"]\ntls = [\"0.0.0.0:443\"]\ntls_cert = \"c\"\ntls_key = \"k\"\n",
			"turn.tls", 3, []string{"also listed in turn.tcp"}},
		{"no listeners", "[turn]\nudp = []\ntcp = []\n",
			"turn", 1, []string{"no listeners"}},
		{"tls without cert and key", "[turn]\ntls = [\"0.0.0.0:5349\"]\n",
			"turn.tls", 2, []string{`relay.toml:2: turn.tls = ["0.0.0.0:5349"]: TLS listeners need turn.tls_cert and turn.tls_key, but turn.tls_cert and turn.tls_key are empty`}},
		{"tls without key", "[turn]\ntls = [\"0.0.0.0:5349\"]\ntls_cert = \"/c.pem\"\n",
			"turn.tls", 2, []string{"but turn.tls_key is empty", "set both"}},
		{"shared port, other certificate", "[turn]\ntls = [\":443\"]\ntls_cert = \"/t.pem\"\ntls_key = \"/t.key\"\n[signal]\nlisten = \":443\"\ntls_cert = \"/s.pem\"\ntls_key = \"/s.key\"\n",
			"turn.tls_cert", 3, []string{"one port presents one certificate"}},
		{"acme with tls_cert", "[signal]\ntls_cert = \"/s.pem\"\ntls_key = \"/s.key\"\n[tls]\nacme_domains = [\"turn.example.org\"]\n",
			"signal.tls_cert", 2, []string{"tls.acme_domains turns ACME on", `set tls_cert = ""`}},
		{"acme domain an IP", "[tls]\nacme_domains = [\"192.0.2.1\"]\n",
			"tls.acme_domains", 2, []string{"expected a DNS name"}},
		{"acme directory http", "[tls]\nacme_directory = \"http://ca.example/dir\"\n",
			"tls.acme_directory", 2, []string{"expected an https:// URL"}},
		{"acme email", "[tls]\nacme_email = \"nobody\"\n",
			"tls.acme_email", 2, []string{"expected one e-mail address"}},
		{"acme http listen", "[tls]\nacme_http = \"localhost:80\"\n",
			"tls.acme_http", 2, []string{`host "localhost" is not an IP address`}},
		{"metrics listen bad", "[metrics]\nlisten = \"localhost:9641\"\n",
			"metrics.listen", 2, []string{`metrics.listen = "localhost:9641": host "localhost" is not an IP address`, `"" to disable`}},

		{"bad log level", "[log]\nlevel = \"verbose\"\n",
			"log.level", 2, []string{`log.level = "verbose": expected one of "debug", "info", "warn", "error"`}},
		{"bad log format", "[log]\nlevel = \"warn\"\nformat = \"xml\"\n",
			"log.format", 3, []string{`log.format = "xml": expected "text" or "json"`}},

		{"user allocations zero", "[limits]\nuser_allocations = 0\n",
			"limits.user_allocations", 2, []string{"limits.user_allocations = 0: expected an integer >= 1"}},
		{"total allocations negative", "[limits]\ntotal_allocations = -5\n",
			"limits.total_allocations", 2, []string{"limits.total_allocations = -5: expected an integer >= 1"}},
		{"user above total", "[limits]\nuser_allocations = 20\ntotal_allocations = 5\n",
			"limits.user_allocations", 2, []string{"limits.user_allocations = 20: limits.user_allocations = 20 is more than limits.total_allocations = 5"}},
		{"total below default user limit", "[limits]\n\ntotal_allocations = 5\n",
			"limits.total_allocations", 3, []string{"limits.total_allocations = 5: limits.user_allocations = 10 is more than limits.total_allocations = 5"}},

		{"user name with colon", "[auth.users]\nalice = \"pw1\"\n\"b:ob\" = \"pw2\"\n",
			`auth.users."b:ob"`, 3, []string{`auth.users."b:ob" = "***": user name "b:ob" contains ':'`}},
		{"user name with colon inline", "[auth]\nusers = { \"b:ob\" = \"pw2\" }\n",
			`auth.users."b:ob"`, 2, []string{"contains ':'"}},
		{"empty password", "[auth.users]\nalice = \"\"\n",
			"auth.users.alice", 2, []string{"empty password"}},
		{"password not a string", "[auth.users]\nalice = 1234\n",
			"auth.users.alice", 2, []string{`auth.users.alice = "***": expected a password string, found an integer`}},
		{"users not a table", "[auth]\nusers = [\"alice:pw\"]\n",
			"auth.users", 2, []string{`auth.users = "***": expected a table of user names`}},
		{"empty secret", "[auth]\nsecrets = [\"0123456789abcdef0123456789abcdef\", \"\"]\n",
			"auth.secrets", 2, []string{`auth.secrets = "***": entry 2 is empty`}},
		{"offload mode", "[turn]\n\noffload = \"on\"\n",
			"turn.offload", 3, []string{`turn.offload = "on": expected "auto"`, `"off" or "required"`}},
		{"offload interfaces not names", "[turn]\noffload_interfaces = \"eth0\"\n",
			"turn.offload_interfaces", 2, []string{`expected an array of interface names, e.g. ["eth0"]`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := parseErrors(t, tc.src)
			var found *Error
			for _, e := range errs {
				if e.Key == tc.key {
					found = e
					break
				}
			}
			if found == nil {
				t.Fatalf("no error for key %q; got:\n%v", tc.key, errs)
			}
			if found.Line != tc.line {
				t.Errorf("line = %d, want %d: %v", found.Line, tc.line, found)
			}
			if found.Source != "relay.toml" {
				t.Errorf("source = %q", found.Source)
			}
			for _, w := range tc.want {
				if !strings.Contains(found.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, found)
				}
			}
			if len(errs) != 1 {
				t.Errorf("want exactly one error, got %d:\n%v", len(errs), errs)
			}
		})
	}
}

func TestCRLFLineNumbers(t *testing.T) {
	errs := parseErrors(t, "realm = \"r\"\r\n\r\n[log]\r\nlevel = \"loud\"\r\n")
	if len(errs) != 1 || errs[0].Line != 4 || errs[0].Key != "log.level" {
		t.Errorf("got %v, want log.level at line 4", errs)
	}
}

func TestAllErrorsReportedInLineOrder(t *testing.T) {
	errs := parseErrors(t, `
[log]
format = "xml"

[turn]
relay_ports = "abc"
udpp = []
udp_sockets = "x"

[auth]
max_ttl = "forever"
`)
	want := []struct {
		line int
		key  string
	}{{3, "log.format"}, {6, "turn.relay_ports"}, {7, "turn.udpp"}, {8, "turn.udp_sockets"}, {11, "auth.max_ttl"}}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i, w := range want {
		if errs[i].Line != w.line || errs[i].Key != w.key {
			t.Errorf("error %d = %v, want line %d key %s", i, errs[i], w.line, w.key)
		}
	}
	lines := strings.Split(errs.Error(), "\n")
	if len(lines) != len(want) || !strings.HasPrefix(lines[0], "relay.toml:3: log.format") {
		t.Errorf("Error() = %q", errs.Error())
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Parse([]byte("[log]\nlevel = \"loud\"\n"), "relay.toml")
	var e *Error
	if !errors.As(err, &e) || e.Key != "log.level" || e.Line != 2 || e.Value != `"loud"` {
		t.Errorf("errors.As(*Error) = %+v", e)
	}
}

func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		src  string
		line int
		want string
	}{
		{"realm = \"x\"\nudp = [1,,2]\n", 2, "relay.toml:2:10: TOML syntax error: unexpected comma"},
		{"realm = \"x\"\n[turn\nudp = []\n", 2, "relay.toml:2:6:"},
		{"realm = \"a\"\nrealm = \"b\"\n", 2, "relay.toml:2:1:"},
		{"[turn]\nudp = [\"a\",\n\"b\"\nrelay_ports = 1\n", 4, "TOML syntax error"},
		{"realm = \"a\"\nrealm = \"b\"\n", 2, "already been defined"},
		{"realm = \"unterminated\n", 1, "relay.toml:1:"},
	}
	for _, tc := range cases {
		errs := parseErrors(t, tc.src)
		if len(errs) != 1 || errs[0].Line != tc.line || errs[0].Column == 0 || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("Parse(%q) = %v; want one error at line %d with a column, containing %q", tc.src, errs, tc.line, tc.want)
		}
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "hunter2hunter2"
	for _, src := range []string{
		"[auth]\nsecrets = [\"\", \"" + secret + "\"]\n",
		"[auth]\nsecrets = \"" + secret + "\"\n",
		"[auth]\nsecrets = [\"" + secret + "\", 5]\n",
		"[auth.users]\n\"a:b\" = \"" + secret + "\"\n",
		"[auth]\nusers = \"alice:" + secret + "\"\n",
		"[auth]\nusers = { alice = \"" + secret + "\", bob = 5 }\n",
		"auth = [\"" + secret + "\"]\n",
		"[auth]\nsecrets = [" + secret + "]\n",   // syntax error quoting the text
		"[auth.users]\nalice = " + secret + "\n", // syntax error quoting the text
		"[auth.users]\nalice = \"" + secret + "\\q\"\n",
	} {
		expectHidden(t, src, "hunter")
	}
}

// expectHidden parses src, which is wrong, and checks the error says where without
// quoting secret.
func expectHidden(t *testing.T, src, secret string) {
	t.Helper()
	_, err := Parse([]byte(src), "relay.toml")
	if err == nil {
		t.Errorf("Parse(%q) succeeded", src)
		return
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error leaks the secret: %v", err)
	}
	if !strings.Contains(err.Error(), "relay.toml:") {
		t.Errorf("error without a position: %v", err)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := Default()
	c.Log.Level = "loud"
	c.Peers.Allow = []string{"10.0.0.0/8"}
	err := c.Validate()
	if err == nil || err.Error() != `(embedded defaults): log.level = "loud": expected one of "debug", "info", "warn", "error"` {
		t.Errorf("Validate() = %v", err)
	}
	c.Log.Level = "warn"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}; !reflect.DeepEqual(c.Peers.AllowPrefixes, want) {
		t.Errorf("AllowPrefixes = %v after Validate", c.Peers.AllowPrefixes)
	}
}

func TestSlogLevel(t *testing.T) {
	for level, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
	} {
		if got := (Log{Level: level}).SlogLevel(); got != want {
			t.Errorf("SlogLevel(%q) = %v, want %v", level, got, want)
		}
	}
}

func TestPortRange(t *testing.T) {
	r, err := ParsePortRange("49152-65535")
	if err != nil || r != (PortRange{49152, 65535}) || r.String() != "49152-65535" || r.Size() != 16384 {
		t.Errorf("ParsePortRange = %v, %v (size %d)", r, err, r.Size())
	}
	if !r.Contains(49152) || !r.Contains(65535) || r.Contains(49151) {
		t.Errorf("Contains is wrong at the edges")
	}
	if (PortRange{5, 5}).Size() != 1 || (PortRange{6, 5}).Size() != 0 {
		t.Errorf("Size is wrong")
	}
	for _, bad := range []string{"", "abc", "10-5", "0-10", "1-70000", "-5", "5-", "1-2-3", "+1-5"} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("ParsePortRange(%q) succeeded", bad)
		}
	}
}

func TestWarnings(t *testing.T) {
	if w := Default().Warnings(); len(w) != 0 {
		t.Errorf("defaults warn: %q", w)
	}
	c := mustParse(t, `
[turn]
relay_ports = "50000-50009"
[auth]
secrets = ["short"]
[peers]
deny = []
allow = ["127.0.0.0/8"]
[metrics]
listen = "0.0.0.0:9641"
[signal]
max_queue_bytes_per_ip = 16777216
`)
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"entry 1 is only 5 characters", `peers.deny does not include "default"`, "peers.allow", "fewer than limits.total_allocations", "metrics.listen",
		"signal.max_queue_bytes_per_ip = 16777216 is more than a quarter of signal.max_queue_bytes"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, `"short"`) {
		t.Errorf("warnings leak a secret:\n%s", w)
	}
}

func TestKeyLines(t *testing.T) {
	src := `# comment with key = "value"
realm = "r" # trailing [comment]
multi = """
fake = 1
[fake]
"""
lit = '''
x = 2'''
arr = [
  "a", # comment ]
  [1, 2],
  { inner = 1 },
]
inline = { a = 1, b.c = "}", "q.k" = { d = 1 } }
date = 1979-05-27 07:32:00Z
[turn]
  "quoted key" = 1
  'lit.key' = 2
  dotted . more = 3
[[arr.tables]]
item = 1
[ auth . users ]
"a:b" = "x"
`
	want := map[string]int{
		"realm": 2, "multi": 3, "lit": 7, "arr": 9, "inline": 14, "inline.a": 14, "inline.b.c": 14,
		`inline."q.k".d`: 14, "date": 15, "turn": 16, `turn."quoted key"`: 17, `turn."lit.key"`: 18,
		"turn.dotted.more": 19, "turn.dotted": 19, "arr.tables": 20, "arr.tables.item": 21,
		"auth": 22, "auth.users": 22, `auth.users."a:b"`: 23,
	}
	got := keyLines(src)
	for k, line := range want {
		if got[k] != line {
			t.Errorf("line of %s = %d, want %d", k, got[k], line)
		}
	}
	for _, k := range []string{"fake", "x", "inner", "[fake]"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s was recorded from inside a value", k)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"udp", "tcp", "tls", "tls_cert", "relay_ports"}
	for name, want := range map[string]string{"udpp": "udp", "UDP": "udp", "relayports": "relay_ports", "tlscert": "tls_cert", "zzzzzz": ""} {
		if got := closest(name, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", name, got, want)
		}
	}
}

func ExampleParse() {
	_, err := Parse([]byte("[turn]\nudpp = []\nrelay_ports = \"65535-1\"\n"), "relay.toml")
	fmt.Println(err)
	// Output:
	// relay.toml:2: unknown key "turn.udpp": did you mean "turn.udp"?
	// relay.toml:3: turn.relay_ports = "65535-1": expected "MIN-MAX" with 1 <= MIN <= MAX <= 65535, e.g. "49152-65535"
}

func TestSignalErrors(t *testing.T) {
	cases := []struct {
		name, doc, key string
		line           int
		want           string
	}{
		{"bad listen", "[signal]\nlisten = \"localhost:9001\"\n", "signal.listen", 2, "not an IP address"},
		{"bad duration", "[signal]\n\nexpire_timeout = \"5 seconds\"\n", "signal.expire_timeout", 3, "positive duration"},
		{"zero duration", "[signal]\nalive_timeout = \"0s\"\n", "signal.alive_timeout", 2, "positive duration"},
		{"bad bool", "[signal]\nallow_discovery = \"yes\"\n", "signal.allow_discovery", 2, "true or false"},
		{"bad origin", "[signal]\nallowed_origins = [\"app.example.org\"]\n", "signal.allowed_origins", 2, "https://app.example.org"},
		{"bad key", "[signal]\nkey = \"a/b\"\n", "signal.key", 2, "non-empty key"},
		{"public host with scheme", "[signal]\npublic_host = \"https://x\"\n", "signal.public_host", 2, "bare host"},
		{"cert without key", "[signal]\ntls_cert = \"c.pem\"\n", "signal.tls_key", 0, "go together"},
		{"limit", "[signal]\nconcurrent_limit = 0\n", "signal.concurrent_limit", 2, ">= 1"},
		{"message size", "[signal]\nmax_message_bytes = 10\n", "signal.max_message_bytes", 2, "1024"},
		{"shared tls port, plain signaling", "[turn]\ntls = [\"0.0.0.0:9001\"]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[signal]\nlisten = \"0.0.0.0:9001\"\n", "signal.listen", 6, "also in turn.tls, but signaling serves plain http"},
		{"shared tcp port, https signaling", "[turn]\ntcp = [\"0.0.0.0:9001\"]\n[signal]\nlisten = \"0.0.0.0:9001\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n", "signal.listen", 4, "put the address in turn.tls instead"},
		{"same port, other host", "[turn]\ntcp = [\"0.0.0.0:9001\"]\n[signal]\nlisten = \":9001\"\n", "signal.listen", 4, "write the same address in both"},
		{"unknown", "[signal]\nexpire_timout = \"5s\"\n", "signal.expire_timout", 2, "did you mean \"signal.expire_timeout\""},
		{"queue bytes negative", "[signal]\nmax_queue_bytes = -1\n", "signal.max_queue_bytes", 2, "signal.max_queue_bytes = -1: expected bytes as an integer >= 0"},
		{"queue bytes not a number", "[signal]\nmax_queue_bytes_per_ip = \"1MiB\"\n", "signal.max_queue_bytes_per_ip", 2, "e.g. 1048576"},
		{"per ip above total", "[signal]\nmax_queue_bytes = 1000000\n\nmax_queue_bytes_per_ip = 2000000\n", "signal.max_queue_bytes_per_ip", 4,
			"signal.max_queue_bytes_per_ip = 2000000: signal.max_queue_bytes_per_ip = 2000000 is more than signal.max_queue_bytes = 1000000, the total: lower it"},
		{"total below default per peer", "[signal]\nmax_queue_bytes = 100000\n", "signal.max_queue_bytes", 2,
			"signal.max_queue_bytes_per_peer = 262144 is more than signal.max_queue_bytes = 100000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantError(t, tc.doc, tc.key, tc.line, tc.want) })
	}
	c, err := Parse([]byte("[signal]\npath = \"sig\"\n"), "x")
	if err != nil || c.Signal.Path != "/sig/" {
		t.Errorf("path not normalised: %v %v", c, err)
	}
}

// wantError parses doc and wants among its errors one for key at line (0: any line)
// whose text holds want.
func wantError(t *testing.T, doc, key string, line int, want string) {
	t.Helper()
	_, err := Parse([]byte(doc), "relay.toml")
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	for _, e := range errs {
		if e.Key == key && (line == 0 || e.Line == line) && strings.Contains(e.Error(), want) {
			return
		}
	}
	t.Errorf("no error for %s at line %d containing %q in:\n%v", key, line, want, err)
}
