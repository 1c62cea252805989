package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionStamped: a binary built the way deploy/release.sh builds it, with VCS
// stamping off and the version and revision given to the linker, prints them; one built
// with neither prints "dev" and "unknown" rather than nothing.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds relay twice; skipped with -short")
	}
	const pkg = "github.com/relayproject/relay/internal/version"
	for _, tc := range []struct {
		name, ldflags, want string
	}{
		{"stamped", "-X " + pkg + ".version=v9.8.7-rc.1 -X " + pkg + ".revision=0123456789abcdef0123456789abcdef01234567",
			"relay v9.8.7-rc.1 (revision 0123456789abcdef0123456789abcdef01234567, " + runtime.Version() + ")\n"},
		{"unstamped", "", "relay dev (revision unknown, " + runtime.Version() + ")\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "relay")
			build := exec.Command("go", "build", "-buildvcs=false", "-trimpath", "-ldflags", tc.ldflags, "-o", bin, ".")
			build.Env = append(build.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			for _, arg := range []string{"version", "-version"} {
				out, err := exec.Command(bin, arg).Output()
				if err != nil || string(out) != tc.want {
					t.Errorf("relay %s: %q (%v), want %q", arg, out, err, tc.want)
				}
			}
		})
	}
	if !strings.HasPrefix(versionString(), "relay dev (") {
		t.Errorf("go test's own binary: %q", versionString())
	}
}
