package main

import (
	"fmt"
	"runtime"

	"github.com/relayproject/relay/internal/version"
)

// buildVersion is the version and revision stamped in by deploy/release.sh, else what
// the go command recorded (internal/version).
func buildVersion() (ver, revision string) { return version.Get() }

func versionString() string {
	v, r := buildVersion()
	return fmt.Sprintf("relay %s (revision %s, %s)", v, r, runtime.Version())
}
