package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayproject/relay/internal/testcert"
)

// loadText writes src as relay.toml in a fresh directory and loads it.
func loadText(t *testing.T, src string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.toml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

// TestTLSFilesCheckedAtLoad: a certificate or key that is missing, unreadable, not PEM or
// not a pair stops Load with the key's line, the value and what to do, for [signal] and
// [turn] alike; a valid pair loads. Parse reads no files.
func TestTLSFilesCheckedAtLoad(t *testing.T) {
	cert, key, _ := testcert.Write(t)
	otherCert, otherKey, _ := testcert.Write(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "fullchain.pem")
	signal := func(c, k string) string {
		return fmt.Sprintf("realm = \"r\"\n\n[signal]\nlisten = \"127.0.0.1:0\"\ntls_cert = %q\ntls_key = %q\n", c, k)
	}
	turn := func(c, k string) string {
		return fmt.Sprintf("[turn]\nudp = []\ntcp = []\ntls = [\"127.0.0.1:0\"]\ntls_cert = %q\ntls_key = %q\n", c, k)
	}
	for _, tc := range []struct {
		name, src string
		want      []string // one error each, in order
	}{
		{"signal valid pair", signal(cert, key), nil},
		{"turn valid pair", turn(cert, key), nil},
		{"signal missing certificate", signal(missing, key), []string{
			fmt.Sprintf("relay.toml:5: signal.tls_cert = %q: cannot read the certificate: no such file or directory; put the PEM certificate chain", missing)}},
		{"signal missing both", signal(missing, missing+".key"), []string{
			"relay.toml:5: signal.tls_cert = ", "relay.toml:6: signal.tls_key = "}},
		{"turn missing key", turn(cert, missing), []string{
			fmt.Sprintf("relay.toml:6: turn.tls_key = %q: cannot read the private key: no such file or directory", missing)}},
		{"turn certificate not PEM", turn(garbage, key), []string{
			fmt.Sprintf("relay.toml:5: turn.tls_cert = %q: not a usable PEM certificate", garbage)}},
		{"signal key not PEM", signal(cert, garbage), []string{
			fmt.Sprintf("relay.toml:6: signal.tls_key = %q: not a usable PEM private key", garbage)}},
		{"signal key of another certificate", signal(cert, otherKey), []string{
			fmt.Sprintf("relay.toml:6: signal.tls_key = %q: is not the private key of signal.tls_cert = %q", otherKey, cert)}},
		{"turn certificate of another key", turn(otherCert, key), []string{
			fmt.Sprintf("relay.toml:6: turn.tls_key = %q: is not the private key of turn.tls_cert = %q", key, otherCert)}},
		{"a directory", signal(filepath.Dir(cert), key), []string{
			"relay.toml:5: signal.tls_cert = ", "is a directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadText(t, tc.src)
			if tc.want == nil {
				if err != nil || c == nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Load: %v, want config.Errors", err)
			}
			text := err.Error()
			if len(tc.want) == 2 && strings.HasPrefix(tc.want[1], "relay.toml") {
				if len(errs) != 2 {
					t.Fatalf("want 2 errors, got:\n%s", text)
				}
			} else if len(errs) != 1 {
				t.Fatalf("want 1 error, got:\n%s", text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", text, w)
				}
			}
			if strings.Contains(text, "PRIVATE KEY") {
				t.Errorf("error quotes key material:\n%s", text)
			}
			// Parse reads no files: the same text parses.
			if _, err := Parse([]byte(tc.src), "relay.toml"); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}

	// Keys that are not in use are not checked: no TLS listener, no signaling.
	for _, src := range []string{
		fmt.Sprintf("[turn]\ntls = []\ntls_cert = %q\ntls_key = %q\n", missing, missing),
		fmt.Sprintf("[signal]\nlisten = \"\"\ntls_cert = %q\ntls_key = %q\n", missing, missing),
	} {
		if _, err := loadText(t, src); err != nil {
			t.Errorf("unused certificate checked: %v\n%s", err, src)
		}
	}
}

// TestTLSFileUnreadable: a key the server's user may not read is reported as such, with
// the fix (run as root, the file would be readable whatever its mode).
func TestTLSFileUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	cert, key, _ := testcert.Write(t)
	if err := os.Chmod(key, 0); err != nil {
		t.Fatal(err)
	}
	_, err := loadText(t, fmt.Sprintf("[signal]\ntls_cert = %q\ntls_key = %q\n", cert, key))
	if err == nil || !strings.Contains(err.Error(), "relay.toml:3: signal.tls_key") || !strings.Contains(err.Error(), "permission denied; make it readable by the user relay runs as") {
		t.Errorf("unreadable key: %v", err)
	}
}
