package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; otherwise it
// comes from the module's build information.
var version = ""

func buildVersion() (ver, revision string) {
	ver, revision = version, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if ver == "" || ver == "(devel)" {
		ver = "dev"
	}
	return ver, revision
}

func versionString() string {
	v, r := buildVersion()
	return fmt.Sprintf("relay %s (revision %s, %s)", v, r, runtime.Version())
}
