// Package version holds the version and revision of the build, which `relay version`
// prints, the startup log records and relay_build_info exports.
//
// The release build (deploy/release.sh) stamps both in with the linker:
//
//	go build -buildvcs=false -ldflags "-X github.com/relayproject/relay/internal/version.version=v1.2.3 \
//	    -X github.com/relayproject/relay/internal/version.revision=<commit>" ./cmd/relay
//
// so they are right even where the go command cannot read them from Git (a build from a
// tarball, a container without .git, -buildvcs=false). Without stamping (go run, go
// build, go install) they come from the module's build information: the module version
// for `go install ...@v1.2.3`, the Git commit for a build inside a clone.
package version

import "runtime/debug"

// Set by the linker (-X); see the package documentation. Unexported so that nothing but
// the linker changes them.
var (
	version  string
	revision string
)

// Get returns the version ("dev" when neither stamped nor known to the module system)
// and the revision ("unknown" likewise).
func Get() (ver, rev string) {
	ver, rev = version, revision
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
			}
		}
	}
	if ver == "" || ver == "(devel)" {
		ver = "dev"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev
}
