//go:build !linux

package sdnotify

// monotonicUsec: systemd runs only on Linux, so elsewhere RELOADING=1 goes without it.
func monotonicUsec() (uint64, bool) { return 0, false }
