// Package deploy holds what an operator installs next to the relay binary: the systemd
// unit, the sysusers.d entry, the ACME deploy hook, the Prometheus scrape config and
// alert rules, and the Grafana dashboard (see README.md); and the release build,
// release.sh, with the .deb it makes (deb/, built by nfpm from a Go module of its own).
// It has no Go code; its tests check those files with the real tools (systemd-analyze,
// systemd-sysusers, promtool, strace, lintian, dpkg) and against relay's metrics
// registry.
package deploy
