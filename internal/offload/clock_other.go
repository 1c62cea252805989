//go:build !linux

package offload

import "time"

// Now is a monotonic clock in nanoseconds (no kernel shares it here).
func Now() uint64 { return uint64(time.Since(timeBase)) + 1 }

var timeBase = time.Now()
