//go:build linux

package main

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The generator's sockets are internal/rawudp's: raw non-blocking descriptors, datagrams
// moved with recvmmsg/sendmmsg over buffers allocated once, so no per-packet allocation,
// no goroutine wake-up per packet, and one system call per batch.

var loopback = netip.MustParseAddr("127.0.0.1")

// setTimerSlack sets this thread's timer slack (default 50 µs), which would otherwise
// stretch every short sleep of the pacing loop.
func setTimerSlack(d time.Duration) {
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d), 0, 0, 0)
}
