package config

import (
	"strings"
	"testing"
)

// TestAdminSection: [admin] and the keys of issue 13 elsewhere decode, and a listener
// off loopback without tokens stops relay with the key, the line and the fix.
func TestAdminSection(t *testing.T) {
	c, err := Parse([]byte(`[admin]
listen = "10.0.0.5:9642"
tokens = ["0123456789abcdef0123456789abcdef"]
state_dir = "/var/lib/relay"
[limits]
user_bytes_per_day = 2000000000
[signal]
bind_credentials = true
credential_grace = "5s"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "10.0.0.5:9642" || len(c.Admin.Tokens) != 1 || c.Admin.StateDir != "/var/lib/relay" ||
		c.Limits.UserBytesPerDay != 2_000_000_000 || !c.Signal.BindCredentials || c.Signal.CredentialGrace.Seconds() != 5 {
		t.Errorf("decoded %+v %+v %+v", c.Admin, c.Limits, c.Signal)
	}
	if d := Default(); d.Admin.Listen != "127.0.0.1:9642" || len(d.Admin.Tokens) != 0 || d.Admin.StateDir != "" ||
		d.Limits.UserBytesPerDay != 0 || d.Signal.BindCredentials || d.Signal.CredentialGrace.Seconds() != 30 {
		t.Errorf("defaults %+v", d.Admin)
	}
	for _, tc := range []struct{ doc, want string }{
		{"[admin]\nlisten = \"0.0.0.0:9642\"\n", `t.toml:2: admin.listen = "0.0.0.0:9642": is not a loopback address and admin.tokens is empty`},
		{"[admin]\nlisten = \":9642\"\n", `admin.listen = ":9642": is not a loopback address`},
		{"[admin]\nlisten = \"[::]:9642\"\n", `admin.listen = "[::]:9642": is not a loopback address`},
		{"[admin]\nlisten = \"localhost:9642\"\n", `host "localhost" is not an IP address`},
		{"[admin]\ntokens = [\"\"]\n", `admin.tokens = "***": entry 1 is empty`},
		{"[limits]\nuser_bytes_per_day = -1\n", `limits.user_bytes_per_day = -1: expected bytes >= 0`},
		{"[signal]\ncredential_grace = \"0s\"\n", `signal.credential_grace = "0s": expected a positive duration`},
	} {
		_, err := Parse([]byte(tc.doc), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.doc, err, tc.want)
		}
	}
	for _, ok := range []string{"[admin]\nlisten = \"[::1]:9642\"\n", "[admin]\nlisten = \"\"\n", "[admin]\nlisten = \"127.0.0.2:0\"\n"} {
		if _, err := Parse([]byte(ok), "t.toml"); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	c, _ = Parse([]byte("[admin]\nlisten = \"0.0.0.0:9642\"\ntokens = [\"short\"]\n"), "t.toml")
	w := strings.Join(c.Warnings(), "\n")
	if !strings.Contains(w, "admin.tokens: entry 1 is only 5 characters long") || !strings.Contains(w, "reachable from other hosts") || strings.Contains(w, "short") {
		t.Errorf("warnings:\n%s", w)
	}
}

// TestSecurity5AdminTokensNeverInErrors: [admin] tokens are credentials; no config error
// may print one.
func TestSecurity5AdminTokensNeverInErrors(t *testing.T) {
	const tok = "hunter2token"
	for _, src := range []string{
		"[admin]\ntokens = [\"\", \"" + tok + "\"]\n",
		"[admin]\ntokens = \"" + tok + "\"\n",
		"[admin]\ntokens = [\"" + tok + "\", 5]\n",
		"admin.tokens = \"" + tok + "\"\n",
		"admin = [\"" + tok + "\"]\n",
		"[admin]\ntokens = [" + tok + "]\n",
		"[admin]\ntokens = [\"" + tok + "\\q\"]\n",
		"[admin]\ntokens = [\"" + tok + "\"]]\n",
	} {
		expectHidden(t, src, "hunter")
	}
}
