package relay

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// hashedBuckets rate-limits by key (a source IP, a user id) without keeping state per
// key: a fixed table of token buckets indexed by a keyed hash. A flood from spoofed
// sources can make it no bigger; at worst a legitimate key shares a bucket with an
// abusive one.
type hashedBuckets struct {
	mu     sync.Mutex
	seed   maphash.Seed
	rate   float64 // tokens per second
	burst  float64
	tokens [4096]float32
	last   [4096]int64 // unix nanoseconds of the last refill; 0 = full
}

func newHashedBuckets(perSecond, burst float64) *hashedBuckets {
	return &hashedBuckets{seed: maphash.MakeSeed(), rate: perSecond, burst: burst}
}

func (h *hashedBuckets) slot(key []byte) int {
	return int(maphash.Bytes(h.seed, key) % uint64(len(h.tokens)))
}

// refill brings slot i up to date and returns its tokens. h.mu is held.
func (h *hashedBuckets) refill(i int, now int64) float64 {
	if h.last[i] == 0 {
		h.last[i] = now
		h.tokens[i] = float32(h.burst)
		return h.burst
	}
	t := float64(h.tokens[i]) + float64(now-h.last[i])/1e9*h.rate
	t = min(t, h.burst)
	h.tokens[i], h.last[i] = float32(t), now
	return t
}

// allow takes a token for key if there is one.
func (h *hashedBuckets) allow(key []byte, now time.Time) bool {
	i := h.slot(key)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refill(i, now.UnixNano()) < 1 {
		return false
	}
	h.tokens[i]--
	return true
}

// bitRate is a token bucket in bits, for the relay path's bandwidth caps. A zero
// *bitRate (nil) is unlimited.
type bitRate struct {
	l *rate.Limiter
}

func newBitRate(bps int64) *bitRate {
	if bps <= 0 {
		return nil
	}
	// A second's worth of burst: enough for a video keyframe, not for a flood.
	return &bitRate{l: rate.NewLimiter(rate.Limit(bps), int(bps))}
}

// take spends n bytes' worth of bits if the bucket has them.
func (b *bitRate) take(n int, now time.Time) bool {
	return b == nil || b.l.AllowN(now, n*8)
}
