package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// noSecretConfig is a config that loads but has no [auth] secrets, on ports nothing
// should ever open (relay must refuse before binding any).
func noSecretConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.toml")
	src := "[turn]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[auth]\nsecrets = []\n[metrics]\nlisten = \"\"\n[signal]\nlisten = \"\"\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRequireSecret: relay -require-secret (what the systemd unit runs) refuses a config
// without [auth] secrets with one line naming the file and the fix, and exit status 78
// (EX_CONFIG, which the unit's RestartPreventExitStatus= does not restart); it never
// generates a throw-away secret. relay check -config refuses the same file in the same
// words.
func TestRequireSecret(t *testing.T) {
	path := noSecretConfig(t)
	want := "no [auth] secrets in " + path + `: put secrets = ["<output of: openssl rand -hex 32>"] under [auth], then start relay again`

	var stdout, stderr bytes.Buffer
	if code := run([]string{"-config", path, "-require-secret"}, &stdout, &stderr); code != exitConfig {
		t.Errorf("relay -require-secret: exit status %d, want %d\n%s", code, exitConfig, &stderr)
	}
	if got := stderr.String(); got != "relay: "+want+"\n" {
		t.Errorf("relay -require-secret: stderr %q, want the one line %q", got, "relay: "+want)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout %q", &stdout)
	}

	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"check", "turn:127.0.0.1:9", "-config", path}, &stdout, &stderr); code != 2 {
		t.Errorf("relay check -config: exit status %d, want 2\n%s", code, &stderr)
	}
	if got := stderr.String(); got != "relay check: "+want+"\n" {
		t.Errorf("relay check -config: stderr %q, want %q", got, "relay check: "+want)
	}
	stderr.Reset()
	if code := run([]string{"check", "turn:127.0.0.1:9", "-config", path, "-secret", "s"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "give one of them") {
		t.Errorf("relay check -config -secret: exit status %d, stderr %q", code, &stderr)
	}
}
