// Package deploy holds what an operator installs next to the relay binary: the systemd
// unit, the sysusers.d entry, the ACME deploy hook, the Prometheus scrape config and
// alert rules, and the Grafana dashboard (see README.md). It has no Go code; its tests
// check those files with the real tools (systemd-analyze, systemd-sysusers, promtool,
// strace) and against relay's metrics registry.
package deploy
