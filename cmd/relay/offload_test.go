package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOffloadRequired: turn.offload = "required" where the kernel data path cannot run
// (here: an interface that does not exist, whatever the privileges) refuses to start
// with the reason, and exit status 78, which the unit does not restart.
func TestOffloadRequired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.toml")
	src := "[turn]\nudp = [\"127.0.0.1:0\"]\ntcp = []\nrelay_ip = \"127.0.0.1\"\noffload = \"required\"\noffload_interfaces = [\"nosuch0\"]\n" +
		"[auth]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n[metrics]\nlisten = \"\"\n[signal]\nlisten = \"\"\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-config", path}, &stdout, &stderr); code != exitConfig {
		t.Errorf("exit status %d, want %d\n%s", code, exitConfig, &stderr)
	}
	if got := stderr.String(); !strings.Contains(got, `relay: turn.offload = "required", but the kernel data path cannot run: `) || !strings.Contains(got, "nosuch0") {
		t.Errorf("stderr does not say why:\n%s", got)
	}
}
