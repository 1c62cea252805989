package relay

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
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

// bitRate is a bandwidth cap for the relay path: a token bucket of bps bits with a
// second's worth of burst (enough for a video keyframe, not for a flood), kept as GCRA,
// a single "theoretical arrival time" that a datagram of n bytes moves n*8/bps seconds
// ahead and that may run at most a second ahead of now. One word of state, updated with
// a compare-and-swap, so that the kernel data path can take from the same bucket in
// memory both share (internal/offload) and a cap holds whichever path a datagram takes.
// A zero *bitRate (nil) is unlimited.
type bitRate struct {
	tat    *atomic.Uint64 // CLOCK_MONOTONIC ns (offload.Now); points at own, or into the kernel's bucket memory
	bps    uint64
	kernel uint32 // the kernel's bucket index; 0: this process alone keeps the bucket
	own    atomic.Uint64
}

func newBitRate(bps int64) *bitRate {
	if bps <= 0 {
		return nil
	}
	b := &bitRate{bps: uint64(bps)}
	b.tat = &b.own
	return b
}

// take spends n bytes' worth of bits if the bucket has them; now is offload.Now().
func (b *bitRate) take(n int, now uint64) bool {
	if b == nil {
		return true
	}
	cost := uint64(n) * 8 * uint64(time.Second) / b.bps
	for {
		tat := b.tat.Load()
		t := max(tat, now)
		if t+cost > now+uint64(time.Second) {
			return false
		}
		if b.tat.CompareAndSwap(tat, t+cost) {
			return true
		}
	}
}
