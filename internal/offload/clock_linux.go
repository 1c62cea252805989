//go:build linux

package offload

import (
	"time"

	"golang.org/x/sys/unix"
)

// Now is CLOCK_MONOTONIC in nanoseconds, the program's clock (bpf_ktime_get_ns), read
// without a system call: Go's monotonic clock is CLOCK_MONOTONIC too, so the offset
// taken once at start holds.
func Now() uint64 { return monoBase + uint64(time.Since(timeBase)) }

var monoBase, timeBase = func() (uint64, time.Time) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano()), time.Now()
}()
